"""Image source: png, jpg, webp and gif files (first frame), each one document of modality "image".

Each image is checked before it can reach the model (`data_contracts.images`): within the byte
and pixel limits, fully decodable (a truncated file is caught here, not in the GPU batch), a
supported format and mode. A file that fails is quarantined with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from data_contracts.images import inspect_image, too_many_bytes
from tessera.core.errors import ConfigError, RecordError
from tessera.core.formats import IMAGE_SUFFIXES
from tessera.core.settings import SourceConfig
from tessera.core.types import Document, Loaded, Quarantined
from tessera.sources.base import safe_path
from tessera.sources.directory import discover_files, unreadable

if TYPE_CHECKING:
    from models.registry import ModelSpec

CAPTION_SUFFIX = ".txt"
MAX_CAPTION_BYTES = 64 * 1024


def captions_as_text(spec: ModelSpec, source: SourceConfig) -> bool:
    """True when a text-only model indexes this image source through its model captions."""
    return "image" not in spec.modalities and source.options.caption in ("model", "both")


def require_image_model(spec: ModelSpec, source: SourceConfig) -> None:
    """Refuse, before any work, an image source whose model cannot embed images (unless the
    images are captioned by a model and embedded as their captions' text)."""
    if "image" not in spec.modalities and not captions_as_text(spec, source):
        raise ConfigError(
            "model", spec.name,
            f"source {source.name!r} holds images, but {spec.name!r} embeds text only. Use a "
            "CLIP-style model (e.g. clip-vit-base-patch32) for this collection: its text and "
            "images share one vector space. A collection holds one model, so write the images "
            "to a collection of their own (set `collection` on the source) or switch the whole "
            "collection to the CLIP model. Or set the source's options.caption = \"model\" to "
            "index the images by their captions' words with this text model.")


class ImageSource:
    """Each image file is one document; `<name>.txt` beside it, if any, is its caption."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.root = Path(config.path)

    def discover(self) -> list[str]:
        """Image files, plus any other file that is not a caption (it is quarantined on load)."""
        files = discover_files(self.config, None)
        images = {rel for rel in files if Path(rel).suffix.lower() in IMAGE_SUFFIXES}
        # A caption is `cat.png.txt` or `cat.txt` beside `cat.png`.
        stems = images | {Path(rel).with_suffix("").as_posix() for rel in images}
        return [rel for rel in files if rel in images or not self._is_caption(rel, stems)]

    def load(self, items: list[str]) -> Iterator[Loaded]:
        """Documents and quarantine rows for these files."""
        for rel in items:
            try:
                yield self._load(rel)
            except Exception as exc:  # noqa: BLE001 - one unreadable image must not stop the batch
                err = exc if isinstance(exc, RecordError) else unreadable(exc)
                yield Quarantined(source=self.config.name, doc_id=self._doc_id(rel),
                                  uri=str(self.root / rel), reason=f"{rel}: {err.reason}",
                                  expectation=err.expectation)

    def _doc_id(self, rel: str) -> str:
        return f"{self.config.name}/{rel}"

    @staticmethod
    def _is_caption(rel: str, image_stems: set[str]) -> bool:
        path = Path(rel)
        return (path.suffix.lower() == CAPTION_SUFFIX
                and path.with_suffix("").as_posix() in image_stems)

    def _load(self, rel: str) -> Document:
        path = safe_path(self.root, rel)
        suffix = path.suffix.lower()
        if suffix == CAPTION_SUFFIX:
            raise RecordError("a caption file with no image beside it; add the image or remove "
                              "the caption", expectation="caption_has_image")
        if suffix not in IMAGE_SUFFIXES:
            raise RecordError(
                f"the extension {suffix or '(none)'!r} is not an image format this source reads "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); narrow the source's glob",
                expectation="allowed_extension")
        limits = self.config.options
        try:
            size = path.stat().st_size
            if size > limits.max_image_bytes:  # refuse before reading it into memory
                raise too_many_bytes(size, limits.max_image_bytes)
            data = path.read_bytes()
        except OSError as exc:
            raise RecordError(f"cannot be read: {exc.strerror}", "readable") from None
        info = inspect_image(data, limits)
        caption, caption_source = self._caption(path)
        return Document(
            doc_id=self._doc_id(rel), source=self.config.name, uri=str(self.root / rel),
            modality="image", text=caption, title=path.stem, data=data, size_bytes=len(data),
            metadata={"path": rel, "width": info.width, "height": info.height,
                      "format": info.format.lower(), "mode": info.mode, "frames": info.frames,
                      "caption_source": caption_source},
        )

    def _caption(self, path: Path) -> tuple[str, str]:
        """`cat.png.txt` or `cat.txt` beside the image, else the file's stem (with
        `options.caption` "model" or "none", the stem: the sidecar is not read)."""
        if self.config.options.caption in ("model", "none"):
            return path.stem, "stem"
        for candidate in (path.with_name(path.name + CAPTION_SUFFIX),
                          path.with_suffix(CAPTION_SUFFIX)):
            if candidate.is_file() and candidate.stat().st_size <= MAX_CAPTION_BYTES:
                try:
                    text = candidate.read_text(encoding=self.config.options.encoding).strip()
                except (OSError, UnicodeDecodeError):
                    continue
                if text:
                    return text, "sidecar"
        return path.stem, "stem"

