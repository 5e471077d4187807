"""The engine configs a shard is created and opened with, and its payload indexes (pure)."""

from __future__ import annotations

from typing import Any

from tessera.core.sparse import SPARSE_VECTOR
from tessera.core.types import CollectionInfo
from tessera.store.base import INTEGER_INDEXES, KEYWORD_INDEXES, HnswParams
from tessera.store.edge import tuning
from tessera.store.edge.requests import distance, qe


def _graph(hnsw: HnswParams) -> Any:
    edge = qe()
    return edge.HnswIndexConfig(m=hnsw.m, ef_construct=hnsw.ef_construct,
                                full_scan_threshold=tuning.FULL_SCAN_KB, memory=edge.Memory.Cold)


def create_config(info: CollectionInfo, hnsw: HnswParams) -> Any:
    """A new shard's config: everything Cold, the sealing optimizer, the HNSW graph `hnsw`."""
    edge = qe()
    cold = edge.Memory.Cold
    sparse = ({SPARSE_VECTOR: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf,
                                                          memory=cold)}
              if info.sparse is not None else None)
    # Vectors Cold (memory-mapped, not read in on open): the engine's default reads every
    # vector into the page cache each time a shard opens, 1.5 GiB of resident memory at a
    # million points for an ingest that mostly writes. A search faults in what it reads.
    # The graph is the shard-wide HNSW config (none per vector), so that a reader can
    # open it with its own search pool size without restating it.
    return edge.EdgeConfig(
        vectors={info.vector_name: edge.EdgeVectorParams(
            size=info.dimension, distance=distance(info.distance), memory=cold)},
        hnsw_config=_graph(hnsw),
        sparse_vectors=sparse, payload_memory=cold, id_tracker_memory=cold,
        optimizers=edge.EdgeOptimizersConfig(indexing_threshold=tuning.INDEXING_THRESHOLD_KB,
                                             deleted_threshold=tuning.DELETED_THRESHOLD,
                                             max_segment_size=tuning.MAX_SEGMENT_KB))


def open_config(info: CollectionInfo, hnsw: HnswParams | None,
                search_threads: int | None) -> Any:
    """A sealed shard's vectors as created, with another search pool size or HNSW graph (the
    engine then records the change in the shard)."""
    edge = qe()
    return edge.EdgeConfig(vectors={info.vector_name: edge.EdgeVectorParams(
        size=info.dimension, distance=distance(info.distance), memory=edge.Memory.Cold)},
        hnsw_config=_graph(hnsw) if hnsw is not None else None,
        max_search_threads=search_threads)


def field_indexes() -> list[Any]:
    """The updates that create a new shard's payload indexes (DESIGN.md)."""
    edge = qe()
    cold = edge.Memory.Cold
    return ([edge.UpdateOperation.create_field_index(
                field, edge.KeywordIndexParams(memory=cold, enable_hnsw=False))
             for field in KEYWORD_INDEXES]
            + [edge.UpdateOperation.create_field_index(
                field, edge.IntegerIndexParams(lookup=True, range=True, memory=cold,
                                               enable_hnsw=False))
               for field in INTEGER_INDEXES])
