"""Goal 2, quality: nDCG@10 on all of BEIR SciFact for a runtime, the MTEB way.

Each document is embedded once as "title text" truncated to the model's 256 tokens, queries
likewise, and documents are ranked by exact cosine (numpy); pytrec_eval scores the ranking.
This is the setup behind the published 0.64508 (MTEB, torch fp32), so the figures compare.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from tessera.core import beir


def load_test_set() -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The 300 test queries that have judgements, and the judgements."""
    return beir.load_test_set(common.SCIFACT)


def embedder(runtime: str, precision: str, batch_size: int = 32) -> Any:
    """A texts -> vectors function for the runtime under test."""
    if runtime == "torch":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(common.model_dir()), device="cpu", local_files_only=True)
        return lambda texts: model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                          convert_to_numpy=True, show_progress_bar=False)
    from models.optimized import OpenVINOBackend
    from models.registry import BUILTIN

    backend = OpenVINOBackend(BUILTIN[common.MODEL], common.model_dir(), common.OUT / "models",
                              precision, batch_size)  # type: ignore[arg-type]
    return backend.embed_texts


def evaluate(runtime: str, precision: str) -> dict[str, Any]:
    """Embed corpus and queries with this runtime; nDCG@10 and recall@100 from pytrec_eval."""
    import pytrec_eval

    records = common.corpus_records()
    ids = [r["_id"] for r in records]
    queries, qrels = load_test_set()
    embed = embedder(runtime, precision)
    start = time.perf_counter()
    docs = np.asarray(embed([f"{r['title']} {r['text']}".strip() for r in records]), np.float32)
    seconds = time.perf_counter() - start
    qids = list(queries)
    qv = np.asarray(embed([queries[q] for q in qids]), np.float32)
    scores = qv @ docs.T
    run = {}
    for row, qid in enumerate(qids):
        top = np.argsort(-scores[row])[:100]
        run[qid] = {ids[i]: float(scores[row, i]) for i in top}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    tag = f"{runtime}-{precision}"
    common.OUT.mkdir(parents=True, exist_ok=True)
    np.save(common.OUT / f"scifact-{tag}.npy", docs)
    np.save(common.OUT / f"scifact-queries-{tag}.npy", qv)
    return {"runtime": runtime, "precision": precision, "docs": len(ids), "queries": len(qids),
            "ndcg@10": float(np.mean([m["ndcg_cut_10"] for m in ev.values()])),
            "recall@100": float(np.mean([m["recall_100"] for m in ev.values()])),
            "embed_seconds": seconds, "vectors": str(common.OUT / f"scifact-{tag}.npy")}


def compare(vectors_a: Path, vectors_b: Path) -> dict[str, float]:
    """Per-document cosine between two runs' corpus vectors."""
    a, b = np.load(vectors_a), np.load(vectors_b)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
