"""What the engine is sent: filters, queries and update operations, built from our types.

Pure functions; qdrant_edge is imported on first use, not with the store.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tessera.core.errors import VectorStoreError
from tessera.core.query import StoreQuery
from tessera.core.sparse import SPARSE_VECTOR, SparseVec
from tessera.core.types import CollectionInfo, Hit, Match, PointRecord


def qe() -> Any:
    """The qdrant_edge module."""
    import qdrant_edge

    return qdrant_edge


def distance(name: str) -> Any:
    """The engine's distance for a collection's recorded one."""
    edge = qe()
    return {"cosine": edge.Distance.Cosine, "dot": edge.Distance.Dot,
            "euclid": edge.Distance.Euclid}[name]


def match_filter(match: Match | None) -> Any:
    """The engine's filter for `match`; None when it asks for nothing."""
    if match is None:
        return None
    edge = qe()
    must = []
    if match.source is not None:
        must.append(edge.FieldCondition(key="source", match=edge.MatchValue(match.source)))
    if match.modality is not None:
        must.append(edge.FieldCondition(key="modality", match=edge.MatchValue(match.modality)))
    if match.doc_ids is not None:
        must.append(edge.FieldCondition(key="doc_id", match=edge.MatchAny(list(match.doc_ids))))
    if match.point_ids is not None:
        must.append(edge.HasIdCondition(set(match.point_ids)))
    for key, value in match.equals:
        must.append(edge.FieldCondition(key=key, match=edge.MatchValue(value)))
    for key, gte, lte in match.ranges:
        must.append(edge.FieldCondition(key=key, range=edge.RangeFloat(gte=gte, lte=lte)))
    return edge.Filter(must=must) if must else None


def sparse_vector(vec: SparseVec) -> Any:
    """The engine's sparse vector."""
    return qe().SparseVector(list(vec.indices), list(vec.values))


def expired_filter(now: int) -> Any:
    """Points whose expires_at is at or before `now`."""
    edge = qe()
    return edge.Filter(must=[edge.FieldCondition(key="expires_at",
                                                 range=edge.RangeFloat(lte=float(now)))])


def nearest_request(info: CollectionInfo, vector: np.ndarray, limit: int,
                    match: Match | None) -> Any:
    """A nearest-neighbour query in the collection's named vector, with whole payloads."""
    edge = qe()
    return edge.QueryRequest(
        limit=limit, filter=match_filter(match), with_vector=False, with_payload=True,
        params=edge.SearchParams(exact=False),
        query=edge.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(),
                                 using=info.vector_name))


def store_request(info: CollectionInfo, q: StoreQuery) -> Any:
    """One QueryRequest: a nearest query on one side, or prefetches of both fused."""
    edge = qe()
    flt = match_filter(q.match)
    payload = list(q.fields) if q.fields else q.fields is None  # (): no payload
    if q.sparse is not None and info.sparse is None:
        raise VectorStoreError(f"collection {info.name!r} has no sparse vectors; run "
                               f"`tessera backfill-sparse --collection {info.name}`")
    dense = (edge.Query.Nearest(np.asarray(q.dense, dtype=np.float32).tolist(),
                                using=info.vector_name) if q.dense is not None else None)
    sparse = (edge.Query.Nearest(sparse_vector(q.sparse), using=SPARSE_VECTOR)
              if q.sparse is not None else None)
    exact = edge.SearchParams(exact=q.exact, hnsw_ef=q.hnsw_ef)
    if dense is not None and sparse is not None:
        fusion = edge.Fusion.Rrf(k=q.rrf_k) if q.fusion == "rrf" else edge.Fusion.Dbsf()
        return edge.QueryRequest(
            limit=q.limit, filter=flt, with_vector=False, with_payload=payload, query=fusion,
            prefetches=[edge.Prefetch(limit=q.dense_depth, query=dense, filter=flt, params=exact),
                        edge.Prefetch(limit=q.sparse_depth, query=sparse, filter=flt)])
    return edge.QueryRequest(limit=q.limit, filter=flt, with_vector=False, with_payload=payload,
                             query=dense or sparse, params=exact if dense is not None else None)


def to_hits(points: Any) -> list[Hit]:
    """The engine's scored points as our hits."""
    return [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in points]


def upsert_operation(info: CollectionInfo, points: list[PointRecord]) -> Any:
    """One upsert of the whole batch: each point's dense vector, and its sparse one if any."""
    edge = qe()
    with_sparse = info.sparse is not None

    def vectors(p: PointRecord) -> dict[str, Any]:
        out: dict[str, Any] = {info.vector_name: np.asarray(p.vector, dtype=np.float32).tolist()}
        if with_sparse and p.sparse:
            out[SPARSE_VECTOR] = sparse_vector(p.sparse)
        return out

    return edge.UpdateOperation.upsert_points([edge.Point(p.id, vectors(p), p.payload)
                                               for p in points])


def upsert_bytes(points: list[PointRecord]) -> int:
    """About what an upsert of `points` writes (vectors, payload, sparse postings)."""
    return sum(np.asarray(p.vector).size * 4 + len(str(p.payload))
               + (12 * len(p.sparse.indices) if p.sparse else 0) for p in points)


def sparse_update(vectors: dict[str, SparseVec]) -> Any:
    """update_vectors: only the sparse vector of each point changes."""
    edge = qe()
    return edge.UpdateOperation.update_vectors(
        [edge.PointVectors(pid, {SPARSE_VECTOR: sparse_vector(v)}) for pid, v in vectors.items()])


def sparse_update_bytes(vectors: dict[str, SparseVec]) -> int:
    """About what a sparse_update of `vectors` writes."""
    return sum(12 * len(v.indices) + 64 for v in vectors.values())
