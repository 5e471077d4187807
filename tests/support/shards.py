"""Points for tests of the embedded store's files: the payload, vectors and sparse vectors an
ingest writes (dense 384-d, BM25, the indexed payload fields), deterministic per id and version."""

from __future__ import annotations

from functools import cache

import numpy as np

from models.registry import BUILTIN
from tessera.core.sparse import Bm25Encoder, SparseConfig, sparse_identity, sparse_signature
from tessera.core.types import CollectionInfo, PointRecord, point_id

WORDS = ["alpha", "beta", "gamma", "delta", "vitamin", "bone", "protein", "cell", "gene", "tumor", "receptor", "insulin"]


@cache
def _encoder() -> Bm25Encoder:
    return Bm25Encoder(SparseConfig())


def collection(name: str = "c") -> CollectionInfo:
    """A collection as an ingest creates it: the default model's vectors and BM25."""
    return CollectionInfo.for_model(name, BUILTIN["all-minilm-l6-v2"],
                                    sparse_identity(SparseConfig()))


def pid(i: int, name: str = "c") -> str:
    return point_id(name, f"d{i}", 0)


def vector(i: int, version: int = 0) -> np.ndarray:
    v = np.random.default_rng(i * 1000 + version).normal(size=384).astype(np.float32)
    return v / np.linalg.norm(v)


def points(ids: range | list[int], version: int = 0, name: str = "c") -> list[PointRecord]:
    """Point `i` at `version`: its vector, a ~1 KiB text, and `v` = version in the payload."""
    rng = np.random.default_rng(version)
    texts = [" ".join(rng.choice(WORDS, 30)) + f" d{i} v{version}" for i in ids]
    sparse = _encoder().documents(texts)
    signature = sparse_signature(sparse_identity(SparseConfig()))
    return [PointRecord(pid(i, name), vector(i, version), {
        "doc_id": f"d{i}", "source": "s", "modality": "text", "chunk_index": 0,
        "chunk_count": 1, "title": f"d{i}", "text": text * 5, "expires_at": 2**31 - 1,
        "v": version, "sparse": signature}, sparse=sp)
        for i, text, sp in zip(ids, texts, sparse, strict=True)]
