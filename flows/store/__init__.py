"""The vector store: one protocol, two implementations (Qdrant Edge in-process, Qdrant server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tessera.errors import ModelMismatchError
from tessera.types import CollectionInfo, Hit, Match, PointRecord

if TYPE_CHECKING:
    from tessera.settings import Settings

# Payload fields that get an index (DESIGN.md: doc_id, source, modality, expires_at).
KEYWORD_INDEXES = ("doc_id", "source", "modality")
INTEGER_INDEXES = ("expires_at",)
DIFF_FIELDS = ["doc_id", "chunk_index", "chunk_count", "content_hash", "model_id", "chunking"]


class VectorStore(Protocol):
    """What the pipeline needs from Qdrant, whichever way it runs."""

    def get_collection(self, name: str) -> CollectionInfo | None:
        """The collection's recorded model, or None if it does not exist."""
        ...

    def create_collection(self, info: CollectionInfo) -> None:
        """Create the collection with payload indexes and its model recorded."""
        ...

    def list_collections(self) -> list[str]:
        """Names of the collections this store holds."""
        ...

    def scan(self, name: str, match: Match, fields: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """(point id, payload subset) for every point matching `match`."""
        ...

    def upsert(self, name: str, points: list[PointRecord]) -> None:
        """Insert or replace points (idempotent: ids are deterministic)."""
        ...

    def set_payload(self, name: str, ids: list[str], payload: dict[str, Any]) -> None:
        """Overwrite some payload keys of existing points (expiry refresh)."""
        ...

    def delete(self, name: str, ids: list[str]) -> None:
        """Delete points by id."""
        ...

    def count(self, name: str, match: Match | None = None) -> int:
        """Exact number of points matching `match` (all when None)."""
        ...

    def count_expired(self, name: str, now: int) -> int:
        """Points whose expires_at is at or before `now`."""
        ...

    def delete_expired(self, name: str, now: int) -> None:
        """Delete, by a range filter, the points whose expires_at is at or before `now`."""
        ...

    def search(self, name: str, vector: np.ndarray, limit: int, match: Match | None = None) -> list[Hit]:
        """Nearest points to `vector` in the collection's named vector."""
        ...

    def search_batch(self, name: str, vectors: np.ndarray, limit: int,
                     fields: list[str] | None = None, exact: bool = False) -> list[list[Hit]]:
        """Nearest points for each row of `vectors`, in one call; `exact` skips the HNSW index."""
        ...

    def set_alias(self, alias: str, collection: str) -> None:
        """Point `alias` at `collection` (atomically replacing where it pointed before)."""
        ...

    def aliases(self) -> dict[str, str]:
        """alias -> collection."""
        ...

    def close(self) -> None:
        """Flush and release the store."""
        ...


def resolve(store: VectorStore, name: str) -> str:
    """The collection behind `name` when it is an alias, else `name` itself."""
    return store.aliases().get(name, name)


def switch_alias(store: VectorStore, alias: str, collection: str) -> dict[str, str | None]:
    """Point readers at a new collection; refuses targets that do not exist or clash."""
    from tessera.errors import VectorStoreError

    if store.get_collection(collection) is None:
        raise VectorStoreError(f"collection {collection!r} does not exist; build it first")
    if alias in store.list_collections():
        raise VectorStoreError(f"{alias!r} is a collection, so it cannot also be an alias; "
                               "pick another alias name")
    previous = store.aliases().get(alias)
    store.set_alias(alias, collection)
    return {"alias": alias, "collection": collection, "previous": previous}


def ensure_collection(store: VectorStore, info: CollectionInfo) -> CollectionInfo:
    """Create the collection, or check that it was built by the same model; refuse otherwise."""
    existing = store.get_collection(info.name)
    if existing is None:
        store.create_collection(info)
        return info
    if (existing.model_id, existing.dimension, existing.distance, existing.vector_name) != (
        info.model_id, info.dimension, info.distance, info.vector_name
    ):
        raise ModelMismatchError(
            f"collection {info.name!r} holds vectors from model {existing.model_id!r} "
            f"({existing.dimension}-dim, {existing.distance}, modalities "
            f"{'/'.join(existing.modalities)}), but this run embeds with {info.model_id!r} "
            f"({info.dimension}-dim, {info.distance}, modalities {'/'.join(info.modalities)}). "
            "One collection holds one model: write to a new collection (set `collection` in "
            "tessera.toml), score it with `tessera quality`, then point readers at it."
        )
    return existing


def _secret_block(name: str) -> Any:
    """The Qdrant API key from a Prefect Secret block, as a SecretStr."""
    from prefect.blocks.system import Secret
    from pydantic import SecretStr

    from tessera.errors import ConfigError

    try:
        block: Any = Secret.load(name)
        return SecretStr(str(block.get()))
    except ValueError:
        raise ConfigError("store.api_key_block", name, "no Prefect Secret block with that name; "
                          "create it in the UI (Blocks > Secret) or with `prefect block create`") from None


def open_store(settings: Settings) -> VectorStore:
    """The store the config asks for."""
    if settings.store.kind == "qdrant":
        from flows.store.server import ServerStore

        config = settings.store
        if config.api_key is None and config.api_key_block:
            config = config.model_copy(update={"api_key": _secret_block(config.api_key_block)})
        return ServerStore(config)
    from flows.store.edge import EdgeStore

    return EdgeStore(settings.store.path or settings.home / "qdrant", settings.store.lock_timeout)
