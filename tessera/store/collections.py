"""Collections and aliases: create-or-check a collection for a model, resolve and switch aliases."""

from __future__ import annotations

import logging

from tessera.core.errors import ModelMismatchError, SparseConfigMismatchError, VectorStoreError
from tessera.core.types import CollectionInfo
from tessera.store.base import VectorStore

logger = logging.getLogger(__name__)
# What to do about a collection no valid name reaches (`status` and `prune` list them).
UNLISTED_FIX = ("no search, status or prune reaches these collections (their folder names are "
                "not collection names): move each to a folder directly under the store with a "
                "name like team-docs, or delete it")
_MIGRATE = ("write to a new collection (set `collection` in tessera.toml), score it with "
            "`tessera quality`, then point readers at it with `tessera alias`")


def resolve(store: VectorStore, name: str) -> str:
    """The collection behind `name` when it is an alias, else `name` itself."""
    return store.aliases().get(name, name)


def switch_alias(store: VectorStore, alias: str, collection: str) -> dict[str, str | None]:
    """Point readers at a new collection; refuses targets that do not exist or clash."""
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
            "One collection holds one model: to change it, run `tessera migrate --alias NAME "
            "--model MODEL`, which builds a new collection, scores it against this one and "
            "switches the name readers use."
        )
    check_sparse(existing, info)
    check_index(store, info.name)
    return existing


def check_index(store: VectorStore, name: str) -> None:
    """Say, each time a run opens the collection, when its HNSW graph is not the one configured:
    writes keep the collection's own until `tessera optimize` rebuilds it. (qdrant-client's local
    mode ignores HNSW settings and reports the defaults, so there the warning can be wrong.)"""
    have = store.index_params(name)
    if have is not None and have != store.hnsw:
        logger.warning("collection %r has an HNSW graph with m=%d, ef_construct=%d; the config "
                       "asks for m=%d, ef_construct=%d. Its segments keep their own until `tessera "
                       "optimize --collection %s` rebuilds them%s", name, have.m, have.ef_construct,
                       store.hnsw.m, store.hnsw.ef_construct, name,
                       " (m=0: every search scans its vectors)" if have.m == 0 else "")


def check_sparse(existing: CollectionInfo, wanted: CollectionInfo) -> None:
    """Refuse a write whose BM25 config differs from the one the collection records.

    A collection without sparse vectors (built before hybrid search) still takes writes, dense
    only, with a warning: `tessera backfill-sparse` gives it sparse vectors."""
    if existing.sparse == wanted.sparse:
        return
    if existing.sparse is None:
        logger.warning("collection %r has no sparse vectors (built before hybrid search, or with "
                       "sparse.enabled = false): writing dense vectors only; run `tessera "
                       "backfill-sparse --collection %s` to add them", existing.name, existing.name)
        return
    if wanted.sparse is None:
        raise SparseConfigMismatchError(
            f"collection {existing.name!r} holds BM25 sparse vectors, but this config has "
            "sparse.enabled = false, so its points would be missing from sparse and hybrid "
            f"search. Enable [sparse] again, or {_MIGRATE}.")
    diff = {k: (existing.sparse.get(k), wanted.sparse.get(k))
            for k in sorted(set(existing.sparse) | set(wanted.sparse))
            if existing.sparse.get(k) != wanted.sparse.get(k)}
    changes = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())
    raise SparseConfigMismatchError(
        f"collection {existing.name!r} was built with another BM25 sparse config ({changes}). "
        f"One collection holds one sparse config: restore the [sparse] settings, or {_MIGRATE}.")
