"""Image source, image checks and CLIP search: a tiny CLIP built here, loaded the real way."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data_contracts.images import check_image
from models.local import LocalBackend, decode_image
from models.registry import BUILTIN, get_spec, resolve_model_path
from tessera.core.errors import ConfigError, EmbeddingError, ModelMismatchError
from tessera.core.settings import SourceConfig, SourceOptions, load_settings
from tessera.core.types import Document, Quarantined
from tessera.sources import make_source
from tessera.sources.images import ImageSource, require_image_model
from tests.support.tiny_clip import DIMENSION, tiny_clip_spec

pytestmark = pytest.mark.filterwarnings(
    # transformers 5 + Pillow: third-party noise while loading a CLIP processor.
    "ignore::UserWarning:transformers.*",
)


@pytest.fixture(scope="module")
def clip(clip_dir: Path) -> LocalBackend:
    """The tiny CLIP through the local backend's real loading path."""
    backend = LocalBackend(tiny_clip_spec(clip_dir), clip_dir, device="cpu", batch_size=8)
    backend.model  # noqa: B018 - load once for the module
    return backend


def _encode(img: Any, fmt: str, **save: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def _noise(seed: int, size: tuple[int, int] = (48, 40)) -> Any:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _source(root: Path, **options: Any) -> ImageSource:
    config = SourceConfig(name="pics", kind="images", path=root, modality="image",
                          options=SourceOptions(**options))
    source = make_source(config)
    assert isinstance(source, ImageSource)
    return source


def _load_all(source: ImageSource) -> dict[str, Document | Quarantined]:
    loaded = list(source.load(source.discover()))
    return {Path(item.uri).name: item for item in loaded}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- the image check and the source --------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_supported_formats_pass_the_check(fmt: str) -> None:
    assert check_image(_encode(_noise(1), fmt)) is None


def test_bad_files_are_quarantined_with_reasons(tmp_path: Path) -> None:
    good = _encode(_noise(2), "PNG")
    (tmp_path / "good.png").write_bytes(good)
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "notes.png").write_text("this is text with a .png extension")
    (tmp_path / "scan.bmp").write_bytes(_encode(_noise(3), "BMP"))
    (tmp_path / "deep.png").write_bytes(_encode(_noise(4).convert("I;16"), "PNG"))
    (tmp_path / "orphan.txt").write_text("a caption whose image is gone")

    items = _load_all(_source(tmp_path))

    assert isinstance(items["good.png"], Document)
    reasons = {name: item.reason for name, item in items.items() if isinstance(item, Quarantined)}
    assert set(reasons) == {"truncated.png", "notes.png", "scan.bmp", "deep.png", "orphan.txt"}
    assert "truncated" in reasons["truncated.png"]
    assert "not a readable image" in reasons["notes.png"]
    assert "'.bmp' is not an image format" in reasons["scan.bmp"]
    assert "mode I;16" in reasons["deep.png"]
    assert "no image beside it" in reasons["orphan.txt"]
    assert items["truncated.png"].expectation == "image_decodable"  # type: ignore[union-attr]
    # The pure check gives the same reasons, for the data contracts.
    assert check_image(good[: len(good) // 2]) is not None
    assert check_image(b"this is text") is not None


def test_oversize_images_are_refused(tmp_path: Path) -> None:
    big = _encode(_noise(5, (200, 100)), "PNG")
    (tmp_path / "big.png").write_bytes(big)

    by_bytes = _load_all(_source(tmp_path, max_image_bytes=len(big) - 1))["big.png"]
    by_pixels = _load_all(_source(tmp_path, max_image_pixels=19_999))["big.png"]
    fits = _load_all(_source(tmp_path, max_image_pixels=20_000))["big.png"]

    assert isinstance(by_bytes, Quarantined) and "options.max_image_bytes" in by_bytes.reason
    assert by_bytes.expectation == "image_bytes_within_limit"
    assert isinstance(by_pixels, Quarantined) and "200x100 = 20,000 pixels" in by_pixels.reason
    assert by_pixels.expectation == "image_pixels_within_limit"
    assert isinstance(fits, Document)
    # A header claiming 400 megapixels is refused from the header alone.
    assert "too large to open safely" in (check_image(_png_header(20_000, 20_000)) or "")
    assert "40,000,000 pixels" in (check_image(_png_header(8_000, 5_000), SourceOptions(
        max_image_pixels=39_999_999)) or "")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims a size its (empty) data does not have."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_document_fields_caption_and_every_file_accounted_for(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    data = _encode(_noise(6), "JPEG")
    (tmp_path / "sub" / "cat.jpg").write_bytes(data)
    (tmp_path / "sub" / "cat.txt").write_text("  a grey cat on a sofa \n")
    (tmp_path / "dog.webp").write_bytes(_encode(_noise(7), "WEBP"))
    (tmp_path / "dog.webp.txt").write_text("a dog")
    (tmp_path / "bird_01.png").write_bytes(_encode(_noise(8), "PNG"))

    source = _source(tmp_path)
    discovered = source.discover()
    loaded = list(source.load(discovered))

    assert discovered == ["bird_01.png", "dog.webp", "sub/cat.jpg"]  # captions are not items
    assert len(loaded) == len(discovered) and all(isinstance(d, Document) for d in loaded)
    cat = next(d for d in loaded if isinstance(d, Document) and d.doc_id == "pics/sub/cat.jpg")
    assert (cat.modality, cat.text, cat.data, cat.size_bytes) == (
        "image", "a grey cat on a sofa", data, len(data))
    assert cat.metadata == {"path": "sub/cat.jpg", "width": 48, "height": 40,
                                 "format": "jpeg", "mode": "RGB", "frames": 1,
                                 "caption_source": "sidecar"}
    texts = {d.doc_id: d.text for d in loaded if isinstance(d, Document)}
    assert texts["pics/dog.webp"] == "a dog"
    assert texts["pics/bird_01.png"] == "bird_01"  # no sidecar: the file stem


def test_exif_orientation_is_applied(tmp_path: Path, clip: LocalBackend) -> None:
    from PIL import Image

    upright = _noise(9, (20, 40))  # portrait
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote: landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 clockwise to display
    (tmp_path / "photo.png").write_bytes(_encode(stored, "PNG", exif=exif.tobytes()))

    doc = _load_all(_source(tmp_path))["photo.png"]

    assert isinstance(doc, Document) and doc.data is not None
    assert (doc.metadata["width"], doc.metadata["height"]) == (20, 40)
    assert np.array_equal(np.asarray(decode_image(doc.data)), np.asarray(upright))
    rotated, straight = clip.embed_images([doc.data, _encode(upright, "PNG")])
    assert _cos(rotated, straight) >= 0.9999


def test_gif_is_embedded_by_its_first_frame(tmp_path: Path, clip: LocalBackend) -> None:
    from PIL import Image

    red, blue = Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))
    gif = _encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    (tmp_path / "anim.gif").write_bytes(gif)

    doc = _load_all(_source(tmp_path))["anim.gif"]

    assert isinstance(doc, Document) and doc.metadata["frames"] == 2
    assert decode_image(gif).getpixel((5, 5)) == (255, 0, 0)
    from_gif, from_png, blue_png = clip.embed_images(
        [gif, _encode(red, "PNG"), _encode(blue, "PNG")])
    assert _cos(from_gif, from_png) >= 0.9999
    assert _cos(from_gif, blue_png) < _cos(from_gif, from_png)


# --- CLIP: one space for text and images ---------------------------------------------------

def test_an_image_and_its_exact_copy_are_each_others_top_hit(clip: LocalBackend) -> None:
    images = [_encode(_noise(seed), "PNG") for seed in range(6)]
    vectors = clip.embed_images(images + list(images))  # originals, then exact copies
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)  # a point is not its own hit

    top = sims.argmax(axis=1)

    n = len(images)
    assert list(top) == [i + n for i in range(n)] + list(range(n))


def test_text_and_images_share_one_space(clip: LocalBackend) -> None:
    text = clip.embed_queries(["a photo of a cat", "x" * 500])  # long text truncates at 77
    image = clip.embed_images([_encode(_noise(10), "WEBP")])

    assert text.shape == (2, DIMENSION) and image.shape == (1, DIMENSION)
    assert text.dtype == image.dtype == np.float32
    assert np.allclose(np.linalg.norm(np.vstack([text, image]), axis=1), 1.0, atol=1e-5)


def test_search_by_image_and_text_with_modality_filters(tmp_path: Path, clip: LocalBackend) -> None:
    from tessera.core.types import CollectionInfo, Match, PointRecord, point_id
    from tessera.store import ensure_collection
    from tessera.store.edge import EdgeStore

    images = [_encode(_noise(seed), "PNG") for seed in range(4)]
    captions = ["red car", "green tree", "blue sea", "grey cat"]
    vectors = np.vstack([clip.embed_images(images), clip.embed_texts(captions)])
    docs = [(f"pics/{i}.png", "image") for i in range(4)] + [(f"notes/{i}", "text") for i in range(4)]
    store = EdgeStore(tmp_path / "qdrant")
    try:
        info = ensure_collection(store, CollectionInfo.for_model("mixed", clip.spec))
        assert info.vector_name == "tiny-clip"
        store.upsert("mixed", [
            PointRecord(point_id("mixed", doc_id, 0), vector,
                        {"doc_id": doc_id, "modality": modality, "expires_at": 2**40})
            for (doc_id, modality), vector in zip(docs, vectors, strict=True)])

        by_image = store.search("mixed", clip.embed_images([images[2]])[0], 8, Match(modality="image"))
        by_text = store.search("mixed", clip.embed_queries(["grey cat"])[0], 8, Match(modality="image"))
        image_to_text = store.search("mixed", vectors[0], 8, Match(modality="text"))
    finally:
        store.close()

    assert by_image[0].payload["doc_id"] == "pics/2.png"  # image -> image: its exact copy
    assert by_image[0].score == pytest.approx(1.0, abs=1e-4)
    for hits, modality in ((by_image, "image"), (by_text, "image"), (image_to_text, "text")):
        assert len(hits) == 4 and {h.payload["modality"] for h in hits} == {modality}


def test_a_collection_never_mixes_text_only_and_clip_models(tmp_path: Path, clip: LocalBackend) -> None:
    from tessera.core.types import CollectionInfo
    from tessera.store import ensure_collection
    from tessera.store.edge import EdgeStore

    minilm = BUILTIN["all-minilm-l6-v2"]
    store = EdgeStore(tmp_path / "qdrant")
    try:
        ensure_collection(store, CollectionInfo.for_model("docs", minilm))
        with pytest.raises(ModelMismatchError, match="One collection holds one model") as err:
            ensure_collection(store, CollectionInfo.for_model("docs", clip.spec))
    finally:
        store.close()
    assert "text" in str(err.value) and "image" in str(err.value)

    images = SourceConfig(name="pics", kind="images", path=tmp_path, modality="image")
    with pytest.raises(ConfigError, match="embeds text only.*CLIP-style model"):
        require_image_model(minilm, images)
    require_image_model(clip.spec, images)
    with pytest.raises(EmbeddingError, match="embeds text only"):
        LocalBackend(minilm, resolve_model_path(minilm)).embed_images([b"x"])


# --- the registry -----------------------------------------------------------------------------

def test_registry_clip_loads_from_config_path_or_model_cache(tmp_path: Path, clip_dir: Path) -> None:
    import shutil

    builtin = BUILTIN["clip-vit-base-patch32"]
    assert (builtin.kind, builtin.dimension, builtin.modalities) == ("clip", 512, ("text", "image"))
    assert len(builtin.revision) == 40 and builtin.vector_name == "clip-vit-base-patch32"

    config = tmp_path / "tessera.toml"
    config.write_text(
        f'home = "{tmp_path / "home"}"\nmodel = "tiny-clip"\n[models.tiny-clip]\n'
        f'id = "tests/tiny-clip"\nkind = "clip"\npath = "{clip_dir}"\ndimension = {DIMENSION}\n'
        'modalities = ["text", "image"]\nmax_length = 77\n')
    settings = load_settings(config)
    spec = get_spec(settings)
    assert spec.path == clip_dir and spec.modalities == ("text", "image")

    # Without a path, the files are found in the model cache under the vector name.
    cached = settings.model_cache_dir / spec.vector_name
    shutil.copytree(clip_dir, cached)
    from dataclasses import replace

    unpinned = replace(spec, path=None)
    assert resolve_model_path(unpinned, settings.model_cache_dir) == cached
    vectors = LocalBackend(unpinned, cached, device="cpu").embed_images([_encode(_noise(11), "PNG")])
    assert vectors.shape == (1, DIMENSION)
