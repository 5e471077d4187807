"""Local embedding backend: sentence-transformers on torch, CPU or CUDA."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.base import EmbedStats, require_images
from models.registry import ModelSpec
from tessera.core.errors import EmbeddingError

logger = logging.getLogger(__name__)


def pick_device(device: str) -> str:
    """'auto' means CUDA when torch sees a GPU, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_sentence_transformer(path: Path, device: str) -> Any:
    """Load a sentence-transformers (or CLIP) directory with no network access."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one clear error
        raise EmbeddingError(
            f"could not load the model at {path}: {exc}. The directory must hold a model saved "
            "with save_pretrained/save (config.json, weights, tokenizer)."
        ) from exc


def decode_image(data: bytes) -> Any:
    """Bytes to an RGB PIL image with EXIF orientation applied."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        img.seek(0)  # first frame of an animated gif
        return ImageOps.exif_transpose(img).convert("RGB")


class LocalBackend:
    """Embeds in this process with sentence-transformers; weights load once, lazily."""

    def __init__(self, spec: ModelSpec, path: Path, device: str = "auto", batch_size: int = 32):
        self.spec = spec
        self.path = path
        self.batch_size = batch_size
        self._device_setting = device
        self._model: Any = None
        self.stats = EmbedStats(backend="local")

    @property
    def model(self) -> Any:
        """The loaded model; the first access pays the import and load."""
        if self._model is None:
            device = pick_device(self._device_setting)
            self._model = load_sentence_transformer(self.path, device)
            self.stats.device = device
            if device.startswith("cuda"):
                import torch

                self.stats.gpu_type = torch.cuda.get_device_name(0)
            dim = self._model.get_embedding_dimension()
            if dim is not None and dim != self.spec.dimension:
                raise EmbeddingError(
                    f"model at {self.path} produces {dim}-dim vectors but the registry says "
                    f"{self.spec.name!r} has {self.spec.dimension}; fix [models.{self.spec.name}]"
                )
        return self._model

    def _encode(self, inputs: list[Any]) -> np.ndarray:
        if not inputs:
            return np.zeros((0, self.spec.dimension), dtype=np.float32)
        model = self.model
        start = time.perf_counter()
        vectors = model.encode(
            inputs,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.spec.normalize,
            show_progress_bar=False,
        )
        elapsed = time.perf_counter() - start
        if self.stats.device.startswith("cuda"):
            self.stats.gpu_seconds += elapsed
        self.stats.items += len(inputs)
        self.stats.batches += 1
        return np.asarray(vectors, dtype=np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embed document chunks."""
        return self._encode(list(texts))

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Embed queries (this model family uses no query prefix)."""
        return self._encode(list(texts))

    def embed_images(self, images: list[bytes]) -> np.ndarray:
        """Embed encoded images with a CLIP-style model."""
        require_images(self.spec)
        return self._encode([decode_image(b) for b in images])

    def close(self) -> None:
        """Drop the model so its memory can be freed."""
        self._model = None
