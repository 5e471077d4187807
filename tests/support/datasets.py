"""Small BEIR-layout data sets cut from the SciFact set the repo keeps."""

from __future__ import annotations

import json
from pathlib import Path

from tessera.core import beir
from tests.support.paths import scifact_dir


def make_slice(target: Path, queries: int, distractors: int, train: int = 0) -> Path:
    """A BEIR-layout slice of SciFact: the first judged queries, their documents, and others;
    with `train`, the first train queries and their documents too (qrels/train.tsv)."""
    qrels = beir.read_qrels(scifact_dir())
    kept = {q: qrels[q] for q in list(qrels)[:queries]}
    trained = {q: d for q, d in list(beir.read_qrels(scifact_dir(), "train").items())[:train]}
    judged = {d for docs in (*kept.values(), *trained.values()) for d in docs}
    corpus = [rec for _, rec in beir.read_corpus(scifact_dir())]
    docs = [d for d in corpus if d["_id"] in judged]
    docs += [d for d in corpus if d["_id"] not in judged][:distractors]
    (target / "qrels").mkdir(parents=True)
    (target / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    texts = beir.read_queries(scifact_dir(), set(kept) | set(trained))
    (target / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": texts[q]}) + "\n" for q in (*kept, *trained)))
    for split, judged_split in (("test", kept), ("train", trained)):
        if judged_split:
            (target / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
                f"{q}\t{d}\t{r}\n" for q, docs in judged_split.items() for d, r in docs.items()))
    return target
