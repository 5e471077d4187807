"""The embedding backend protocol every backend (local torch, Modal) implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from models.registry import ModelSpec
from tessera.core.errors import EmbeddingError


@dataclass
class EmbedStats:
    """What a backend spent during one run, for the run's events and `fct_embedding_cost`."""

    backend: str = "local"
    device: str = "cpu"
    gpu_type: str | None = None
    items: int = 0
    gpu_seconds: float = 0.0
    batches: int = 0
    retries: int = 0


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


@runtime_checkable
class EmbedsTokenIds(Protocol):
    """A backend that can embed chunks from token ids its caller already has.

    The chunker tokenizes every document to cut its windows; a backend with this method takes
    those windows' ids instead of tokenizing the chunk texts a second time. `path` is the model
    folder whose tokenizer.json the ids must come from.
    """

    path: Path

    def embed_token_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Embed chunks given as token ids without special tokens; (n, dimension) float32."""
        ...


def require_images(spec: ModelSpec) -> None:
    """Refuse images for a text-only model (CLIP-style models embed both in one space)."""
    if "image" not in spec.modalities:
        raise EmbeddingError(f"model {spec.name!r} embeds text only; images need a CLIP-style model")
