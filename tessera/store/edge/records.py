"""What each collection records beside its shard (tessera.json: its model; the sealing-layout
marker), and which collections the root holds."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from tessera.core.errors import VectorStoreError
from tessera.core.fs import atomic_write
from tessera.core.types import STORED_NAME_PATTERN, CollectionInfo
from tessera.store.edge.layout import META, SEALED, read_json
from tessera.store.edge.registry import Registry


def _metas_below(folder: Path, depth: int) -> Iterator[Path]:
    """Collection records in sub-folders of `folder`, `depth` levels down at most (a found
    collection's own folder is not searched further: its shard is large)."""
    if depth <= 0:
        return
    try:
        children = [p for p in folder.iterdir() if p.is_dir()]
    except OSError:
        return
    for child in children:
        if (child / META).exists():
            yield child / META
        else:
            yield from _metas_below(child, depth - 1)


class Records:
    """The collections' records, each re-read only when its file changes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.root = registry.root
        self._cache: dict[str, tuple[tuple[int, int, int], CollectionInfo]] = {}

    def get(self, name: str) -> CollectionInfo | None:
        """The model recorded beside the shard, or None (re-read when the file changes: it is
        only ever replaced whole, so its stat changes)."""
        meta = self.registry.folder(name) / META
        try:
            st = meta.stat()
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(str(meta))
        if cached is not None and cached[0] == key:
            return cached[1]
        data = read_json(meta, f"the record of collection {name!r}'s model")
        try:
            info = CollectionInfo.from_metadata(data)
        except TypeError as exc:
            raise VectorStoreError(f"{meta} does not describe a collection ({exc}); restore it "
                                   f"from a backup, or delete {meta.parent} and ingest again"
                                   ) from None
        self._cache[str(meta)] = (key, info)
        return info

    def info(self, name: str) -> CollectionInfo:
        """The recorded model, or a VectorStoreError when there is no such collection."""
        info = self.get(name)
        if info is None:
            raise VectorStoreError(f"collection {name!r} does not exist; run `tessera ingest` first")
        return info

    def write(self, info: CollectionInfo) -> None:
        """Rewrite tessera.json atomically (the caller holds the collection's lock)."""
        atomic_write(self.registry.folder(info.name) / META,
                     json.dumps(info.to_metadata(), indent=2))

    def sealing(self, name: str) -> bool:
        """Whether writers seal this shard (it was created with the sealing layout)."""
        return (self.registry.folder(name) / SEALED).exists()

    def names(self) -> list[str]:
        """Folders under the root that hold a finished collection under a valid name."""
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if re.fullmatch(STORED_NAME_PATTERN, p.name) and (p / META).exists())

    def unlisted(self) -> list[str]:
        """Collections under the root that no valid name reaches, as paths relative to it: one
        made under a name with "/" (`team/docs`, before names were checked) or outside the
        pattern. Dot folders are the store's own (`.writers`, a drop's `.dropped-*`)."""
        found: list[str] = []
        if self.root.exists():
            for top in self.root.iterdir():
                if top.name.startswith(".") or not top.is_dir():
                    continue
                if not re.fullmatch(STORED_NAME_PATTERN, top.name) and (top / META).exists():
                    found.append(top.name)
                elif not (top / META).exists():
                    found += [str(meta.parent.relative_to(self.root))
                              for meta in _metas_below(top, depth=4)]
        return sorted(found)
