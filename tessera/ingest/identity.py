"""What a collection is built with, and where a declared name's points really go.

Readers use a name (`tessera`, a source's `collection`); behind it is an alias to a real collection
named `<alias>--<vector name>-<tag>`, where the tag is a short hash of the collection's identity:
the model, the chunking and any extra settings that change what is stored. Two builds with the same
identity land in the same collection (so a shadow build resumes after a crash); any change lands in
a new one, which `tessera migrate` builds, scores and switches the alias to.

A declared name is placed like this (`place`): a name with the version mark is a real collection
written as the configuration says; an alias is followed to the collection it points at, which is
written with the identity it records (a migration made with `--model` stays in effect, and a
config change warns until it is migrated); a plain collection from before aliases is written as
before (`tessera migrate` adopts it); a new name becomes a versioned collection behind an alias.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from models import get_spec
from models.registry import ModelSpec
from tessera.core.events import utcnow
from tessera.core.settings import VERSION_MARK, ChunkingConfig, Settings
from tessera.core.sparse import config_from_identity, sparse_identity
from tessera.core.types import CollectionInfo
from tessera.store import VectorStore, ensure_collection

logger = logging.getLogger(__name__)

__all__ = ["VERSION_MARK", "Identity", "Placement", "alias_of", "identity_extra", "identity_for",
           "identity_of", "place", "settings_for", "target_collection", "versioned_info"]


@dataclass(frozen=True)
class Identity:
    """Everything that decides what a collection stores; its hash names the collection."""

    model: str  # registry key (models.registry / [models.NAME])
    model_id: str
    dimension: int
    max_tokens: int | None
    overlap: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """Eight hex digits of sha256 over the identity (the model's key excluded: its id counts)."""
        body = json.dumps({"model_id": self.model_id, "dimension": self.dimension,
                           "max_tokens": self.max_tokens, "overlap": self.overlap,
                           "extra": self.extra}, sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:8]

    @property
    def chunking(self) -> ChunkingConfig:
        """The chunking settings this identity was built with."""
        return ChunkingConfig(max_tokens=self.max_tokens, overlap=self.overlap)

    def record(self, alias: str, **more: Any) -> dict[str, Any]:
        """What the collection stores about itself (CollectionInfo.identity)."""
        return {"model": self.model, "model_id": self.model_id, "dimension": self.dimension,
                "max_tokens": self.max_tokens, "overlap": self.overlap, "extra": self.extra,
                "tag": self.tag, "alias": alias, "created_at": int(utcnow().timestamp()), **more}

    def describe(self) -> dict[str, Any]:
        """The settings, as events and `--json` show them."""
        return {"model": self.model, "model_id": self.model_id,
                "chunking": {"max_tokens": self.max_tokens, "overlap": self.overlap},
                "extra": self.extra, "hash": self.tag}


def identity_extra(settings: Settings) -> dict[str, Any]:
    """Settings beyond model and chunking that change what a collection stores: the BM25 sparse
    config (None when disabled). Each key is hashed into the identity, so changing it is a
    migration."""
    return {"sparse": sparse_identity(settings.sparse)}


def identity_for(settings: Settings, spec: ModelSpec, chunking: ChunkingConfig | None = None,
                 extra: dict[str, Any] | None = None) -> Identity:
    """The identity of a collection this configuration (or these overrides) would build."""
    chunking = chunking or settings.chunking
    return Identity(model=spec.name, model_id=spec.id, dimension=spec.dimension,
                    max_tokens=chunking.max_tokens, overlap=chunking.overlap,
                    extra=identity_extra(settings) if extra is None else extra)


def settings_for(settings: Settings, identity: Identity) -> Settings:
    """Settings that build collections of this identity (its model and chunking).

    The keys of `identity.extra` map back onto their settings here too (the sparse config)."""
    update: dict[str, Any] = {"model": identity.model, "chunking": identity.chunking}
    if "sparse" in identity.extra:
        recorded = identity.extra["sparse"]
        update["sparse"] = (config_from_identity(recorded) if recorded is not None
                            else settings.sparse.model_copy(update={"enabled": False}))
    return settings.model_copy(update=update)


def identity_of(info: CollectionInfo) -> Identity | None:
    """The identity a collection records, or None for a plain one."""
    rec = info.identity
    if not rec:
        return None
    return Identity(model=rec["model"], model_id=rec["model_id"], dimension=int(rec["dimension"]),
                    max_tokens=rec.get("max_tokens"), overlap=int(rec["overlap"]),
                    extra=dict(rec.get("extra") or {}))


def target_collection(alias: str, spec: ModelSpec, identity: Identity) -> str:
    """The real collection behind `alias` for this identity: `<alias>--<vector name>-<tag>`."""
    return f"{alias}{VERSION_MARK}{spec.vector_name}-{identity.tag}"


def alias_of(collection: str) -> str | None:
    """The alias a versioned collection belongs to, or None for a plain name."""
    return collection.split(VERSION_MARK, 1)[0] if VERSION_MARK in collection else None


def versioned_info(name: str, spec: ModelSpec, identity: Identity, alias: str,
                   **more: Any) -> CollectionInfo:
    """CollectionInfo for a versioned collection, its identity recorded."""
    base = CollectionInfo.for_model(name, spec, identity.extra.get("sparse"))
    return CollectionInfo(**{**base.__dict__, "identity": identity.record(alias, **more)})


@dataclass(frozen=True)
class Placement:
    """Where a declared name's points go, and with which model and chunking."""

    collection: str
    spec: ModelSpec
    chunking: ChunkingConfig
    info: CollectionInfo  # as recorded (its sparse config is what the points get)


def place(store: VectorStore, settings: Settings, declared: str, spec: ModelSpec) -> Placement:
    """Resolve (creating if new) the real collection behind `declared` for a write."""
    if VERSION_MARK in declared:
        identity = identity_for(settings, spec)
        alias = alias_of(declared) or declared
        info = ensure_collection(store, versioned_info(declared, spec, identity, alias))
        return Placement(declared, spec, settings.chunking, info)
    live = store.aliases().get(declared)
    if live is not None:
        return _follow(store, settings, declared, live, spec)
    if declared in store.list_collections():  # a plain collection from before aliases
        info = ensure_collection(store, CollectionInfo.for_model(
            declared, spec, sparse_identity(settings.sparse)))
        return Placement(declared, spec, settings.chunking, info)
    identity = identity_for(settings, spec)
    name = target_collection(declared, spec, identity)
    info = ensure_collection(store, versioned_info(name, spec, identity, declared))
    store.set_alias(declared, name)
    return Placement(name, spec, settings.chunking, info)


def _follow(store: VectorStore, settings: Settings, alias: str, live: str,
            spec: ModelSpec) -> Placement:
    """Write to what the alias points at, with the model and chunking it was built with."""
    info = store.get_collection(live)
    identity = identity_of(info) if info is not None else None
    if info is None or identity is None:
        info = ensure_collection(store, CollectionInfo.for_model(
            live, spec, sparse_identity(settings.sparse)))
        return Placement(live, spec, settings.chunking, info)
    wanted = identity_for(settings, spec)
    if wanted.tag != identity.tag:
        logger.warning(
            "%r serves collection %r (model %s, chunking max_tokens=%s overlap=%s); the "
            "configuration asks for model %s, max_tokens=%s, overlap=%s. Ingest keeps writing what "
            "is live; run `tessera migrate --alias %s` to build, score and switch to the new "
            "settings", alias, live, identity.model, identity.max_tokens, identity.overlap,
            wanted.model, wanted.max_tokens, wanted.overlap, alias)
    live_spec = get_spec(settings, identity.model)
    info = ensure_collection(store, CollectionInfo.for_model(live, live_spec, info.sparse))
    return Placement(live, live_spec, identity.chunking, info)
