"""The vector store: one protocol, two implementations (Qdrant Edge in-process, Qdrant server).

`open_store` picks the one the config asks for. A server's API key comes from the settings
(`TESSERA_STORE__API_KEY`, or a Prefect Secret block resolved by the entry point: flows/config.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tessera.store.base import (
    DIFF_FIELDS,
    INTEGER_INDEXES,
    KEYWORD_INDEXES,
    HnswParams,
    VectorStore,
)
from tessera.store.collections import ensure_collection, resolve, switch_alias

if TYPE_CHECKING:
    from tessera.core.settings import Settings

__all__ = ["DIFF_FIELDS", "INTEGER_INDEXES", "KEYWORD_INDEXES", "HnswParams", "VectorStore",
           "ensure_collection", "open_store", "resolve", "switch_alias"]


def open_store(settings: Settings) -> VectorStore:
    """The store the config asks for."""
    if settings.store.kind == "qdrant":
        from tessera.store.server import ServerStore

        return ServerStore(settings.store)  # its HNSW graph: settings.store.hnsw_*
    from tessera.store.edge import EdgeStore

    return EdgeStore(settings.store.path or settings.home / "qdrant", settings.store.lock_timeout,
                     hnsw=HnswParams(settings.store.hnsw_m, settings.store.hnsw_ef_construct))
