"""Qdrant Edge: the Qdrant engine in-process, one shard per collection under TESSERA_HOME/qdrant.

One process writes a shard at a time (a file lock per collection, holding the writer's pid).
The engine preallocates sparse files (32 MiB WAL segments, memory-mapped vector and payload
pages) and dies with SIGBUS when a write finds the disk full, so every open and write first
checks that the disk can hold what those files may still claim. On a home this process cannot
write (a read-only mount), readers open a private copy of the shard instead.

The parts, one job each; each imports only those above it:

    tuning      the sizes and thresholds it writes, flushes and seals by
    layout      the files beside a shard (tessera.json, aliases.json, generation, ...)
    requests    filters, queries and update operations for the engine (pure)
    configs     the engine configs a shard is created and opened with (pure)
    space       the disk guard
    registry    aliases and generation markers
    records     each collection's recorded model, and which collections there are
    shards      open, lock, private copy
    sealing     flush and seal as writes go, and close a written shard
    hnsw        the sealed segments' graph: its parameters, and rebuilding it
    lifecycle   create, drop, adopt
    store       `EdgeStore`, the VectorStore protocol over the parts
"""

from __future__ import annotations

from tessera.store.edge.layout import LAYOUT_FILES
from tessera.store.edge.store import EdgeStore

__all__ = ["LAYOUT_FILES", "EdgeStore"]
