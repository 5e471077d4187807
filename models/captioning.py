"""Captioners: a model that turns an image into words (BLIP), so images are findable by text.

A captioner is a registry entry of kind "captioner" (`[models.NAME]`, or the built-in
`blip-image-captioning-base`). Backends implement `CaptionBackend`: `LocalCaptioner` runs
transformers' BLIP in this process on the CPU or a CUDA GPU; `models.caption_modal.ModalCaptioner`
calls the deployed `Captioner` class of `infra/modal_app.py`, which runs `LocalCaptioner` itself.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from models.base import EmbedStats
from models.registry import ModelSpec, get_spec
from tessera.core.errors import ConfigError, EmbeddingError

if TYPE_CHECKING:
    from tessera.core.settings import CaptioningConfig, Settings

logger = logging.getLogger(__name__)


class CaptionError(EmbeddingError):
    """The captioner could not caption an image or a batch (the message says why)."""


@dataclass(frozen=True)
class Generation:
    """How captions are generated; part of the cache key, since each setting changes the text."""

    max_new_tokens: int = 30
    num_beams: int = 3
    prompt: str = ""

    @classmethod
    def from_config(cls, config: CaptioningConfig) -> Generation:
        """The generation settings of `[captioning]`."""
        return cls(config.max_new_tokens, config.num_beams, config.prompt)

    def key(self) -> str:
        """A stable string for the cache key and the payload."""
        return json.dumps({"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                           "prompt": self.prompt}, sort_keys=True)


@runtime_checkable
class CaptionBackend(Protocol):
    """Turns encoded images (png/jpeg/webp/gif bytes) into one caption each, in input order.

    A batch that fails raises (CaptionError or the runtime's own error); callers that must not
    lose the good images of a bad batch caption its images one by one to find the bad one.
    """

    spec: ModelSpec
    generation: Generation
    stats: EmbedStats

    def caption(self, images: list[bytes]) -> list[str]:
        """One caption per image."""
        ...

    def close(self) -> None:
        """Release the model."""
        ...


def captioner_spec(settings: Settings, name: str) -> ModelSpec:
    """The registry entry `name`, refused unless it is a captioner."""
    spec = get_spec(settings, name)
    if spec.kind != "captioner":
        raise ConfigError("captioner", name, f"{name!r} is a {spec.kind} model, not a captioner; "
                          "name a [models.NAME] entry with kind = \"captioner\" (default: "
                          "blip-image-captioning-base)")
    return spec


def cache_key(spec: ModelSpec, generation: Generation) -> str:
    """What identifies a captioner's output: model id, revision and generation settings."""
    return f"{spec.id}@{spec.revision}|{generation.key()}"


# (caption, None) or (None, why not), one per image.
Outcome = tuple[str | None, str | None]


def caption_each(backend: CaptionBackend, images: list[bytes]) -> list[Outcome]:
    """Caption a batch; if it fails, caption each half, down to the image that fails alone, so
    one bad image never costs the others their captions. A missing or unreachable captioner
    (an EmbeddingError that is not a CaptionError) is no image's fault: it is raised."""
    if not images:
        return []
    try:
        captions = backend.caption(images)
        if len(captions) != len(images):
            raise CaptionError(f"the captioner returned {len(captions)} captions for "
                               f"{len(images)} images")
    except EmbeddingError as exc:
        if not isinstance(exc, CaptionError):
            raise
        failure: Exception = exc
    except Exception as exc:  # noqa: BLE001 - a runtime error on some image; find which
        failure = exc
    else:
        return [(text, None) for text in captions]
    if len(images) == 1:
        return [(None, f"{type(failure).__name__}: {failure}")]
    mid = len(images) // 2
    return caption_each(backend, images[:mid]) + caption_each(backend, images[mid:])


def _decode(data: bytes) -> Any:
    from models.local import decode_image

    try:
        return decode_image(data)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad bytes
        raise CaptionError(f"the image cannot be decoded ({type(exc).__name__}: {exc})") from exc


def probe_image() -> bytes:
    """A fixed 64x64 gradient (PNG): what `refresh-models` shows a captioner to verify it."""
    import io

    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (64, 1)), np.tile(ramp[:, None], (1, 64)),
                       np.full((64, 64), 128, np.uint8)], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def captioner_loader(device: str = "cpu") -> Any:
    """A `models.cache.Loader` for captioners: the probe "vector" is the vision tower's pooled
    embedding of `probe_image()` (a caption is text; its image features are what the files
    compute), so the manifest's probe check works for captioners as for embedders."""
    def load(spec: ModelSpec, path: Path) -> tuple[Any, float]:
        import numpy as np
        import torch

        captioner = LocalCaptioner(spec, path, Generation(), device)
        start = time.perf_counter()
        captioner.load()
        seconds = time.perf_counter() - start

        def embed(_texts: list[str]) -> Any:
            inputs = captioner._processor(images=[_decode(probe_image())], return_tensors="pt")
            with torch.inference_mode():
                out = captioner._model.vision_model(
                    pixel_values=inputs["pixel_values"].to(captioner._model.device))
            return np.asarray(out.pooler_output.float().cpu().numpy(), np.float32)

        return embed, seconds
    return load


class LocalCaptioner:
    """BLIP (`BlipForConditionalGeneration`) in this process; weights load once, lazily."""

    def __init__(self, spec: ModelSpec, path: Path, generation: Generation | None = None,
                 device: str = "auto", batch_size: int = 16) -> None:
        self.spec = spec
        self.path = Path(path)
        self.generation = generation or Generation()
        self.batch_size = batch_size
        self.stats = EmbedStats(backend="local")
        self._device_setting = device
        self._model: Any = None
        self._processor: Any = None

    def load(self) -> None:
        """Load the processor and weights (no network); the first caption calls this."""
        if self._model is not None:
            return
        from transformers import BlipForConditionalGeneration, BlipProcessor
        from transformers.utils import logging as hf_logging

        from models.local import pick_device

        hf_logging.disable_progress_bar()
        device = pick_device(self._device_setting)
        try:
            processor = BlipProcessor.from_pretrained(self.path, local_files_only=True)
            model = BlipForConditionalGeneration.from_pretrained(self.path, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one clear error
            raise EmbeddingError(
                f"could not load the captioner {self.spec.name!r} at {self.path}: {exc}. The "
                "directory must hold a BLIP model saved with save_pretrained (config.json, "
                "weights, processor and tokenizer files); fill it with `tessera refresh-models`"
            ) from exc
        model.to(device)  # type: ignore[arg-type]  # transformers' stubs miss str devices
        self._processor, self._model = processor, model.eval()
        self.stats.device = device
        if device.startswith("cuda"):
            import torch

            self.stats.gpu_type = torch.cuda.get_device_name(0)

    def caption(self, images: list[bytes]) -> list[str]:
        """Caption the images, `batch_size` at a time."""
        out: list[str] = []
        for start in range(0, len(images), self.batch_size):
            out += self._caption_batch(images[start:start + self.batch_size])
        return out

    def _caption_batch(self, images: list[bytes]) -> list[str]:
        if not images:
            return []
        import torch

        self.load()
        pictures = [_decode(data) for data in images]
        gen = self.generation
        start = time.perf_counter()
        if gen.prompt:
            inputs = self._processor(images=pictures, text=[gen.prompt] * len(pictures),
                                     return_tensors="pt")
        else:
            inputs = self._processor(images=pictures, return_tensors="pt")
        inputs = inputs.to(self._model.device)
        with torch.inference_mode():
            ids = self._model.generate(**inputs, max_new_tokens=gen.max_new_tokens,
                                       num_beams=gen.num_beams)
        texts = self._processor.batch_decode(ids, skip_special_tokens=True)
        elapsed = time.perf_counter() - start
        if self.stats.device.startswith("cuda"):
            self.stats.gpu_seconds += elapsed
        self.stats.items += len(images)
        self.stats.batches += 1
        return [" ".join(str(t).split()) for t in texts]

    def close(self) -> None:
        """Drop the model so its memory can be freed."""
        self._model = self._processor = None
