"""The shared types every layer passes around: documents, chunks, points, hits, collections."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # an annotation only: the settings (and `tessera --version`) load without numpy
    import numpy as np


# Fixed namespace: point ids must be the same in every process and every release.
_POINT_NAMESPACE = uuid.UUID("6f1c1b8e-4a57-5d0e-9a43-7e55a1d2c0de")


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


@dataclass(frozen=True)
class Chunk:
    """One window of a document; knows its place and its document's chunk count."""

    doc_id: str
    index: int
    count: int
    text: str
    tokens: int
    # The window's token ids (no special tokens), so the embedder need not tokenize it again.
    ids: tuple[int, ...] = ()


# Between a collection's alias and its version: `docs--<model>-<tag>` (refused in user names).
VERSION_MARK = "--"

# Collection and alias names. The embedded store keeps a collection in a folder of that name,
# so a name is one file name: no "/", and a letter or digit first (never "..", nor a hidden
# folder like the store's own `.writers`). Stored names go to 255 characters (a file name's
# limit) because Tessera makes `<name>--<model>-<tag>` and `quality-<set>` itself; names users
# declare stop at 64, leaving room for that suffix, and may not hold VERSION_MARK.
_NAME_FIRST, _NAME_REST = "A-Za-z0-9", "A-Za-z0-9_.-"
STORED_NAME_PATTERN = f"^[{_NAME_FIRST}][{_NAME_REST}]{{0,254}}$"
DECLARED_NAME_PATTERN = f"^[{_NAME_FIRST}][{_NAME_REST}]{{0,63}}$"


def name_problem(name: str, declared: bool = True) -> str | None:
    """Why `name` cannot name a collection or alias (declared: one a user picks), or None."""
    pattern = DECLARED_NAME_PATTERN if declared else STORED_NAME_PATTERN
    if not re.fullmatch(pattern, name):
        return (f"a collection or alias name must match {pattern.strip('^$')} (letters, digits, "
                "'_', '.', '-'; a letter or digit first; no '/'), as it names a folder of the store")
    if declared and VERSION_MARK in name:
        return (f"a collection or alias name may not contain {VERSION_MARK!r}: Tessera names the "
                "versions behind an alias that way; pick a name without it")
    return None


def point_id(collection: str, doc_id: str, chunk_index: int) -> str:
    """The point's id: a UUID derived from (the collection's base name, document id, chunk
    index). The base name is the alias a versioned collection serves (`docs` for
    `docs--<model>-<tag>`), so a plain collection adopted under a versioned name keeps the
    ids its points were written with."""
    base = collection.split(VERSION_MARK, 1)[0]
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{base}\x00{doc_id}\x00{chunk_index}"))


@dataclass
class PointRecord:
    """One point to upsert."""

    id: str
    vector: np.ndarray
    payload: dict[str, Any]
    sparse: Any = None  # a tessera.core.sparse.SparseVec beside the dense vector, when the collection has one


@dataclass
class Hit:
    """One search result."""

    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Match:
    """A payload filter: exact matches on source / modality / doc ids, plus equality on other
    payload fields (`equals`: (field, value) pairs) and numeric ranges (`ranges`: (field, gte,
    lte), either bound None); `point_ids` keeps only those points. All optional; every
    condition must hold."""

    source: str | None = None
    modality: str | None = None
    doc_ids: tuple[str, ...] | None = None
    point_ids: tuple[str, ...] | None = None
    equals: tuple[tuple[str, str | int | bool], ...] = ()
    ranges: tuple[tuple[str, float | None, float | None], ...] = ()


class ModelIdentity(Protocol):
    """What a collection records about the model that writes it (a models.ModelSpec has it)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def dimension(self) -> int: ...
    @property
    def distance(self) -> str: ...
    @property
    def vector_name(self) -> str: ...
    @property
    def modalities(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class CollectionInfo:
    """What a collection records about the model that writes it."""

    name: str
    model_id: str
    model_name: str
    dimension: int
    distance: str
    vector_name: str
    modalities: tuple[str, ...] = ("text",)
    # How the collection was built, for collections behind an alias (tessera/ingest/identity.py):
    # model, chunking, extra settings, their hash, the alias, when it was made. None: a plain one.
    identity: dict[str, Any] | None = None
    # The BM25 sparse config (tessera.core.sparse.sparse_identity), or None: no sparse vectors (a
    # collection built before hybrid search, or with sparse.enabled = false).
    sparse: dict[str, Any] | None = None

    @classmethod
    def for_model(cls, name: str, spec: ModelIdentity,
                  sparse: dict[str, Any] | None = None) -> CollectionInfo:
        """The collection `name` as built by this model (and this sparse config)."""
        return cls(name=name, model_id=spec.id, model_name=spec.name, dimension=spec.dimension,
                   distance=spec.distance, vector_name=spec.vector_name,
                   modalities=tuple(spec.modalities), sparse=sparse)

    def to_metadata(self) -> dict[str, Any]:
        """Plain dict, stored beside (Edge) or inside (server) the collection."""
        data = asdict(self)
        data["modalities"] = list(self.modalities)
        if self.sparse is None:
            del data["sparse"]  # as collections built before sparse vectors recorded it
        return data

    @classmethod
    def from_metadata(cls, data: dict[str, Any]) -> CollectionInfo:
        """Inverse of to_metadata."""
        return cls(**{**data, "modalities": tuple(data.get("modalities", ("text",))),
                      "sparse": data.get("sparse") or None})
