"""The HNSW graph of a collection's sealed segments: the parameters it is built with
(index.json), and rebuilding every sealed segment with new ones."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tessera.core.errors import VectorStoreError
from tessera.core.fs import atomic_write
from tessera.store.base import HnswParams
from tessera.store.edge.layout import INDEX, read_json
from tessera.store.edge.records import Records
from tessera.store.edge.sealing import Sealing
from tessera.store.edge.space import rebuild_need, require_space


def record_index(folder: Path, hnsw: HnswParams) -> None:
    """Write the graph the collection in `folder` builds its sealed segments with."""
    atomic_write(folder / INDEX, json.dumps(
        {"m": hnsw.m, "ef_construct": hnsw.ef_construct}) + "\n")


def index_params(records: Records, name: str) -> HnswParams | None:
    """The graph the sealed segments are built with; None for a shard of an earlier release
    (one appendable segment, no graph)."""
    if not records.sealing(name):
        return None
    path = records.registry.folder(name) / INDEX
    if not path.exists():
        return HnswParams(0, 100)  # sealed before graphs were built
    data = read_json(path, f"collection {name!r}'s HNSW parameters")
    return HnswParams(int(data["m"]), int(data["ef_construct"]))


def build_index(sealing: Sealing, name: str, hnsw: HnswParams) -> dict[str, Any]:
    """Rebuild every sealed segment with the graph `hnsw` (m = 0: drop the graphs), under
    the shard's writer lock; readers see the result when it is done."""
    shards = sealing.shards
    name = shards.registry.real_name(name)
    if shards.read_only:
        raise VectorStoreError(f"{shards.root} is read-only; cannot rebuild collection "
                               f"{name!r}'s index there")
    shards.records.info(name)
    if not shards.records.sealing(name):
        raise VectorStoreError(
            f"collection {name!r} was made by an earlier release as one appendable segment; "
            "its graph would be built in memory all at once. Ingest into a new collection "
            "with this release (a new `collection` name), then point readers at it with "
            "`tessera alias`; until then it is searched as it is (a scan)")
    started = time.perf_counter()
    shards.close_shard(name)
    shards.lock(name)
    try:
        points = _rebuild(sealing, name, hnsw)
    finally:
        if name in shards.opened:
            sealing.finish(name)  # flush, publish the generation, release the lock
        else:
            shards.unlock(name)
    return {"collection": name, "hnsw_m": hnsw.m, "ef_construct": hnsw.ef_construct,
            "points": points, "seconds": round(time.perf_counter() - started, 1)}


def _rebuild(sealing: Sealing, name: str, hnsw: HnswParams) -> int:
    """Open the locked shard with the graph `hnsw` and run the optimizer; the points it holds."""
    shards = sealing.shards
    folder = shards.registry.folder(name) / "shard"
    require_space(shards.root, folder, rebuild_need(folder),
                  f"rebuilding collection {name!r}'s index")
    shard = shards.load(name, folder, "open the shard", hnsw)
    shards.opened[name] = shard
    shards.dirty.add(name)
    # The open wrote the new config into the shard: from here every seal builds this
    # graph, so the record says so even if the rebuild below is killed (running
    # `tessera optimize` again finishes it).
    record_index(shards.registry.folder(name), hnsw)
    shards.call(name, "build the index", shard.optimize)
    return int(shard.info().points_count)
