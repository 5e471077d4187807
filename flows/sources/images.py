"""Image source: png, jpg, webp and gif files (first frame), each one document of modality "image".

Each image is checked before it can reach the model: within the byte and pixel limits, fully
decodable (a truncated file is caught here, not in the GPU batch), a supported format and mode.
A file that fails is quarantined with the reason; `check_image` is the same check as a pure
function, for the data contracts.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from flows.errors import ConfigError, RecordError
from flows.settings import SourceConfig, SourceOptions
from flows.sources.base import Document, Loaded, Quarantined, safe_path
from flows.sources.directory import discover_files

if TYPE_CHECKING:
    from models.registry import ModelSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
FORMATS = {"PNG", "JPEG", "WEBP", "GIF"}
# Modes that convert to RGB without losing meaning; 16-bit and float images do not.
MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}
CAPTION_SUFFIX = ".txt"
MAX_CAPTION_BYTES = 64 * 1024


class ImageLimits(Protocol):
    """The limits `check_image` needs (a source's `options` has them)."""

    max_image_bytes: int
    max_image_pixels: int


@dataclass(frozen=True)
class ImageInfo:
    """What a valid image looks like once its EXIF orientation is applied."""

    width: int
    height: int
    format: str
    mode: str
    frames: int


def inspect_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Check one encoded image against the limits; a RecordError says what is wrong and the fix."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if len(data) > limits.max_image_bytes:
        raise _too_many_bytes(len(data), limits.max_image_bytes)
    if not data:
        raise RecordError("the file is empty", expectation="image_decodable")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below replaces Pillow's global decompression-bomb guard.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # so large that Pillow refuses to open it
        raise RecordError(f"the image is too large to open safely ({exc}); downscale it",
                          expectation="image_pixels_within_limit") from None
    except (UnidentifiedImageError, OSError, ValueError):
        # Pillow's message names an in-memory buffer, which tells the user nothing.
        raise RecordError(
            f"not a readable image (the first bytes are {data[:8]!r}, which no supported format "
            "starts with); supported formats are png, jpeg, webp and gif",
            expectation="image_decodable") from None
    with img:
        if img.format not in FORMATS:
            raise RecordError(
                f"the format {img.format} is not supported; convert it to png, jpeg, webp or gif",
                expectation="image_format_supported")
        width, height = img.size
        if width * height > limits.max_image_pixels:
            raise RecordError(
                f"the image is {width}x{height} = {width * height:,} pixels, over this source's "
                f"limit of {limits.max_image_pixels:,} (options.max_image_pixels); downscale it "
                "or raise the limit", expectation="image_pixels_within_limit")
        if img.mode not in MODES:
            raise RecordError(
                f"the image mode {img.mode} (16-bit or floating point) is not supported; save it "
                "as 8-bit RGB or grayscale", expectation="image_mode_supported")
        frames = getattr(img, "n_frames", 1)
        try:
            img.seek(0)  # an animated gif is embedded by its first frame
            img.load()
            oriented = ImageOps.exif_transpose(img)
        except (OSError, ValueError, SyntaxError) as exc:
            raise RecordError(f"the image data is damaged or truncated ({exc}); re-export it",
                              expectation="image_decodable") from None
        return ImageInfo(width=oriented.width, height=oriented.height, format=img.format,
                         mode=img.mode, frames=frames)


def _too_many_bytes(size: int, limit: int) -> RecordError:
    return RecordError(
        f"the file is {size:,} bytes, over this source's limit of {limit:,} "
        "(options.max_image_bytes); shrink it or raise the limit",
        expectation="image_bytes_within_limit")


def check_image(data: bytes, options: ImageLimits | None = None) -> str | None:
    """The reason this image cannot be indexed, or None if it can (the contracts reuse this)."""
    try:
        inspect_image(data, options or SourceOptions())
    except RecordError as err:
        return err.reason
    return None


def require_image_model(spec: ModelSpec, source: SourceConfig) -> None:
    """Refuse, before any work, an image source whose model cannot embed images."""
    if "image" not in spec.modalities:
        raise ConfigError(
            "model", spec.name,
            f"source {source.name!r} holds images, but {spec.name!r} embeds text only. Use a "
            "CLIP-style model (e.g. clip-vit-base-patch32) for this collection: its text and "
            "images share one vector space. A collection holds one model, so write the images "
            "to a collection of their own (set `collection` on the source) or switch the whole "
            "collection to the CLIP model.")


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
            except RecordError as err:
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
                raise _too_many_bytes(size, limits.max_image_bytes)
            data = path.read_bytes()
        except OSError as exc:
            raise RecordError(f"cannot be read: {exc.strerror}", "readable") from None
        info = inspect_image(data, limits)
        caption, caption_from = self._caption(path)
        return Document(
            doc_id=self._doc_id(rel), source=self.config.name, uri=str(self.root / rel),
            modality="image", text=caption, title=path.stem, data=data, size_bytes=len(data),
            metadata={"path": rel, "width": info.width, "height": info.height,
                      "format": info.format.lower(), "mode": info.mode, "frames": info.frames,
                      "caption_from": caption_from},
        )

    def _caption(self, path: Path) -> tuple[str, str]:
        """`cat.png.txt` or `cat.txt` beside the image, else the file's stem."""
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

