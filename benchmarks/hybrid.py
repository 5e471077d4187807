"""Issue 15, hybrid retrieval: what BM25 sparse vectors cost at ingest, and search latency per mode.

    python -m benchmarks.hybrid [--only ingest,search] [--docs 5000] [--rounds 1]
                                [--points 50000] [--vectors-from HOME]

`ingest`: first ingest of the first N SciFact documents with sparse vectors on and off, each in a
fresh home and its own `tessera ingest` process, interleaved (on, off, off, on, ...), then an
unchanged re-ingest of each; the run's own `seconds` (what the summary reports) are compared.
`search`: a 50,000-point Qdrant Edge collection, store only (no embedding in the timing): real
SciFact chunk vectors and texts, read back from the collection `tessera quality` built in
`--vectors-from` (cycled under new ids with sigma-0.01 noise), BM25 vectors from the texts; the
300 SciFact test queries (embedded once, before timing). p50/p99 per mode for raw chunk hits
(`query`) and for documents (`query_documents`: k=10 documents, over-fetching 4 chunks each).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common


def _ingest(config: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "tessera.cli.main", "ingest", "--config", str(config),
                           "--json"], cwd=common.REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def ingest(docs: int, rounds: int) -> dict[str, Any]:
    """Sparse on vs off: first ingest and unchanged re-ingest, interleaved."""
    corpus = common.OUT / f"corpus-{docs}"
    if not (corpus / "corpus.jsonl").exists():
        common.write_corpus(common.corpus_records(repeat_to=docs), corpus)
    order = [m for r in range(rounds) for m in (("on", "off") if r % 2 == 0 else ("off", "on"))]
    runs: list[dict[str, Any]] = []
    for i, mode in enumerate(order):
        from benchmarks.pipeline import fresh_home

        # A fresh home sharing the benchmarks' model cache: the OpenVINO export is made once.
        config = fresh_home(f"hybrid-{mode}-{i}", corpus, "openvino", "bf16")
        home = config.parent
        if mode == "off":
            config.write_text(config.read_text() + "\n[sparse]\nenabled = false\n")
        first, again = _ingest(config), _ingest(config)
        runs.append({"sparse": mode, "first_seconds": first["seconds"],
                     "reingest_seconds": again["seconds"], "first": first, "reingest": again})
        print(json.dumps(runs[-1]), flush=True)
        shutil.rmtree(home, ignore_errors=True)
    on = [r["first_seconds"] for r in runs if r["sparse"] == "on"]
    off = [r["first_seconds"] for r in runs if r["sparse"] == "off"]
    return {"docs": docs, "rounds": rounds, "runs": runs,
            "on_over_off": float(np.mean(on) / np.mean(off)),
            "reingest_over_first_on": float(np.mean([r["reingest_seconds"] / r["first_seconds"]
                                                     for r in runs if r["sparse"] == "on"]))}


def _source_points(home: Path) -> tuple[np.ndarray, list[str]]:
    """Every chunk vector and text of the SciFact quality collection in `home`."""
    import qdrant_edge as qe

    from tessera.store.edge import EdgeStore

    store = EdgeStore(home / "qdrant")
    names = store.list_collections()
    name = next((n for n in names if n.startswith("quality-scifact")), names[0])
    info = store.get_collection(name)
    assert info is not None
    shard = store._shard(name)
    vectors, texts, offset = [], [], None
    while True:
        recs, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=2048,
                                                     with_payload=["text"], with_vector=True))
        for rec in recs:
            vectors.append(np.asarray(rec.vector[info.vector_name], np.float32))
            texts.append(str((rec.payload or {}).get("text", "")))
        if offset is None:
            break
    store.close()
    return np.stack(vectors), texts


def _timed(fn: Any, queries: list[Any], passes: int) -> dict[str, float]:
    lat = []
    for _ in range(passes):
        for q in queries:
            t0 = time.perf_counter()
            fn(q)
            lat.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "mean_ms": float(np.mean(lat)), "n": len(lat)}


def search(points: int, vectors_from: Path, passes: int = 2) -> dict[str, Any]:
    """p50/p99 per mode on `points` points, chunk hits and documents."""
    from models import get_spec, make_backend
    from tessera.core.beir import load_test_set
    from tessera.core.query import StoreQuery
    from tessera.core.settings import load_settings
    from tessera.core.sparse import Bm25Encoder, SparseConfig, sparse_identity
    from tessera.core.types import CollectionInfo, PointRecord, point_id
    from tessera.store.edge import EdgeStore

    base, texts = _source_points(vectors_from)
    bm25 = Bm25Encoder(SparseConfig())
    sparse = bm25.documents(texts)
    rng = np.random.default_rng(7)
    root = common.OUT / "search-hybrid"
    shutil.rmtree(root, ignore_errors=True)
    store = EdgeStore(root)
    settings = load_settings(None, home=str(common.OUT / "homes" / "hybrid-search"))
    spec = get_spec(settings)
    name = "bench-hybrid"
    store.create_collection(CollectionInfo.for_model(name, spec, sparse_identity(SparseConfig())))
    start = time.perf_counter()
    for lo in range(0, points, 512):
        batch = []
        for i in range(lo, min(lo + 512, points)):
            j = i % len(base)
            v = base[j] + rng.normal(0, 0.01, base.shape[1]).astype(np.float32)
            doc = f"c{j // 2}-r{i // len(base)}"  # ~2 chunks per document, as SciFact has
            batch.append(PointRecord(point_id(name, doc, i), v / np.linalg.norm(v), {
                "doc_id": doc, "source": f"part{i % 10}", "modality": "text",
                "chunk_index": j % 2, "expires_at": 2**31 - 1}, sparse[j]))
        store.upsert(name, batch)
    upsert_s = time.perf_counter() - start
    start = time.perf_counter()
    store.optimize(name)
    optimize_s = time.perf_counter() - start
    queries, _ = load_test_set(common.SCIFACT)
    qtexts = list(queries.values())[:300]
    backend = make_backend(settings, spec)
    qv = backend.embed_queries(qtexts)
    backend.close()
    qs = {"dense": [StoreQuery(limit=10, dense=v) for v in qv],
          "sparse": [StoreQuery(limit=10, sparse=bm25.query(t)) for t in qtexts],
          "hybrid": [StoreQuery(limit=10, dense=v, sparse=bm25.query(t))
                     for v, t in zip(qv, qtexts, strict=True)]}
    out: dict[str, Any] = {"points": store.count(name), "upsert_seconds": upsert_s,
                           "optimize_seconds": optimize_s, "queries": len(qtexts),
                           "passes": passes, "chunks": {}, "documents": {}}
    for mode, requests in qs.items():
        out["chunks"][mode] = _timed(lambda q: store.query(name, q), requests, passes)
        out["documents"][mode] = _timed(lambda q: store.query_documents(name, q), requests, passes)
        print(mode, out["chunks"][mode], out["documents"][mode], flush=True)
    store.close()
    shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the chosen parts; save benchmarks/results/hybrid-<part>.json."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hybrid")
    parser.add_argument("--only", default="ingest,search")
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--points", type=int, default=50_000)
    parser.add_argument("--vectors-from", type=Path, default=common.OUT / "homes" / "scifact",
                        help="a home where `tessera quality` indexed SciFact")
    args = parser.parse_args(argv)
    for part in [p.strip() for p in args.only.split(",") if p.strip()]:
        result = (ingest(args.docs, args.rounds) if part == "ingest"
                  else search(args.points, args.vectors_from))
        path = common.save_result(f"hybrid-{part}", {**result, "machine": common.machine()})
        saved = json.loads(path.read_text())
        saved["command"] = " ".join(["python -m benchmarks.hybrid", *sys.argv[1:]])
        path.write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
