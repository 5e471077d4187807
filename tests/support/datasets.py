"""Small BEIR-layout data sets cut from the SciFact set the repo keeps."""

from __future__ import annotations

import json
from pathlib import Path

from tessera.core import beir
from tests.support.paths import scifact_dir


def make_slice(target: Path, queries: int, distractors: int) -> Path:
    """A BEIR-layout slice of SciFact: the first judged queries, their documents, and others."""
    qrels = beir.read_qrels(scifact_dir())
    kept = {q: qrels[q] for q in list(qrels)[:queries]}
    judged = {d for docs in kept.values() for d in docs}
    corpus = [rec for _, rec in beir.read_corpus(scifact_dir())]
    docs = [d for d in corpus if d["_id"] in judged]
    docs += [d for d in corpus if d["_id"] not in judged][:distractors]
    (target / "qrels").mkdir(parents=True)
    (target / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    texts = beir.read_queries(scifact_dir(), set(kept))
    (target / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": texts[q]}) + "\n" for q in kept))
    (target / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q, docs in kept.items() for d, r in docs.items()))
    return target
