"""Collections and aliases: create-or-check a collection for a model, resolve and switch aliases."""

from __future__ import annotations

from flows.pipeline.store.base import VectorStore
from tessera.errors import ModelMismatchError, VectorStoreError
from tessera.types import CollectionInfo


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
    return existing
