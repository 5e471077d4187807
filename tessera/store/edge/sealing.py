"""Sealing what a writer appends, and closing what it wrote.

The engine holds the segment it appends to in memory; after about SEAL_BYTES written (tuning.py)
a writer runs the engine's optimizer, which turns that segment into a sealed, memory-mapped one,
then reopens the shard so that the pages it wrote are no longer mapped. Between seals it flushes
after about FLUSH_BYTES, so the WAL is truncated as it goes.
"""

from __future__ import annotations

import logging
from typing import Any

from tessera.core.errors import VectorStoreError
from tessera.core.fs import MIB, free_bytes
from tessera.store.edge import tuning
from tessera.store.edge.shards import Shards
from tessera.store.edge.space import seal_need

logger = logging.getLogger("tessera.store.edge")  # the package's: log lines name the store


class Sealing:
    """What each open shard has been written since its last flush and its last seal."""

    def __init__(self, shards: Shards) -> None:
        self.shards = shards
        self.unflushed: dict[str, int] = {}  # bytes written to each shard since its last flush
        self.unsealed: dict[str, int] = {}  # ... and since it was last sealed

    def wrote(self, name: str, shard: Any, incoming: int) -> None:
        """Count a write of about `incoming` bytes: seal after SEAL_BYTES, else flush after
        FLUSH_BYTES."""
        self.unflushed[name] = self.unflushed.get(name, 0) + incoming
        self.unsealed[name] = self.unsealed.get(name, 0) + incoming
        if self.unsealed[name] >= tuning.SEAL_BYTES and self.shards.records.sealing(name):
            self.seal(name)
        elif self.unflushed[name] >= tuning.FLUSH_BYTES:
            self.shards.call(name, "flush", shard.flush)
            self.unflushed[name] = 0

    def seal(self, name: str, reopen: bool = True) -> None:
        """Seal what was appended (the engine's optimizer), then reopen the shard so the pages
        written so far are no longer mapped. Skipped, with a warning, when the disk could not
        hold the sealed copy (it is written before the appendable segment is dropped)."""
        shard = self.shards.opened[name]
        folder = self.shards.registry.folder(name) / "shard"
        self.shards.call(name, "flush", shard.flush)
        self.unflushed[name] = 0
        need = seal_need(folder, self.unsealed.get(name, 0))
        if free_bytes(folder) < need:
            logger.warning("collection %r: %.0f MiB free, sealing needs about %.0f MiB: left "
                           "unsealed (it stays in memory until there is room)", name,
                           free_bytes(folder) / MIB, need / MIB)
            self.unsealed[name] = 0  # tried again after as much more written, not every write
            return
        self.shards.call(name, "seal the appended segment", shard.optimize)
        self.unsealed[name] = 0
        if not reopen:
            return
        shard.close()
        self.shards.opened[name] = self.shards.load(name, folder, "reopen the shard")

    def finish(self, name: str) -> None:
        """Seal, flush and close one open shard, publish its generation if it changed, unlock."""
        shards = self.shards
        try:
            if (not shards.read_only and name in shards.dirty and self.unsealed.get(name)
                    and shards.records.sealing(name)):
                try:
                    self.seal(name, reopen=False)
                except VectorStoreError as exc:  # the writes are safe; only memory is at stake
                    logger.warning("%s; the shard stays as written", exc)
            shard = shards.opened.pop(name)
            if not shards.read_only:
                shard.flush()
            shard.close()
            if name in shards.dirty and not shards.read_only and name in shards.locks:
                shards.registry.publish(name)  # still under the lock: readers copy a closed shard
        finally:
            shards.dirty.discard(name)
            shards.unlock(name)
