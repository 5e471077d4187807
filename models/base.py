"""The embedding backend protocol every backend (local torch, Modal) implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from models.registry import ModelSpec


@dataclass
class EmbedStats:
    """What a backend spent during one run, for the run's events and `fct_embedding_cost`."""

    backend: str = "local"
    device: str = "cpu"
    gpu_type: str | None = None
    items: int = 0
    seconds: float = 0.0
    gpu_seconds: float = 0.0
    batches: int = 0
    retries: int = 0
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class EmbeddingBackend(Protocol):
    """Turns texts or images into float32 vectors of `spec.dimension`, in input order."""

    spec: ModelSpec
    stats: EmbedStats

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embed documents' text chunks; returns an (n, dimension) float32 array."""
        ...

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Embed search queries (same space as documents)."""
        ...

    def embed_images(self, images: list[bytes]) -> np.ndarray:
        """Embed encoded images (png/jpeg/webp/gif bytes); CLIP-style models only."""
        ...

    def close(self) -> None:
        """Release the model (and any remote handles)."""
        ...
