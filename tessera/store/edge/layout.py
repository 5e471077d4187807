"""What a collection's folder holds beside the engine's shard, and how those small files are read.

    root/aliases.json                alias -> collection (registry.py)
    root/<collection>/tessera.json   the collection's model (records.py), written last at create
    root/<collection>/generation     a writer's marker for readers (registry.py)
    root/<collection>/sealed-layout  created with the sealing layout (sealing.py)
    root/<collection>/index.json     the HNSW parameters of its sealed segments (hnsw.py)
    root/<collection>/.lock          the writer lock, holding the writer's pid (shards.py)
    root/<collection>/shard/         the engine's own files
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tessera.core.errors import VectorStoreError

META = "tessera.json"
ALIASES = "aliases.json"
# Rewritten by a writer each time it closes a shard it changed: readers on a snapshot
# (tessera/service/snapshot.py) compare it to know when to take a fresh one.
GENERATION = "generation"
# Written beside a shard created with the sealing layout (tuning.py). A shard without it (created
# by an earlier release) is never optimized by a writer: its default optimizer would build an
# HNSW graph over its whole appendable segment in memory.
SEALED = "sealed-layout"
# The HNSW parameters a shard's sealed segments are built with ({"m", "ef_construct"}), written at
# create and by build_index. A sealed shard without it was made with m = 0 (no graph).
INDEX = "index.json"
LAYOUT_FILES = (SEALED, INDEX)  # what a copy of a shard takes along with tessera.json


def read_json(path: Path, what: str) -> Any:
    """A metadata file of ours, or a VectorStoreError that says how to recover."""
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise VectorStoreError(
            f"{path} ({what}) cannot be read: {exc}. Restore it from a backup, or delete "
            f"{path.parent} and ingest again") from None
