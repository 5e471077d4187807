"""The BM25 sparse vectors beside the dense ones: their config, its identity, and the encoder.

Every text point carries a sparse vector made by Qdrant Edge's own `Bm25` from the text the dense
model embeds (the chunk). The engine applies IDF over the live corpus (`Modifier.Idf`), so there is
no vocabulary to fit and nothing goes stale after deletes. The config (k, b, avg_len, language,
tokenizer, stemmer, stopwords...) is part of a collection's identity, like its model: a collection
records it, and a write with another config is refused (changing it is a migration).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SPARSE_VECTOR = "bm25"  # the sparse named vector on every collection that has one
_DEFAULT = "language"  # stemmer / stopwords: what the language implies


@lru_cache(maxsize=1)
def supported_languages() -> tuple[str, ...]:
    """Languages Bm25 accepts (those with stopwords, a stemmer, or both), lower-case."""
    qe = _qe()
    names = {m.lower() for m in dir(qe.Language) if not m.startswith("_")}
    names |= {m.lower() for m in dir(qe.SnowballLanguage) if not m.startswith("_")}
    return tuple(sorted(n for n in names if _accepted(n)))


def _accepted(language: str) -> bool:
    try:
        _qe().Bm25(_qe().Bm25Config(language=language))
    except (ValueError, TypeError):
        return False
    return True


def _qe() -> Any:
    import qdrant_edge

    return qdrant_edge


class SparseConfig(BaseModel):
    """`[sparse]`: how BM25 sparse vectors are made. Part of a collection's identity."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: bool = True
    """Give every text chunk (and every captioned image) a BM25 sparse vector beside its dense one
    (`qdrant_edge.Bm25`, IDF applied by the engine over the live corpus)."""
    k: float = 1.2
    """BM25 term-frequency saturation (>= 0; 1.2 is standard, 0 ignores term frequency)."""
    b: float = 0.75
    """BM25 length normalization (0..1; 0.75 is standard)."""
    avg_len: float = 256.0
    """Expected chunk length in tokens (> 0)."""
    language: str = "english"
    """Stopwords and stemmer: any language `qdrant_edge.Bm25` knows (arabic ... turkish)."""
    tokenizer: Literal["word", "whitespace", "prefix", "multilingual", "code"] = "word"
    """`word`, `whitespace`, `prefix`, `multilingual` or `code`."""
    lowercase: bool = True
    """Lowercase tokens."""
    ascii_folding: bool = False
    """Fold accented letters to ASCII."""
    stemmer: str = _DEFAULT
    """`language`: the language's own; `none`: no stemming; or another Snowball language."""
    stopwords: str = _DEFAULT
    """`language`: the language's own; `none`: no stopwords; or another language's list."""
    min_token_len: int | None = Field(default=None, ge=1)
    """Shorter tokens are dropped (unset: none)."""
    max_token_len: int | None = Field(default=None, ge=1)
    """Longer tokens are dropped (unset: none)."""

    @field_validator("k")
    @classmethod
    def _k(cls, value: float) -> float:
        if value < 0:
            raise ValueError("k must be >= 0 (term-frequency saturation; 1.2 is standard BM25, "
                             "0 ignores term frequency)")
        return value

    @field_validator("b")
    @classmethod
    def _b(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("b must be between 0 and 1 (length normalization; 0.75 is standard)")
        return value

    @field_validator("avg_len")
    @classmethod
    def _avg_len(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("avg_len must be > 0 (the expected document length in tokens; 256)")
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in supported_languages():
            raise ValueError(f"unknown BM25 language; use one of {', '.join(supported_languages())}")
        return value

    @field_validator("stemmer")
    @classmethod
    def _stemmer(cls, value: str) -> str:
        value = value.strip().lower()
        snowball = {m.lower() for m in dir(_qe().SnowballLanguage) if not m.startswith("_")}
        if value not in {_DEFAULT, "none"} | snowball:
            raise ValueError(f'stemmer must be "language", "none" or a Snowball language '
                             f"({', '.join(sorted(snowball))})")
        return value

    @field_validator("stopwords")
    @classmethod
    def _stopwords(cls, value: str) -> str:
        value = value.strip().lower()
        languages = {m.lower() for m in dir(_qe().Language) if not m.startswith("_")}
        if value not in {_DEFAULT, "none"} | languages:
            raise ValueError(f'stopwords must be "language", "none" or a stopword language '
                             f"({', '.join(sorted(languages))})")
        return value

    @model_validator(mode="after")
    def _builds(self) -> SparseConfig:
        if self.enabled:
            try:
                _bm25(self)
            except ValueError as exc:
                raise ValueError(f"Qdrant Edge's Bm25 refuses this config: {exc}") from None
        return self


def sparse_identity(config: SparseConfig) -> dict[str, Any] | None:
    """The sparse config as a plain dict a collection records (None when sparse is disabled).

    Stable across releases: hash it (or compare it) to tell whether two collections index text
    the same way."""
    if not config.enabled:
        return None
    data = config.model_dump(exclude={"enabled"})
    return {"vector": SPARSE_VECTOR, "modifier": "idf", **data}


def config_from_identity(identity: dict[str, Any]) -> SparseConfig:
    """Inverse of sparse_identity (what a collection recorded, as a config)."""
    return SparseConfig(**{k: v for k, v in identity.items() if k not in {"vector", "modifier"}})


def sparse_signature(identity: dict[str, Any] | None) -> str:
    """Short stable hash of a sparse identity, recorded on each point ("none" without one)."""
    if identity is None:
        return "none"
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return "bm25-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SparseVec:
    """A sparse vector: token ids and their weights."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __bool__(self) -> bool:
        return bool(self.indices)


def _bm25(config: SparseConfig) -> Any:
    qe = _qe()
    kwargs: dict[str, Any] = {
        "k": config.k, "b": config.b, "avg_len": config.avg_len, "language": config.language,
        "tokenizer": getattr(qe.TokenizerType, config.tokenizer.capitalize()),
        "lowercase": config.lowercase, "ascii_folding": config.ascii_folding,
        "min_token_len": config.min_token_len, "max_token_len": config.max_token_len}
    if config.stemmer == "none":
        kwargs["stemmer"] = qe.DisabledStemmer()
    elif config.stemmer != _DEFAULT:
        kwargs["stemmer"] = qe.SnowballParams(getattr(qe.SnowballLanguage,
                                                      config.stemmer.capitalize()))
    if config.stopwords == "none":
        kwargs["stopwords"] = qe.StopwordsSet(languages=set(), custom=set())
    elif config.stopwords != _DEFAULT:
        kwargs["stopwords"] = getattr(qe.Language, config.stopwords.capitalize())
    return qe.Bm25(qe.Bm25Config(**kwargs))


class Bm25Encoder:
    """Documents and queries to BM25 sparse vectors (TF weights; the engine applies IDF)."""

    def __init__(self, config: SparseConfig) -> None:
        self.config = config
        self._model = _bm25(config)

    def document(self, text: str) -> SparseVec:
        """A document's (chunk's) term-frequency weights."""
        vec = self._model.embed_document(text or "")
        return SparseVec(tuple(vec.indices), tuple(vec.values))

    def documents(self, texts: list[str]) -> list[SparseVec]:
        """Each text's vector, in order."""
        return [self.document(t) for t in texts]

    def query(self, text: str) -> SparseVec:
        """A query's tokens, each weighted 1."""
        vec = self._model.embed_query(text or "")
        return SparseVec(tuple(vec.indices), tuple(vec.values))
