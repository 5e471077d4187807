"""`EdgeStore`: the VectorStore protocol over the parts of this package, one job each."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tessera.core.query import StoreQuery
from tessera.core.sparse import SPARSE_VECTOR, SparseVec
from tessera.core.types import CollectionInfo, Hit, Match, PointRecord
from tessera.store.base import HnswParams, group_documents
from tessera.store.edge import hnsw as graphs
from tessera.store.edge import lifecycle, tuning
from tessera.store.edge.records import Records
from tessera.store.edge.registry import Registry
from tessera.store.edge.requests import (
    expired_filter,
    match_filter,
    nearest_request,
    qe,
    sparse_update,
    sparse_update_bytes,
    store_request,
    to_hits,
    upsert_bytes,
    upsert_operation,
)
from tessera.store.edge.sealing import Sealing
from tessera.store.edge.shards import Shards
from tessera.store.edge.space import require_space, write_need


class EdgeStore:
    """VectorStore over qdrant-edge-py: no server, data on disk, WAL-backed."""

    def __init__(self, root: Path, lock_timeout: float = 600.0, hnsw: HnswParams | None = None,
                 search_threads: int | None = None) -> None:
        self.root = Path(root)
        self.hnsw = hnsw or HnswParams()  # for collections this store creates
        self._registry = Registry(self.root)
        self._records = Records(self._registry)
        self._shards = Shards(self.root, lock_timeout, search_threads, self._records)
        self._sealing = Sealing(self._shards)

    @property
    def lock_timeout(self) -> float:
        """How long a writer waits for another process's lock on a collection (s)."""
        return self._shards.lock_timeout

    @property
    def search_threads(self) -> int | None:
        """The engine's search pool size for sealed shards it opens; None: the engine's default."""
        return self._shards.search_threads

    @property
    def read_only(self) -> bool:
        """Whether the root was read-only at open (readers then search private copies)."""
        return self._shards.read_only

    def real_name(self, name: str) -> str:
        """The collection behind `name` when it is an alias, else `name` (every call resolves,
        like a Qdrant server does, so a switch is seen by the next call)."""
        return self._registry.real_name(name)

    def _shard(self, name: str) -> Any:
        return self._shards.get(name)

    def get_collection(self, name: str) -> CollectionInfo | None:
        """The model recorded beside the shard, or None."""
        return self._records.get(name)

    def create_collection(self, info: CollectionInfo) -> None:
        """Create the shard, its payload indexes, then record the model (last: marks it done)."""
        lifecycle.create(self._shards, info, self.hnsw)

    def list_collections(self) -> list[str]:
        """Folders under the root that hold a finished collection under a valid name."""
        return self._records.names()

    def unlisted(self) -> list[str]:
        """Collections under the root that no valid name reaches, as paths relative to it."""
        return self._records.unlisted()

    def scan(self, name: str, match: Match, fields: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Page through matching points with only `fields` of their payload."""
        edge = qe()
        offset = None
        while True:
            shard = self._shard(name)  # per page: a write between pages may have reopened it
            request = edge.ScrollRequest(offset=offset, limit=tuning.SCROLL_PAGE,
                                         filter=match_filter(match), with_payload=fields,
                                         with_vector=False)
            records, offset = self._shards.call(name, "scroll points", shard.scroll, request)
            for rec in records:
                yield str(rec.id), dict(rec.payload or {})
            if offset is None:
                return

    def _update(self, name: str, what: str, operation: Callable[[], Any], incoming: int = 0) -> None:
        """One write, after checking the disk can take it (the WAL grows by a segment at a time).

        `operation` builds the engine's update: building it can fail too (a malformed id)."""
        name = self.real_name(name)
        shard = self._shard(name)
        require_space(self.root, self._registry.folder(name) / "shard", write_need(incoming),
                      what)
        self._shards.dirty.add(name)
        self._shards.call(name, what, lambda: shard.update(operation()))
        self._sealing.wrote(name, shard, incoming)

    def upsert(self, name: str, points: list[PointRecord]) -> None:
        """One update operation for the whole batch."""
        if not points:
            return
        info = self._records.info(name)
        self._update(name, f"write {len(points)} points", lambda: upsert_operation(info, points),
                     upsert_bytes(points))

    def set_payload(self, name: str, ids: list[str], payload: dict[str, Any]) -> None:
        """Set keys on existing points, leaving the rest of the payload."""
        if ids:
            self._update(name, f"update the payload of {len(ids)} points",
                         lambda: qe().UpdateOperation.set_payload(ids, payload),
                         tuning.MOVED_POINT_BYTES * len(ids))

    def set_payload_where(self, name: str, match: Match, payload: dict[str, Any]) -> None:
        """Set keys on every point matching `match`, a page of ids at a time: each update moves
        its points out of sealed segments, and sealing between pages keeps that bounded."""
        page: list[str] = []
        for pid, _ in self.scan(name, match, []):
            page.append(pid)
            if len(page) >= tuning.SCROLL_PAGE * 8:
                self.set_payload(name, page, payload)
                page = []
        self.set_payload(name, page, payload)

    def delete(self, name: str, ids: list[str]) -> None:
        """Delete by id."""
        if ids:
            self._update(name, f"delete {len(ids)} points",
                         lambda: qe().UpdateOperation.delete_points(ids), 64 * len(ids))

    def count(self, name: str, match: Match | None = None) -> int:
        """Exact count."""
        request = qe().CountRequest(exact=True, filter=match_filter(match))
        return int(self._shards.call(name, "count points", self._shard(name).count, request))

    def count_expired(self, name: str, now: int) -> int:
        """Points at or past their expiry."""
        request = qe().CountRequest(exact=True, filter=expired_filter(now))
        return int(self._shards.call(name, "count expired points", self._shard(name).count,
                                     request))

    def delete_expired(self, name: str, now: int) -> None:
        """One delete-by-filter over the expires_at range index."""
        self._update(name, "delete expired points",
                     lambda: qe().UpdateOperation.delete_points_by_filter(expired_filter(now)))

    def search(self, name: str, vector: np.ndarray, limit: int, match: Match | None = None) -> list[Hit]:
        """Nearest neighbours in the collection's named vector."""
        request = nearest_request(self._records.info(name), vector, limit, match)
        return to_hits(self._shards.call(name, "search", self._shard(name).query, request))

    def query(self, name: str, query: StoreQuery) -> list[Hit]:
        """Chunk hits; hybrid is one request (two prefetches fused by the engine)."""
        return self.query_batch(name, [query])[0]

    def query_batch(self, name: str, queries: list[StoreQuery]) -> list[list[Hit]]:
        """One planned batch of queries of any mode."""
        if not queries:
            return []
        info = self._records.info(name)
        requests = [store_request(info, q) for q in queries]
        results = self._shards.call(name, "search", self._shard(name).query_batch,
                                    qe().QueryBatchRequest(requests))
        return [to_hits(points) for points in results]

    def query_documents(self, name: str, query: StoreQuery) -> list[Hit]:
        """Edge has no grouping: over-fetch chunks and keep each document's best."""
        return group_documents(lambda q: self.query(name, q), query)

    def add_sparse_vector(self, name: str, identity: dict[str, Any]) -> None:
        """Create the sparse named vector on an existing shard (the engine can: no rebuild)."""
        edge = qe()
        self._update(name, "add the sparse vector",
                     lambda: edge.UpdateOperation.create_sparse_vector(
                         SPARSE_VECTOR, modifier=edge.Modifier.Idf))

    def set_sparse(self, name: str, vectors: dict[str, SparseVec]) -> None:
        """update_vectors: only the sparse vector of each point changes."""
        if vectors:
            self._update(name, f"set the sparse vectors of {len(vectors)} points",
                         lambda: sparse_update(vectors), sparse_update_bytes(vectors))

    def record_collection(self, info: CollectionInfo) -> None:
        """Rewrite tessera.json atomically."""
        self._shards.lock(info.name)
        self._records.write(info)

    def optimize(self, name: str) -> None:
        """Run the engine's optimizer now: seal, merge, and build each sealed segment's graph."""
        self._shards.call(name, "optimize", self._shard(name).optimize)

    def index_params(self, name: str) -> HnswParams | None:
        """The graph the sealed segments are built with; None for a shard of an earlier release
        (one appendable segment, no graph)."""
        return graphs.index_params(self._records, name)

    def build_index(self, name: str, hnsw: HnswParams) -> dict[str, Any]:
        """Rebuild every sealed segment with the graph `hnsw` (m = 0: drop the graphs), under
        the shard's writer lock; readers see the result when it is done."""
        return graphs.build_index(self._sealing, name, hnsw)

    def generation(self, name: str) -> str:
        """A marker a writer rewrites, under the shard's lock, each time it closes the shard after
        changing it; "" before the first such close."""
        return self._registry.generation(name)

    def aliases(self) -> dict[str, str]:
        """Aliases kept in aliases.json beside the shards."""
        return self._registry.aliases()

    def set_alias(self, alias: str, collection: str) -> None:
        """Rewrite aliases.json atomically (temp file, then rename)."""
        self._registry.set_alias(alias, collection)

    def drop_collection(self, name: str) -> None:
        """Delete a collection no alias points at (moved aside first, so a crash leaves no half)."""
        lifecycle.drop(self._shards, name)

    def adopt(self, plain: str, info: CollectionInfo) -> None:
        """Make the plain collection `plain` the versioned `info.name`, behind alias `plain`."""
        lifecycle.adopt(self._shards, plain, info)

    def close(self) -> None:
        """Seal what was written (the optimizer leaves a small appendable segment as it is),
        flush and close every open shard, then release the locks and private copies."""
        for name in list(self._shards.opened):
            self._sealing.finish(name)
        self._shards.opened.clear()
        self._shards.drop_copies()
