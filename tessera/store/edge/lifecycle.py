"""A collection's folder made, dropped, or adopted under a versioned name, each under the
collection's writer lock so that no other process has its shard open meanwhile."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from tessera.core.errors import VectorStoreError
from tessera.core.fs import atomic_write
from tessera.core.types import CollectionInfo
from tessera.store.base import HnswParams
from tessera.store.edge import tuning
from tessera.store.edge.configs import create_config, field_indexes
from tessera.store.edge.hnsw import record_index
from tessera.store.edge.layout import META, SEALED
from tessera.store.edge.requests import qe
from tessera.store.edge.shards import Shards
from tessera.store.edge.space import require_space


def create(shards: Shards, info: CollectionInfo, hnsw: HnswParams) -> None:
    """Create the shard, its payload indexes, then record the model (last: marks it done)."""
    if shards.read_only:
        raise VectorStoreError(f"{shards.root} is read-only; cannot create collection "
                               f"{info.name!r} there")
    folder = shards.registry.folder(info.name)
    folder.mkdir(parents=True, exist_ok=True)
    shards.lock(info.name)  # before looking: another creator may be half-way through
    try:
        if (folder / META).exists():
            return  # made by another process while this one waited for the lock
        shutil.rmtree(folder / "shard", ignore_errors=True)  # a create that crashed midway
        require_space(shards.root, folder, tuning.NEW_SHARD_BYTES,
                      f"creating collection {info.name!r}")
        shard = _new_shard(shards, folder, info, hnsw)
        atomic_write(folder / SEALED, "1\n")
        record_index(folder, hnsw)
        atomic_write(folder / META, json.dumps(info.to_metadata(), indent=2))
        shards.dirty.add(info.name)
    except BaseException:
        shards.unlock(info.name)
        raise
    shards.opened[info.name] = shard


def _new_shard(shards: Shards, folder: Path, info: CollectionInfo, hnsw: HnswParams) -> Any:
    """The engine's new shard in `folder`, with its payload indexes, flushed."""
    shard = shards.call(info.name, "create the shard", qe().EdgeShard.create,
                        str(folder / "shard"), create_config(info, hnsw))
    for operation in field_indexes():
        shard.update(operation)
    shard.flush()
    return shard


def drop(shards: Shards, name: str) -> None:
    """Delete a collection no alias points at (moved aside first, so a crash leaves no half)."""
    if name in shards.registry.aliases().values():
        raise VectorStoreError(f"collection {name!r} is what an alias points at; switch the "
                               "alias first")
    folder = shards.root / name
    if not (folder / META).exists():
        return
    shards.close_shard(name)
    shards.lock(name)  # wait out a writer that has it open
    try:
        trash = shards.root / f".dropped-{name}-{uuid.uuid4().hex[:8]}"
        os.replace(folder, trash)
    finally:
        shards.unlock(name)
    shutil.rmtree(trash, ignore_errors=True)


def adopt(shards: Shards, plain: str, info: CollectionInfo) -> None:
    """Make the plain collection `plain` the versioned `info.name`, behind alias `plain`.

    The folder is renamed (no copy), its record rewritten, then the alias made; a crash
    between the rename and the alias leaves a collection recording `adopted_from`, which the
    next migration finds and finishes."""
    folder = shards.root / plain
    if (folder / META).exists():
        shards.close_shard(plain)
        shards.lock(plain)
        try:
            atomic_write(folder / META, json.dumps(info.to_metadata(), indent=2))
            os.replace(folder, shards.root / info.name)
        finally:
            shards.unlock(plain)
    elif shards.records.get(info.name) is None:
        raise VectorStoreError(f"cannot adopt {plain!r}: no such collection in {shards.root}")
    shards.registry.set_alias(plain, info.name)
