"""What every source yields: documents to index, or quarantine rows that say what was wrong."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flows.errors import RecordError
from flows.settings import SourceConfig


@dataclass
class Document:
    """One record from a source, ready to chunk and embed."""

    doc_id: str
    source: str
    uri: str
    modality: str  # text | image
    text: str  # the body, or an image's caption / alt text
    title: str = ""
    data: bytes | None = None  # encoded image bytes for modality "image"
    metadata: dict[str, Any] = field(default_factory=dict)
    size_bytes: int = 0
    content_hash: str = ""

    def __post_init__(self) -> None:
        if not self.content_hash:
            self.content_hash = content_hash(self)


@dataclass
class Quarantined:
    """A record that cannot be indexed, and why, in words a user can act on."""

    source: str
    doc_id: str
    uri: str
    reason: str
    expectation: str = "readable"
    suite: str = "load"
    observed: str | None = None
    content_hash: str | None = None


Loaded = Document | Quarantined


def content_hash(doc: Document) -> str:
    """sha256 over everything that changes the embedding or payload of a document."""
    digest = hashlib.sha256()
    for part in (doc.modality, doc.title, doc.text):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    if doc.data is not None:
        digest.update(doc.data)
    return digest.hexdigest()


class Source(Protocol):
    """A declared source: finds its items cheaply, then loads them in batches."""

    config: SourceConfig

    def discover(self) -> list[str]:
        """Relative item names (files) under the source root, sorted."""
        ...

    def load(self, items: list[str]) -> Iterator[Loaded]:
        """Documents and quarantine rows for these items; never raises for one bad record."""
        ...


def safe_path(root: Path, relative: str) -> Path:
    """Resolve `relative` under `root`, refusing anything (.., symlinks) that escapes it."""
    root_real = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(root_real / relative))
    if candidate != root_real and root_real not in candidate.parents:
        raise RecordError(
            f"{relative} resolves to {candidate}, outside the source root {root_real}; "
            "Tessera refuses paths that escape their source (symlink or '..')",
            expectation="path_inside_source_root",
        )
    return candidate
