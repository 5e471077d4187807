"""Embedding models: the registry, and the backend that runs the configured one."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from models.base import EmbeddingBackend, EmbedStats
from models.registry import ModelSpec, get_spec, resolve_model_path

if TYPE_CHECKING:
    from models.captioning import CaptionBackend
    from tessera.core.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["EmbedStats", "EmbeddingBackend", "ModelSpec", "get_spec", "make_backend",
           "make_captioner", "resolve_model_path"]


def choose_backend(settings: Settings, pending_chunks: int) -> str:
    """'local' or 'modal': `auto` routes to Modal when the backlog exceeds the threshold."""
    backend = settings.embedding.backend
    if backend == "auto":
        return "modal" if pending_chunks > settings.embedding.modal_threshold_chunks else "local"
    return backend


def _nvidia_driver() -> bool:
    """No NVIDIA driver means no CUDA: then `auto` is the CPU without importing torch (seconds)."""
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()


def make_backend(settings: Settings, spec: ModelSpec | None = None,
                 pending_chunks: int = 0) -> EmbeddingBackend:
    """The embedding backend for this run (local torch, or the deployed Modal class)."""
    spec = spec or get_spec(settings)
    if choose_backend(settings, pending_chunks) == "modal":
        from models.modal_backend import ModalBackend

        return ModalBackend(spec, settings.embedding.modal)
    from models.local import LocalBackend, pick_device

    emb = settings.embedding
    path = resolve_model_path(spec, settings.model_cache_dir)
    # OpenVINO runs CPU text models; CUDA and CLIP stay on torch.
    if (emb.runtime == "openvino" and spec.kind == "sentence-transformers"
            and (emb.device == "cpu" or (emb.device == "auto"
                                         and (not _nvidia_driver() or pick_device("auto") == "cpu")))):
        if importlib.util.find_spec("openvino") is None:
            logger.warning("runtime 'openvino' is configured but the openvino package is not "
                           "installed; embedding with torch (pip install openvino to fix)")
            return LocalBackend(spec, path, emb.device, emb.batch_size)
        from models.optimized import OpenVINOBackend

        return OpenVINOBackend(spec, path, settings.model_cache_dir, emb.precision,
                               emb.batch_size, emb.threads)
    return LocalBackend(spec, path, emb.device, emb.batch_size)


def make_captioner(settings: Settings, spec: ModelSpec) -> CaptionBackend:
    """The captioning backend the config asks for (local transformers, or Modal)."""
    from models.captioning import Generation, LocalCaptioner

    cfg = settings.captioning
    generation = Generation.from_config(cfg)
    if cfg.backend == "modal":
        from models.caption_modal import ModalCaptioner

        return ModalCaptioner(spec, generation, settings.embedding.modal, cfg.class_name,
                              cfg.batch_size)
    path = resolve_model_path(spec, settings.model_cache_dir)
    return LocalCaptioner(spec, path, generation, cfg.device, cfg.batch_size)
