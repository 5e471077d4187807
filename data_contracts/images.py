"""The image checks, as pure functions: the image source runs them on load, the documents
contract runs them again on every image in a batch."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Protocol

from tessera.core.errors import RecordError
from tessera.core.settings import SourceOptions

FORMATS = {"PNG", "JPEG", "WEBP", "GIF"}
# Modes that convert to RGB without losing meaning; 16-bit and float images do not.
MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}


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
        raise too_many_bytes(len(data), limits.max_image_bytes)
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


def too_many_bytes(size: int, limit: int) -> RecordError:
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
