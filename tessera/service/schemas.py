"""The search service's request and response bodies (pydantic), with the examples /docs shows."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tessera.core.types import STORED_NAME_PATTERN
from tessera.store import INTEGER_INDEXES, KEYWORD_INDEXES

# Fields a filter may name: the ones with a payload index (an unindexed filter scans).
EQUALITY_FIELDS = tuple(f for f in KEYWORD_INDEXES if f not in ("source", "modality"))
RANGE_FIELDS = INTEGER_INDEXES


class Range(BaseModel):
    """A numeric range; either bound may be left out."""

    model_config = ConfigDict(extra="forbid")

    gte: float | None = None
    lte: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.gte is None and self.lte is None:
            raise ValueError("give gte, lte or both")
        if self.gte is not None and self.lte is not None and self.gte > self.lte:
            raise ValueError(f"gte ({self.gte}) is greater than lte ({self.lte})")
        return self


class Filters(BaseModel):
    """Payload conditions every hit must meet."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(default=None, description="only this source", max_length=200)
    modality: Literal["text", "image"] | None = Field(
        default=None, description="only text chunks or only images")
    equals: dict[str, str | int | bool] = Field(
        default_factory=dict, description=f"exact match on indexed fields: {', '.join(EQUALITY_FIELDS)}")
    ranges: dict[str, Range] = Field(
        default_factory=dict, description=f"numeric ranges on: {', '.join(RANGE_FIELDS)} (epoch s)")

    @field_validator("equals")
    @classmethod
    def _equals_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = sorted(set(value) - set(EQUALITY_FIELDS))
        if bad:
            raise ValueError(f"cannot filter on {', '.join(bad)}; equality filters take "
                             f"{', '.join(EQUALITY_FIELDS)} (source and modality have their own "
                             "fields)")
        return value

    @field_validator("ranges")
    @classmethod
    def _range_fields(cls, value: dict[str, Range]) -> dict[str, Range]:
        bad = sorted(set(value) - set(RANGE_FIELDS))
        if bad:
            raise ValueError(f"cannot filter on {', '.join(bad)}; range filters take "
                             f"{', '.join(RANGE_FIELDS)}")
        return value


def _valid_base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64; send the image file's bytes, base64-encoded") from None
    return value


class SearchRequest(BaseModel):
    """One search: a text query or a base64 image, and what to return."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "how do vaccines train the immune system?", "k": 5},
        {"query": "retrieval augmented generation", "k": 10, "mode": "hybrid",
         "collection": "tessera", "filters": {"source": "docs", "ranges": {
             "expires_at": {"gte": 1767225600}}}, "with_text": False},
    ]})

    query: str | None = Field(default=None, min_length=1, max_length=10_000,
                              description="the text to search for (or give image)")
    image: str | None = Field(default=None, description="base64 of a png/jpeg/webp/gif")
    k: int = Field(default=5, ge=1, description="number of results (at most api.max_k)")
    mode: Literal["dense", "sparse", "hybrid"] | None = Field(
        default=None, description="dense, sparse (BM25) or hybrid (fused); default: the index's")
    collection: str | None = Field(default=None, max_length=255, pattern=STORED_NAME_PATTERN,
                                   description="a collection or an alias (default: from config)")
    filters: Filters = Field(default_factory=Filters)
    with_text: bool = Field(default=True, description="include each hit's text")
    chunks: bool = Field(default=False, description="chunks, not documents (best chunk each)")

    @field_validator("image")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        return value if value is None else _valid_base64(value)

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.query is None) == (self.image is None):
            raise ValueError("give either query (text) or image (base64), not both")
        return self

    def image_bytes(self) -> bytes | None:
        """The decoded image, when the request has one."""
        return base64.b64decode(self.image) if self.image is not None else None


class Hit(BaseModel):
    """One result, the same fields as `tessera search --json`."""

    model_config = ConfigDict(extra="allow")

    doc_id: str | None
    chunk_index: int | None = None
    source: str | None = None
    title: str | None = None
    text: str | None = None
    modality: str | None = None
    uri: str | None = Field(default=None, description="`source:path`, relative to the source's "
                            "root (absolute only with api.absolute_uris)")
    rank: int = Field(ge=1, description="1 for the best result")
    score: float = Field(description="the engine's ordering score: the similarity in dense "
                         "mode, BM25 in sparse mode, the fused score in hybrid mode (RRF: a sum "
                         "over ranks; DBSF: normalised scores summed), comparable only within "
                         "one answer")
    scores: dict[str, float] = Field(
        default_factory=dict,
        description="what each side the mode ran scored this result: `dense` (the model's "
                    "similarity, cosine for the bundled model) and/or `sparse` (BM25; 0 when "
                    "no query word occurs)")


class SearchResponse(BaseModel):
    """The same answer as `tessera search --json`: results best first, and the mode that ran."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"results": [
        {"doc_id": "docs/guides/vaccines.md", "chunk_index": 0, "source": "docs",
         "title": "Vaccines", "text": "Vaccines train the immune system ...", "modality": "text",
         "uri": "docs:guides/vaccines.md", "rank": 1, "score": 0.032787,
         "scores": {"dense": 0.71, "sparse": 7.42}}],
        "mode": "hybrid", "grouped": True, "collection": "tessera", "warning": None}]})

    results: list[Hit]
    mode: str = Field(description="the mode that ran (dense when the collection has no "
                                  "sparse vectors, or for an image)")
    grouped: bool = Field(description="true: one hit per document (its best chunk)")
    collection: str
    warning: str | None = None


class Collection(BaseModel):
    """What one collection holds and which model wrote it."""

    name: str
    model: str
    model_name: str
    dimension: int
    distance: str
    modalities: list[str]
    sparse: dict[str, Any] | None = None
    points: int
    aliases: list[str]


class CollectionsResponse(BaseModel):
    """Every collection, and alias -> collection."""

    collections: list[Collection]
    aliases: dict[str, str]


class Chunk(BaseModel):
    """One chunk of a document, from its point's payload."""

    model_config = ConfigDict(extra="allow")

    chunk_index: int
    text: str | None = None


class DocumentResponse(BaseModel):
    """A document's chunks, in order."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "doc_id": "docs/guides/vaccines.md", "collection": "tessera", "source": "docs",
        "title": "Vaccines", "uri": "docs:guides/vaccines.md", "modality": "text",
        "chunk_count": 2, "chunks": [{"chunk_index": 0, "text": "Vaccines train ..."},
                                     {"chunk_index": 1, "text": "... memory cells."}]}]})

    doc_id: str
    collection: str
    source: str | None
    title: str | None
    uri: str | None
    modality: str | None
    chunk_count: int
    chunks: list[Chunk]


class Problem(BaseModel):
    """An error: what went wrong and what to do."""

    detail: str


class CaptionImage(BaseModel):
    """One image to caption."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200,
                             description="reported back with its caption (default: imageN)")
    data: str = Field(description="base64 of a png/jpeg/webp/gif")

    @field_validator("data")
    @classmethod
    def _base64(cls, value: str) -> str:
        return _valid_base64(value)


class CaptionRequest(BaseModel):
    """Images to caption with a captioner model (BLIP), through the caption cache."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"images": [{"name": "cat.png", "data": "iVBORw0KGgo..."}]},
    ]})

    images: list[CaptionImage] = Field(min_length=1, max_length=32)
    captioner: str | None = Field(default=None, max_length=200,
                                  description="a [models.NAME] of kind captioner "
                                              "(default: blip-image-captioning-base)")
