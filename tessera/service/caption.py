"""Caption images on request: `tessera caption IMAGE...`, and the handler an HTTP route calls.

`CaptionService` holds the captioner (loaded once) and the home's caption cache open, so a
server answers each request without reloading the model; `caption_images` is the one-shot form
the CLI uses. Every image is checked first (decodable, within the byte and pixel limits, a
supported format, not animated) and a bad one gets an error entry without reaching the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from data_contracts.images import inspect_image
from models import make_captioner
from models.caption_cache import CaptionCache, cache_path, image_hash
from models.captioning import CaptionBackend, captioner_spec
from tessera.core.errors import RecordError
from tessera.core.settings import Settings, SourceOptions
from tessera.ingest.captioning import caption_with_cache

DEFAULT_CAPTIONER = "blip-image-captioning-base"


@dataclass(frozen=True)
class NamedImage:
    """An image to caption and the name it is reported under (a path, an upload's name)."""

    name: str
    data: bytes


class CaptionService:
    """A captioner and the caption cache, open for many requests."""

    def __init__(self, settings: Settings, captioner: str | None = None,
                 backend: CaptionBackend | None = None, limits: SourceOptions | None = None,
                 ) -> None:
        spec = captioner_spec(settings, captioner or DEFAULT_CAPTIONER)
        self.backend = backend or make_captioner(settings, spec)
        self.cache = CaptionCache(cache_path(settings.home))
        self.limits = limits or SourceOptions()

    def caption(self, images: list[NamedImage]) -> dict[str, Any]:
        """{"captioner", "captions": [{"image", "sha256", "caption", "cached"} or
        {"image", "sha256", "error"}], "made", "reused", "failed", "refused"}, in input order
        ("refused": the failed images the checks turned away before the captioner saw them)."""
        checked: list[tuple[NamedImage, str | None]] = [(img, _problem(img.data, self.limits))
                                                        for img in images]
        good = [img for img, problem in checked if problem is None]
        results = iter(caption_with_cache(self.backend, self.cache, [g.data for g in good]))
        rows: list[dict[str, Any]] = []
        for img, problem in checked:
            row: dict[str, Any] = {"image": img.name, "sha256": image_hash(img.data)}
            result = next(results) if problem is None else None
            if result is not None and result.caption is not None:
                row |= {"caption": result.caption, "cached": result.cached}
            else:
                row["error"] = problem or (result.error if result else "no caption")
            rows.append(row)
        return {"captioner": self.backend.spec.id, "captions": rows,
                "made": sum("caption" in r and not r["cached"] for r in rows),
                "reused": sum(bool(r.get("cached")) for r in rows),
                "failed": sum("error" in r for r in rows), "refused": len(images) - len(good)}

    def close(self) -> None:
        """Release the model and the cache."""
        self.backend.close()
        self.cache.close()


def caption_images(settings: Settings, images: list[NamedImage], captioner: str | None = None,
                   backend: CaptionBackend | None = None) -> dict[str, Any]:
    """Caption these images once (through the cache) and release the model."""
    service = CaptionService(settings, captioner, backend)
    try:
        return service.caption(images)
    finally:
        service.close()


def _problem(data: bytes, limits: SourceOptions) -> str | None:
    """Why this image is not captioned, or None: the image source's own checks, and no
    animation (one frame may not show what an animation is about)."""
    try:
        info = inspect_image(data, limits)
    except RecordError as err:
        return err.reason
    if info.frames > 1:
        return (f"an animated image ({info.frames} frames) is not captioned; export one still "
                "frame")
    return None
