"""What a search snapshot costs after a small change: refresh time, writer wait, extra disk.

    python -m benchmarks.snapshots [--sizes 100000,1000000] [--change 0.01] [--rounds 3]

For each size it builds an embedded collection of SciFact-like points (dense 384-d vectors and
BM25 from the first 1,000 SciFact documents, perturbed; a ~1 KiB text payload each; the store's
own sealing, as an ingest writes), takes a first snapshot, then per round: a writer re-upserts
`--change` of the points (new versions of existing ids, spread over every segment, as an ingest
of edited documents does) and closes (a new generation), and the reader takes a fresh snapshot
both ways, interleaved:

- before: the whole shard copied under the writer's lock (`SnapshotReader` up to 3934b90:
  `shutil.copytree` with a 1 MiB-block sparse copy);
- after: `tessera.service.shard_copy.snapshot_shard` (sealed write-once files hard-linked, the
  rest copied sparsely by SEEK_DATA), through the real `SnapshotReader._take`.

Reported per arm: the time the lock is held (what a writer arriving then waits at most), the
whole refresh (snapshot plus opening it), and the extra disk: blocks under the shard and the
snapshot counted once (`du`, hard links once) minus the shard's own. Results:
benchmarks/results/snapshots.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

WORK = common.OUT / "snapshots"
NAME = "bench"
_MIB = 1024 * 1024


def _disk(*paths: Path) -> int:
    """Blocks the paths hold together, each hard-linked file once (du)."""
    out = subprocess.run(["du", "-s", "-B1", "-c", *map(str, paths)], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1].split()[0])


class Corpus:
    """Base vectors, BM25 vectors and texts to make any number of points from."""

    def __init__(self, base_docs: int = 1000) -> None:
        from models.registry import BUILTIN
        from tessera.core.settings import load_settings
        from tessera.core.sparse import Bm25Encoder, sparse_identity, sparse_signature

        home = WORK / "corpus-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "tessera.toml").write_text(f'home = "{home}"\n', encoding="utf-8")
        settings = load_settings(home / "tessera.toml")
        self.records = common.corpus_records(limit=base_docs)
        self.texts = [f"{r.get('title', '')} {r['text']}"[:1024] for r in self.records]
        self.identity = sparse_identity(settings.sparse)
        self.signature = sparse_signature(self.identity)
        self.sparse = Bm25Encoder(settings.sparse).documents(self.texts)
        self.spec = BUILTIN[common.MODEL]
        rng = np.random.default_rng(3)
        base = rng.normal(size=(base_docs, self.spec.dimension)).astype(np.float32)
        self.base = base / np.linalg.norm(base, axis=1, keepdims=True)

    def points(self, ids: range | np.ndarray, version: int) -> list[Any]:
        from tessera.core.types import PointRecord, point_id

        rng = np.random.default_rng(version * 7919 + int(ids[0]))
        out = []
        for i in ids:
            j = int(i) % len(self.texts)
            v = self.base[j] + rng.normal(0, 0.05, self.base.shape[1]).astype(np.float32)
            doc = f"d{i}"
            out.append(PointRecord(point_id(NAME, doc, 0), v / np.linalg.norm(v), {
                "doc_id": doc, "source": f"part{int(i) % 10}", "modality": "text",
                "chunk_index": 0, "chunk_count": 1, "title": self.records[j].get("title", ""),
                "text": self.texts[j], "uri": f"scifact://{doc}", "expires_at": 2**31 - 1,
                "version": version, "sparse": self.signature}, sparse=self.sparse[j]))
        return out


def build(corpus: Corpus, root: Path, size: int) -> float:
    """A collection of `size` points under `root`, written in ingest-sized batches."""
    from tessera.core.types import CollectionInfo
    from tessera.store.edge import EdgeStore

    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    store = EdgeStore(root)
    store.create_collection(CollectionInfo.for_model(NAME, corpus.spec, corpus.identity))
    for lo in range(0, size, 1024):
        store.upsert(NAME, corpus.points(range(lo, min(lo + 1024, size)), 0))
    store.close()
    return time.perf_counter() - started


def change(corpus: Corpus, root: Path, size: int, fraction: float, version: int) -> float:
    """Re-upsert `fraction` of the points (spread over all of them) as a new version."""
    from tessera.store.edge import EdgeStore

    rng = np.random.default_rng(version)
    ids = np.sort(rng.choice(size, int(size * fraction), replace=False))
    started = time.perf_counter()
    store = EdgeStore(root)
    for lo in range(0, len(ids), 1024):
        store.upsert(NAME, corpus.points(ids[lo:lo + 1024], version))
    store.close()
    return time.perf_counter() - started


def _old_sparse_copy(src: str, dst: str) -> None:
    """The copy snapshots used before: 1 MiB blocks, a hole only for an all-zero block."""
    block_size, zeros = _MIB, bytes(_MIB)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = 0
        while block := fin.read(block_size):
            size += len(block)
            if block == zeros[:len(block)]:
                fout.seek(len(block), os.SEEK_CUR)
            else:
                fout.write(block)
        fout.truncate(size)
    shutil.copystat(src, dst)


def full_copy(root: Path, target: Path) -> dict[str, float]:
    """Before: the whole shard copied under the lock, then opened."""
    from tessera.core.fs import HeldLock
    from tessera.store.edge import EdgeStore

    started = time.perf_counter()
    lock = HeldLock(root / NAME / ".lock", 30)
    try:
        for file in os.listdir(root / NAME):
            if os.path.isfile(root / NAME / file) and file != ".lock":
                shutil.copy2(root / NAME / file, target / NAME / file)
        shutil.copytree(root / NAME / "shard", target / NAME / "shard",
                        copy_function=_old_sparse_copy)
    finally:
        lock.release()
    locked = time.perf_counter() - started
    store = EdgeStore(target)
    store.count(NAME)
    store.close()
    return {"lock_s": locked, "take_s": time.perf_counter() - started}


def measure(corpus: Corpus, size: int, fraction: float, rounds: int) -> dict[str, Any]:
    """Build, then per round: change, and refresh both ways (alternating which goes first)."""
    from tessera.service.snapshot import SnapshotReader

    root = WORK / f"store-{size}"
    built = build(corpus, root, size)
    shard_disk = _disk(root / NAME / "shard")
    reader = SnapshotReader(root, WORK / f"snaps-{size}", check_seconds=3600)
    with reader.reading(NAME) as first:
        first.count(NAME)
    arms: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    changes, held = [], []
    for rnd in range(rounds):
        changes.append(change(corpus, root, size, fraction, rnd + 1))
        # The snapshot the reader still serves (taken before every change so far): what its links
        # keep alive of files the writer has since replaced.
        live = _disk(root / NAME / "shard")
        held.append((_disk(root / NAME / "shard", reader._snaps[NAME].root) - live) / live)
        for arm in (("before", "after") if rnd % 2 == 0 else ("after", "before")):
            target = WORK / f"copy-{size}"
            shutil.rmtree(target, ignore_errors=True)
            (target / NAME).mkdir(parents=True)
            if arm == "before":
                got = full_copy(root, target)
                extra = _disk(root / NAME / "shard", target) - _disk(root / NAME / "shard")
            else:
                snap = reader._take(NAME)
                got = {"lock_s": reader.last_take["lock_s"], "take_s": reader.last_take["take_s"],
                       "copied_bytes": reader.last_take["copied_bytes"]}
                extra = _disk(root / NAME / "shard", snap.root) - _disk(root / NAME / "shard")
                snap.retire()
            shutil.rmtree(target, ignore_errors=True)
            arms[arm].append({**got, "extra_disk_bytes": extra,
                              "extra_disk_share": extra / _disk(root / NAME / "shard")})
    reader.close()
    medians = {arm: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
               for arm, runs in arms.items()}
    return {"points": size, "build_s": built, "shard_disk_mib": shard_disk / _MIB,
            "segments": len(list((root / NAME / "shard" / "segments").glob("*/segment.json"))),
            "change_s": changes, "old_snapshot_extra_share": held, "rounds": arms,
            "medians": medians}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--change", type=float, default=0.01)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the stores under benchmarks/out")
    args = ap.parse_args()
    corpus = Corpus()
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        results.append(measure(corpus, size, args.change, args.rounds))
        print(results[-1]["medians"], flush=True)
        if not args.keep:
            shutil.rmtree(WORK / f"store-{size}", ignore_errors=True)
        common.save_result("snapshots", {"change": args.change, "sizes": results,
                                         "machine": common.machine()})


if __name__ == "__main__":
    main()
