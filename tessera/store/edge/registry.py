"""The alias table and the generation markers: small files beside the shards that say which
collection a name means, and when a writer last changed one."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tessera.core.fs import atomic_write
from tessera.store.edge.layout import ALIASES, GENERATION, read_json


class Registry:
    """aliases.json under the root, and a generation marker in each collection's folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._alias_cache: tuple[tuple[int, int, int], dict[str, str]] | None = None

    def folder(self, name: str) -> Path:
        """The folder of the collection `name` means (an alias resolved)."""
        return self.root / self.real_name(name)

    def real_name(self, name: str) -> str:
        """The collection behind `name` when it is an alias, else `name` (every call resolves,
        like a Qdrant server does, so a switch is seen by the next call)."""
        return self.aliases().get(name, name)

    def aliases(self) -> dict[str, str]:
        """Aliases kept in aliases.json beside the shards (re-read when the file changes: every
        call resolves names, and a switch replaces the file, so its stat changes)."""
        path = self.root / ALIASES
        try:
            st = path.stat()
        except FileNotFoundError:
            return {}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._alias_cache is None or self._alias_cache[0] != key:
            self._alias_cache = (key, dict(read_json(path, "the alias table")))
        return dict(self._alias_cache[1])

    def set_alias(self, alias: str, collection: str) -> None:
        """Rewrite aliases.json atomically (temp file, then rename)."""
        data = {**self.aliases(), alias: collection}
        atomic_write(self.root / ALIASES, json.dumps(data, indent=2, sort_keys=True))

    def generation(self, name: str) -> str:
        """A marker a writer rewrites, under the shard's lock, each time it closes the shard after
        changing it; "" before the first such close."""
        try:
            return (self.folder(name) / GENERATION).read_text().strip()
        except OSError:
            return ""

    def publish(self, name: str) -> None:
        """Rewrite the marker (the writer still holds the lock: readers copy a closed shard)."""
        atomic_write(self.folder(name) / GENERATION, f"{time.time_ns()}-{os.getpid()}")
