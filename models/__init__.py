"""Embedding models: the registry, and the backend that runs the configured one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.base import EmbeddingBackend, EmbedStats
from models.registry import ModelSpec, get_spec, resolve_model_path

if TYPE_CHECKING:
    from flows.settings import Settings

__all__ = ["EmbedStats", "EmbeddingBackend", "ModelSpec", "get_spec", "make_backend",
           "resolve_model_path"]


def choose_backend(settings: Settings, pending_chunks: int) -> str:
    """'local' or 'modal': `auto` routes to Modal when the backlog exceeds the threshold."""
    backend = settings.embedding.backend
    if backend == "auto":
        return "modal" if pending_chunks > settings.embedding.modal_threshold_chunks else "local"
    return backend


def make_backend(settings: Settings, spec: ModelSpec | None = None,
                 pending_chunks: int = 0) -> EmbeddingBackend:
    """The embedding backend for this run (local torch, or the deployed Modal class)."""
    spec = spec or get_spec(settings)
    if choose_backend(settings, pending_chunks) == "modal":
        from models.modal_backend import ModalBackend  # type: ignore[import-not-found,unused-ignore]

        return ModalBackend(spec, settings.embedding.modal)  # type: ignore[no-any-return,unused-ignore]
    from models.local import LocalBackend

    path = resolve_model_path(spec, settings.model_cache_dir)
    return LocalBackend(spec, path, settings.embedding.device, settings.embedding.batch_size)
