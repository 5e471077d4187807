"""Qdrant Edge: the Qdrant engine in-process, one shard per collection under TESSERA_HOME/qdrant.

One process writes a shard at a time (a file lock per collection, holding the writer's pid).
The engine preallocates sparse files (32 MiB WAL segments, memory-mapped vector and payload
pages) and dies with SIGBUS when a write finds the disk full, so every open and write first
checks that the disk can hold what those files may still claim. On a home this process cannot
write (a read-only mount), readers open a private copy of the shard instead.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tessera.core.errors import DiskSpaceError, StoreLockedError, VectorStoreError
from tessera.core.fs import (
    MIB,
    HeldLock,
    allocated_bytes,
    atomic_write,
    free_bytes,
    sparse_bytes,
    writable,
)
from tessera.core.query import StoreQuery
from tessera.core.sparse import SPARSE_VECTOR, SparseVec
from tessera.core.types import STORED_NAME_PATTERN, CollectionInfo, Hit, Match, PointRecord
from tessera.store.base import (
    INTEGER_INDEXES,
    KEYWORD_INDEXES,
    HnswParams,
    group_documents,
)

logger = logging.getLogger(__name__)

_META = "tessera.json"
_ALIASES = "aliases.json"
# Rewritten by a writer each time it closes a shard it changed: readers on a snapshot
# (tessera/service/snapshot.py) compare it to know when to take a fresh one.
_GENERATION = "generation"
# Written beside a shard created with the sealing layout (below). A shard without it (created by
# an earlier release) is never optimized by a writer: its default optimizer would build an HNSW
# graph over its whole appendable segment in memory.
_SEALED = "sealed-layout"
# The HNSW parameters a shard's sealed segments are built with ({"m", "ef_construct"}), written at
# create and by build_index. A sealed shard without it was made with m = 0 (no graph).
_INDEX = "index.json"
LAYOUT_FILES = (_SEALED, _INDEX)  # what a copy of a shard takes along with tessera.json
_SCROLL_PAGE = 2048
WAL_SEGMENT = 32 * MIB
# What a new shard's preallocated files may claim once written: two WAL segments, the first
# vector chunk and payload page (32 MiB each), and the id and deletion trackers.
NEW_SHARD_BYTES = 4 * 32 * MIB + 4 * MIB
# A writer flushes a shard after about this much written (estimated from the updates), not only
# at close: the WAL is then truncated as it goes, instead of holding a whole first ingest (34
# closed 32 MiB segments at 400,000 points, all mmap'd), and the appendable segment's memory
# grows ~27% slower (benchmarks/SCALE.md).
FLUSH_BYTES = 32 * MIB
# Sealing. The engine holds the segment it appends to in memory (~1.1 KB a point of payload
# indexes, id tracking and sparse postings, on top of its vectors' pages): a million-point shard
# left as one appendable segment took 1.7 GB of anonymous memory on every open. After about
# SEAL_BYTES written, a writer runs the engine's optimizer, which turns the appendable segment
# into a sealed one whose vectors, payload, indexes and id tracker are memory-mapped (Cold: read
# on demand), then reopens the shard so that the pages it wrote are no longer mapped.
SEAL_BYTES = 64 * MIB
# What the optimizer seals: an appendable segment over this much vector data (KB) (~13,000
# 384-d vectors); sealed segments merge up to MAX_SEGMENT_KB. Each sealed segment gets the
# collection's HNSW graph (store.hnsw_m; 0: none, searches scan its vectors).
INDEXING_THRESHOLD_KB = 20_000
MAX_SEGMENT_KB = 64 * 1024
# Below this much vector data (KB) a segment is searched by scanning even when it has a graph.
FULL_SCAN_KB = 10_000
# A sealed segment is rewritten without its deleted points once this share of them is deleted.
# The engine's default, 0.2, rewrote every segment at almost every seal of a whole-source expiry
# refresh (ids are hashes, so each page of moved points touches every segment).
DELETED_THRESHOLD = 0.5
# A payload update moves a point out of a sealed segment (its vector and payload are written to
# the appendable segment): what sealing counts for it.
MOVED_POINT_BYTES = 2048
T = TypeVar("T")


def _qe() -> Any:
    import qdrant_edge

    return qdrant_edge


def _distance(name: str) -> Any:
    qe = _qe()
    return {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot,
            "euclid": qe.Distance.Euclid}[name]


def _filter(match: Match | None) -> Any:
    if match is None:
        return None
    qe = _qe()
    must = []
    if match.source is not None:
        must.append(qe.FieldCondition(key="source", match=qe.MatchValue(match.source)))
    if match.modality is not None:
        must.append(qe.FieldCondition(key="modality", match=qe.MatchValue(match.modality)))
    if match.doc_ids is not None:
        must.append(qe.FieldCondition(key="doc_id", match=qe.MatchAny(list(match.doc_ids))))
    for key, value in match.equals:
        must.append(qe.FieldCondition(key=key, match=qe.MatchValue(value)))
    for key, gte, lte in match.ranges:
        must.append(qe.FieldCondition(key=key, range=qe.RangeFloat(gte=gte, lte=lte)))
    return qe.Filter(must=must) if must else None


def _sparse(vec: SparseVec) -> Any:
    return _qe().SparseVector(list(vec.indices), list(vec.values))


def _expired_filter(now: int) -> Any:
    qe = _qe()
    return qe.Filter(must=[qe.FieldCondition(key="expires_at", range=qe.RangeFloat(lte=float(now)))])


def _read_json(path: Path, what: str) -> Any:
    """A metadata file of ours, or a VectorStoreError that says how to recover."""
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise VectorStoreError(
            f"{path} ({what}) cannot be read: {exc}. Restore it from a backup, or delete "
            f"{path.parent} and ingest again") from None


def _metas_below(folder: Path, depth: int) -> Iterator[Path]:
    """Collection records in sub-folders of `folder`, `depth` levels down at most (a found
    collection's own folder is not searched further: its shard is large)."""
    if depth <= 0:
        return
    try:
        children = [p for p in folder.iterdir() if p.is_dir()]
    except OSError:
        return
    for child in children:
        if (child / _META).exists():
            yield child / _META
        else:
            yield from _metas_below(child, depth - 1)


class EdgeStore:
    """VectorStore over qdrant-edge-py: no server, data on disk, WAL-backed."""

    def __init__(self, root: Path, lock_timeout: float = 600.0, hnsw: HnswParams | None = None,
                 search_threads: int | None = None) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self.hnsw = hnsw or HnswParams()  # for collections this store creates
        # The engine's search pool size when opening a sealed shard; None: the engine's default.
        # The open writes it into the shard's config, so only readers of a private copy set it.
        self.search_threads = search_threads
        self._shards: dict[str, Any] = {}
        self._locks: dict[str, HeldLock] = {}
        self._copies: dict[str, Path] = {}
        self._dirty: set[str] = set()
        self._unflushed: dict[str, int] = {}  # bytes written to each shard since its last flush
        self._unsealed: dict[str, int] = {}  # ... and since it was last sealed
        self._alias_cache: tuple[tuple[int, int, int], dict[str, str]] | None = None
        self._records: dict[str, tuple[tuple[int, int, int], CollectionInfo]] = {}
        self.read_only = self.root.exists() and not writable(self.root)

    def _dir(self, name: str) -> Path:
        return self.root / self.real_name(name)

    def real_name(self, name: str) -> str:
        """The collection behind `name` when it is an alias, else `name` (every call resolves,
        like a Qdrant server does, so a switch is seen by the next call)."""
        return self.aliases().get(name, name)

    def _call(self, name: str, what: str, fn: Callable[..., T], *args: Any) -> T:
        """One engine call; its plain exceptions become ours (a retry would fail the same way)."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the engine raises plain Exception/ValueError
            raise VectorStoreError(f"Qdrant Edge could not {what} in collection {name!r} "
                                   f"({self._dir(name)}): {exc}") from exc

    def _lock(self, name: str) -> None:
        def busy(holder: str, waited: float) -> StoreLockedError:
            return StoreLockedError(
                f"the embedded store at {self._dir(name)} is in use by another Tessera process "
                f"(pid {holder}) and did not come free within {waited:.0f} s; wait for it to "
                "finish, or raise store.lock_timeout")

        if name not in self._locks:
            self._locks[name] = HeldLock(self._dir(name) / ".lock", self.lock_timeout, busy)

    def _unlock(self, name: str) -> None:
        lock = self._locks.pop(name, None)
        if lock is not None:
            lock.release()

    def _require_space(self, folder: Path, extra: int, action: str) -> None:
        """Refuse, with a message, a write the disk could not hold (instead of a SIGBUS)."""
        need = (sparse_bytes(folder) if folder.exists() else 0) + extra
        free = free_bytes(folder)
        if free < need:
            raise DiskSpaceError(
                f"not enough free disk space for the embedded store at {self.root}: {action} "
                f"needs about {need / MIB:.0f} MiB free (Qdrant Edge preallocates 32 MiB WAL "
                f"segments and memory-mapped files and crashes if it cannot fill them), but "
                f"{free / MIB:.0f} MiB are free there. Free some space, or move TESSERA_HOME "
                "(or store.path) to a larger disk")

    def _shard(self, name: str) -> Any:
        name = self.real_name(name)
        shard = self._shards.get(name)
        if shard is not None:
            return shard
        if self.get_collection(name) is None:
            raise VectorStoreError(f"collection {name!r} does not exist in {self.root}; "
                                   "run `tessera ingest` first")
        folder = self._dir(name) / "shard"
        if self.read_only:
            folder = self._private_copy(name)
        else:
            self._lock(name)
        try:
            # Loading fills the open WAL segment's preallocated blocks.
            self._require_space(folder / "wal", 0, f"opening collection {name!r}")
            shard = self._call(name, "open the shard", _qe().EdgeShard.load, str(folder),
                               self._load_config(name))
        except BaseException:
            self._unlock(name)
            raise
        self._shards[name] = shard
        return shard

    def _load_config(self, name: str, hnsw: HnswParams | None = None) -> Any:
        """None (the shard's own config), or its vectors as created with another search pool
        size or HNSW graph (the engine then records the change in the shard)."""
        if (self.search_threads is None and hnsw is None) or not self._sealing(name):
            return None
        qe = _qe()
        info = self._info(name)
        graph = (qe.HnswIndexConfig(m=hnsw.m, ef_construct=hnsw.ef_construct,
                                    full_scan_threshold=FULL_SCAN_KB, memory=qe.Memory.Cold)
                 if hnsw is not None else None)
        return qe.EdgeConfig(vectors={info.vector_name: qe.EdgeVectorParams(
            size=info.dimension, distance=_distance(info.distance), memory=qe.Memory.Cold)},
            hnsw_config=graph, max_search_threads=self.search_threads)

    def _private_copy(self, name: str) -> Path:
        """A copy of a read-only shard in a temp folder, for readers (the engine writes on open)."""
        tmp = Path(tempfile.mkdtemp(prefix=f"tessera-ro-{name}-"))
        self._copies[name] = tmp
        logger.warning("%s is read-only: searching a private copy of collection %r in %s",
                       self.root, name, tmp)
        target = tmp / "shard"
        shutil.copytree(self._dir(name) / "shard", target)
        return target

    def get_collection(self, name: str) -> CollectionInfo | None:
        """The model recorded beside the shard, or None (re-read when the file changes: it is
        only ever replaced whole, so its stat changes)."""
        meta = self._dir(name) / _META
        try:
            st = meta.stat()
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._records.get(str(meta))
        if cached is not None and cached[0] == key:
            return cached[1]
        data = _read_json(meta, f"the record of collection {name!r}'s model")
        try:
            info = CollectionInfo.from_metadata(data)
        except TypeError as exc:
            raise VectorStoreError(f"{meta} does not describe a collection ({exc}); restore it "
                                   f"from a backup, or delete {meta.parent} and ingest again"
                                   ) from None
        self._records[str(meta)] = (key, info)
        return info

    def create_collection(self, info: CollectionInfo) -> None:
        """Create the shard, its payload indexes, then record the model (last: marks it done)."""
        if self.read_only:
            raise VectorStoreError(f"{self.root} is read-only; cannot create collection "
                                   f"{info.name!r} there")
        qe = _qe()
        folder = self._dir(info.name)
        folder.mkdir(parents=True, exist_ok=True)
        self._lock(info.name)  # before looking: another creator may be half-way through
        try:
            if (folder / _META).exists():
                return  # made by another process while this one waited for the lock
            shutil.rmtree(folder / "shard", ignore_errors=True)  # a create that crashed midway
            self._require_space(folder, NEW_SHARD_BYTES, f"creating collection {info.name!r}")
            cold = qe.Memory.Cold
            sparse = ({SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf,
                                                                memory=cold)}
                      if info.sparse is not None else None)
            # Vectors Cold (memory-mapped, not read in on open): the engine's default reads every
            # vector into the page cache each time a shard opens, 1.5 GiB of resident memory at a
            # million points for an ingest that mostly writes. A search faults in what it reads.
            # The graph is the shard-wide HNSW config (none per vector), so that a reader can
            # open it with its own search pool size without restating it.
            config = qe.EdgeConfig(
                vectors={info.vector_name: qe.EdgeVectorParams(
                    size=info.dimension, distance=_distance(info.distance), memory=cold)},
                hnsw_config=qe.HnswIndexConfig(m=self.hnsw.m, ef_construct=self.hnsw.ef_construct,
                                               full_scan_threshold=FULL_SCAN_KB, memory=cold),
                sparse_vectors=sparse, payload_memory=cold, id_tracker_memory=cold,
                optimizers=qe.EdgeOptimizersConfig(indexing_threshold=INDEXING_THRESHOLD_KB,
                                                   deleted_threshold=DELETED_THRESHOLD,
                                                   max_segment_size=MAX_SEGMENT_KB))
            shard = self._call(info.name, "create the shard", qe.EdgeShard.create,
                               str(folder / "shard"), config)
            for field in KEYWORD_INDEXES:
                shard.update(qe.UpdateOperation.create_field_index(
                    field, qe.KeywordIndexParams(memory=cold, enable_hnsw=False)))
            for field in INTEGER_INDEXES:
                shard.update(qe.UpdateOperation.create_field_index(
                    field, qe.IntegerIndexParams(lookup=True, range=True, memory=cold,
                                                 enable_hnsw=False)))
            shard.flush()
            atomic_write(folder / _SEALED, "1\n")
            self._record_index(info.name, self.hnsw)
            atomic_write(folder / _META, json.dumps(info.to_metadata(), indent=2))
            self._dirty.add(info.name)
        except BaseException:
            self._unlock(info.name)
            raise
        self._shards[info.name] = shard

    def list_collections(self) -> list[str]:
        """Folders under the root that hold a finished collection under a valid name."""
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if re.fullmatch(STORED_NAME_PATTERN, p.name) and (p / _META).exists())

    def unlisted(self) -> list[str]:
        """Collections under the root that no valid name reaches, as paths relative to it: one
        made under a name with "/" (`team/docs`, before names were checked) or outside the
        pattern. Dot folders are the store's own (`.writers`, a drop's `.dropped-*`)."""
        found: list[str] = []
        if self.root.exists():
            for top in self.root.iterdir():
                if top.name.startswith(".") or not top.is_dir():
                    continue
                if not re.fullmatch(STORED_NAME_PATTERN, top.name) and (top / _META).exists():
                    found.append(top.name)
                elif not (top / _META).exists():
                    found += [str(meta.parent.relative_to(self.root))
                              for meta in _metas_below(top, depth=4)]
        return sorted(found)

    def scan(self, name: str, match: Match, fields: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Page through matching points with only `fields` of their payload."""
        qe = _qe()
        offset = None
        while True:
            shard = self._shard(name)  # per page: a write between pages may have reopened it
            records, offset = self._call(name, "scroll points", shard.scroll, qe.ScrollRequest(
                offset=offset, limit=_SCROLL_PAGE, filter=_filter(match),
                with_payload=fields, with_vector=False))
            for rec in records:
                yield str(rec.id), dict(rec.payload or {})
            if offset is None:
                return

    def _update(self, name: str, what: str, operation: Callable[[], Any], incoming: int = 0) -> None:
        """One write, after checking the disk can take it (the WAL grows by a segment at a time).

        `operation` builds the engine's update: building it can fail too (a malformed id)."""
        name = self.real_name(name)
        shard = self._shard(name)
        self._require_space(self._dir(name) / "shard", 2 * WAL_SEGMENT + 2 * incoming, what)
        self._dirty.add(name)
        self._call(name, what, lambda: shard.update(operation()))
        self._unflushed[name] = self._unflushed.get(name, 0) + incoming
        self._unsealed[name] = self._unsealed.get(name, 0) + incoming
        if self._unsealed[name] >= SEAL_BYTES and self._sealing(name):
            self._seal(name)
        elif self._unflushed[name] >= FLUSH_BYTES:
            self._call(name, "flush", shard.flush)
            self._unflushed[name] = 0

    def _sealing(self, name: str) -> bool:
        """Whether writers seal this shard (it was created with the sealing layout)."""
        return (self._dir(name) / _SEALED).exists()

    def _seal(self, name: str, reopen: bool = True) -> None:
        """Seal what was appended (the engine's optimizer), then reopen the shard so the pages
        written so far are no longer mapped. Skipped, with a warning, when the disk could not
        hold the sealed copy (it is written before the appendable segment is dropped)."""
        shard = self._shards[name]
        folder = self._dir(name) / "shard"
        self._call(name, "flush", shard.flush)
        self._unflushed[name] = 0
        # The sealed copy of what was appended, plus the sealed segments the optimizer may
        # rewrite without their deleted points meanwhile (two at a time, as big as they are).
        rewrite = min(2 * MAX_SEGMENT_KB * 1024, allocated_bytes(folder / "segments"))
        need = 2 * self._unsealed.get(name, 0) + 2 * WAL_SEGMENT + rewrite
        if free_bytes(folder) < need:
            logger.warning("collection %r: %.0f MiB free, sealing needs about %.0f MiB: left "
                           "unsealed (it stays in memory until there is room)", name,
                           free_bytes(folder) / MIB, need / MIB)
            self._unsealed[name] = 0  # tried again after as much more written, not every write
            return
        self._call(name, "seal the appended segment", shard.optimize)
        self._unsealed[name] = 0
        if not reopen:
            return
        shard.close()
        self._shards[name] = self._call(name, "reopen the shard", _qe().EdgeShard.load,
                                        str(folder), self._load_config(name))

    def upsert(self, name: str, points: list[PointRecord]) -> None:
        """One update operation for the whole batch."""
        if not points:
            return
        qe = _qe()
        info = self._info(name)
        with_sparse = info.sparse is not None

        def vectors(p: PointRecord) -> dict[str, Any]:
            out: dict[str, Any] = {info.vector_name: np.asarray(p.vector, dtype=np.float32).tolist()}
            if with_sparse and p.sparse:
                out[SPARSE_VECTOR] = _sparse(p.sparse)
            return out

        def operation() -> Any:
            return qe.UpdateOperation.upsert_points([qe.Point(p.id, vectors(p), p.payload)
                                                     for p in points])

        incoming = sum(np.asarray(p.vector).size * 4 + len(str(p.payload))
                       + (12 * len(p.sparse.indices) if p.sparse else 0) for p in points)
        self._update(name, f"write {len(points)} points", operation, incoming)

    def set_payload(self, name: str, ids: list[str], payload: dict[str, Any]) -> None:
        """Set keys on existing points, leaving the rest of the payload."""
        if ids:
            self._update(name, f"update the payload of {len(ids)} points",
                         lambda: _qe().UpdateOperation.set_payload(ids, payload),
                         MOVED_POINT_BYTES * len(ids))

    def set_payload_where(self, name: str, match: Match, payload: dict[str, Any]) -> None:
        """Set keys on every point matching `match`, a page of ids at a time: each update moves
        its points out of sealed segments, and sealing between pages keeps that bounded."""
        page: list[str] = []
        for pid, _ in self.scan(name, match, []):
            page.append(pid)
            if len(page) >= _SCROLL_PAGE * 8:
                self.set_payload(name, page, payload)
                page = []
        self.set_payload(name, page, payload)

    def delete(self, name: str, ids: list[str]) -> None:
        """Delete by id."""
        if ids:
            self._update(name, f"delete {len(ids)} points",
                         lambda: _qe().UpdateOperation.delete_points(ids), 64 * len(ids))

    def count(self, name: str, match: Match | None = None) -> int:
        """Exact count."""
        request = _qe().CountRequest(exact=True, filter=_filter(match))
        return int(self._call(name, "count points", self._shard(name).count, request))

    def count_expired(self, name: str, now: int) -> int:
        """Points at or past their expiry."""
        request = _qe().CountRequest(exact=True, filter=_expired_filter(now))
        return int(self._call(name, "count expired points", self._shard(name).count, request))

    def delete_expired(self, name: str, now: int) -> None:
        """One delete-by-filter over the expires_at range index."""
        self._update(name, "delete expired points",
                     lambda: _qe().UpdateOperation.delete_points_by_filter(_expired_filter(now)))

    def _query(self, name: str, vector: np.ndarray, limit: int, info: CollectionInfo,
               match: Match | None = None, fields: list[str] | None = None,
               exact: bool = False) -> Any:
        qe = _qe()
        return qe.QueryRequest(
            limit=limit, filter=_filter(match), with_vector=False,
            with_payload=fields if fields is not None else True,
            params=qe.SearchParams(exact=exact),
            query=qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(),
                                   using=info.vector_name))

    def _info(self, name: str) -> CollectionInfo:
        info = self.get_collection(name)
        if info is None:
            raise VectorStoreError(f"collection {name!r} does not exist; run `tessera ingest` first")
        return info

    def search(self, name: str, vector: np.ndarray, limit: int, match: Match | None = None) -> list[Hit]:
        """Nearest neighbours in the collection's named vector."""
        request = self._query(name, vector, limit, self._info(name), match)
        points = self._call(name, "search", self._shard(name).query, request)
        return [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in points]

    def search_batch(self, name: str, vectors: np.ndarray, limit: int,
                     fields: list[str] | None = None, exact: bool = False) -> list[list[Hit]]:
        """One planned batch of nearest-neighbour queries (shares a pass over the segments)."""
        info = self._info(name)
        requests = [self._query(name, v, limit, info, None, fields, exact) for v in vectors]
        if not requests:
            return []
        results = self._call(name, "search", self._shard(name).query_batch,
                             _qe().QueryBatchRequest(requests))
        return [[Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))
                 for p in points] for points in results]

    def _request(self, info: CollectionInfo, q: StoreQuery) -> Any:
        """One QueryRequest: a nearest query on one side, or prefetches of both fused."""
        qe = _qe()
        flt = _filter(q.match)
        payload = list(q.fields) if q.fields is not None else True
        if q.sparse is not None and info.sparse is None:
            raise VectorStoreError(f"collection {info.name!r} has no sparse vectors; run "
                                   f"`tessera backfill-sparse --collection {info.name}`")
        dense = (qe.Query.Nearest(np.asarray(q.dense, dtype=np.float32).tolist(),
                                  using=info.vector_name) if q.dense is not None else None)
        sparse = (qe.Query.Nearest(_sparse(q.sparse), using=SPARSE_VECTOR)
                  if q.sparse is not None else None)
        exact = qe.SearchParams(exact=q.exact, hnsw_ef=q.hnsw_ef)
        if dense is not None and sparse is not None:
            fusion = qe.Fusion.Rrf(k=q.rrf_k) if q.fusion == "rrf" else qe.Fusion.Dbsf()
            return qe.QueryRequest(
                limit=q.limit, filter=flt, with_vector=False, with_payload=payload, query=fusion,
                prefetches=[qe.Prefetch(limit=q.depth, query=dense, filter=flt, params=exact),
                            qe.Prefetch(limit=q.depth, query=sparse, filter=flt)])
        return qe.QueryRequest(limit=q.limit, filter=flt, with_vector=False, with_payload=payload,
                               query=dense or sparse, params=exact if dense is not None else None)

    def query(self, name: str, query: StoreQuery) -> list[Hit]:
        """Chunk hits; hybrid is one request (two prefetches fused by the engine)."""
        return self.query_batch(name, [query])[0]

    def query_batch(self, name: str, queries: list[StoreQuery]) -> list[list[Hit]]:
        """One planned batch of queries of any mode."""
        if not queries:
            return []
        info = self._info(name)
        requests = [self._request(info, q) for q in queries]
        results = self._call(name, "search", self._shard(name).query_batch,
                             _qe().QueryBatchRequest(requests))
        return [[Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))
                 for p in points] for points in results]

    def query_documents(self, name: str, query: StoreQuery) -> list[Hit]:
        """Edge has no grouping: over-fetch chunks and keep each document's best."""
        return group_documents(lambda q: self.query(name, q), query)

    def add_sparse_vector(self, name: str, identity: dict[str, Any]) -> None:
        """Create the sparse named vector on an existing shard (the engine can: no rebuild)."""
        qe = _qe()
        self._update(name, "add the sparse vector", lambda: qe.UpdateOperation.create_sparse_vector(
            SPARSE_VECTOR, modifier=qe.Modifier.Idf))

    def set_sparse(self, name: str, vectors: dict[str, SparseVec]) -> None:
        """update_vectors: only the sparse vector of each point changes."""
        if not vectors:
            return
        qe = _qe()
        self._update(name, f"set the sparse vectors of {len(vectors)} points",
                     lambda: qe.UpdateOperation.update_vectors(
                         [qe.PointVectors(pid, {SPARSE_VECTOR: _sparse(v)})
                          for pid, v in vectors.items()]),
                     sum(12 * len(v.indices) + 64 for v in vectors.values()))

    def record_collection(self, info: CollectionInfo) -> None:
        """Rewrite tessera.json atomically."""
        self._lock(info.name)
        atomic_write(self._dir(info.name) / _META, json.dumps(info.to_metadata(), indent=2))

    def optimize(self, name: str) -> None:
        """Run the engine's optimizer now: seal, merge, and build each sealed segment's graph."""
        self._call(name, "optimize", self._shard(name).optimize)

    def _record_index(self, name: str, hnsw: HnswParams) -> None:
        atomic_write(self._dir(name) / _INDEX, json.dumps(
            {"m": hnsw.m, "ef_construct": hnsw.ef_construct}) + "\n")

    def index_params(self, name: str) -> HnswParams | None:
        """The graph the sealed segments are built with; None for a shard of an earlier release
        (one appendable segment, no graph)."""
        if not self._sealing(name):
            return None
        path = self._dir(name) / _INDEX
        if not path.exists():
            return HnswParams(0, 100)  # sealed before graphs were built
        data = _read_json(path, f"collection {name!r}'s HNSW parameters")
        return HnswParams(int(data["m"]), int(data["ef_construct"]))

    def build_index(self, name: str, hnsw: HnswParams) -> dict[str, Any]:
        """Rebuild every sealed segment with the graph `hnsw` (m = 0: drop the graphs), under
        the shard's writer lock; readers see the result when it is done."""
        name = self.real_name(name)
        if self.read_only:
            raise VectorStoreError(f"{self.root} is read-only; cannot rebuild collection "
                                   f"{name!r}'s index there")
        self._info(name)
        if not self._sealing(name):
            raise VectorStoreError(
                f"collection {name!r} was made by an earlier release as one appendable segment; "
                "its graph would be built in memory all at once. Ingest into a new collection "
                "with this release (a new `collection` name), then point readers at it with "
                "`tessera alias`; until then it is searched as it is (a scan)")
        started = time.perf_counter()
        self._close_shard(name)
        self._lock(name)
        try:
            folder = self._dir(name) / "shard"
            segments = allocated_bytes(folder / "segments")
            # The optimizer writes each rebuilt segment before it drops the old one.
            self._require_space(folder, 2 * WAL_SEGMENT + min(segments, 2 * MAX_SEGMENT_KB * 1024),
                                f"rebuilding collection {name!r}'s index")
            shard = self._call(name, "open the shard", _qe().EdgeShard.load, str(folder),
                               self._load_config(name, hnsw))
            self._shards[name] = shard
            self._dirty.add(name)
            # The open wrote the new config into the shard: from here every seal builds this
            # graph, so the record says so even if the rebuild below is killed (running
            # `tessera optimize` again finishes it).
            self._record_index(name, hnsw)
            self._call(name, "build the index", shard.optimize)
            points = int(shard.info().points_count)
        finally:
            if name in self._shards:
                self._finish(name)  # flush, publish the generation, release the lock
            else:
                self._unlock(name)
        return {"collection": name, "hnsw_m": hnsw.m, "ef_construct": hnsw.ef_construct,
                "points": points, "seconds": round(time.perf_counter() - started, 1)}

    def generation(self, name: str) -> str:
        """A marker a writer rewrites, under the shard's lock, each time it closes the shard after
        changing it; "" before the first such close."""
        try:
            return (self._dir(name) / _GENERATION).read_text().strip()
        except OSError:
            return ""

    def _publish(self, name: str) -> None:
        atomic_write(self._dir(name) / _GENERATION, f"{time.time_ns()}-{os.getpid()}")

    def aliases(self) -> dict[str, str]:
        """Aliases kept in aliases.json beside the shards (re-read when the file changes: every
        call resolves names, and a switch replaces the file, so its stat changes)."""
        path = self.root / _ALIASES
        try:
            st = path.stat()
        except FileNotFoundError:
            return {}
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._alias_cache is None or self._alias_cache[0] != key:
            self._alias_cache = (key, dict(_read_json(path, "the alias table")))
        return dict(self._alias_cache[1])

    def set_alias(self, alias: str, collection: str) -> None:
        """Rewrite aliases.json atomically (temp file, then rename)."""
        data = {**self.aliases(), alias: collection}
        atomic_write(self.root / _ALIASES, json.dumps(data, indent=2, sort_keys=True))

    def _close_shard(self, name: str) -> None:
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.flush()
            shard.close()

    def drop_collection(self, name: str) -> None:
        """Delete a collection no alias points at (moved aside first, so a crash leaves no half)."""
        if name in self.aliases().values():
            raise VectorStoreError(f"collection {name!r} is what an alias points at; switch the "
                                   "alias first")
        folder = self.root / name
        if not (folder / _META).exists():
            return
        self._close_shard(name)
        self._lock(name)  # wait out a writer that has it open
        try:
            trash = self.root / f".dropped-{name}-{uuid.uuid4().hex[:8]}"
            os.replace(folder, trash)
        finally:
            self._unlock(name)
        shutil.rmtree(trash, ignore_errors=True)

    def adopt(self, plain: str, info: CollectionInfo) -> None:
        """Make the plain collection `plain` the versioned `info.name`, behind alias `plain`.

        The folder is renamed (no copy), its record rewritten, then the alias made; a crash
        between the rename and the alias leaves a collection recording `adopted_from`, which the
        next migration finds and finishes."""
        folder = self.root / plain
        if (folder / _META).exists():
            self._close_shard(plain)
            self._lock(plain)
            try:
                atomic_write(folder / _META, json.dumps(info.to_metadata(), indent=2))
                os.replace(folder, self.root / info.name)
            finally:
                self._unlock(plain)
        elif self.get_collection(info.name) is None:
            raise VectorStoreError(f"cannot adopt {plain!r}: no such collection in {self.root}")
        self.set_alias(plain, info.name)

    def _finish(self, name: str) -> None:
        """Seal, flush and close one open shard, publish its generation if it changed, unlock."""
        try:
            if (not self.read_only and name in self._dirty and self._unsealed.get(name)
                    and self._sealing(name)):
                try:
                    self._seal(name, reopen=False)
                except VectorStoreError as exc:  # the writes are safe; only memory is at stake
                    logger.warning("%s; the shard stays as written", exc)
            shard = self._shards.pop(name)
            if not self.read_only:
                shard.flush()
            shard.close()
            if name in self._dirty and not self.read_only and name in self._locks:
                self._publish(name)  # still under the lock: readers copy a closed shard
        finally:
            self._dirty.discard(name)
            self._unlock(name)

    def close(self) -> None:
        """Seal what was written (the optimizer leaves a small appendable segment as it is),
        flush and close every open shard, then release the locks and private copies."""
        for name in list(self._shards):
            self._finish(name)
        self._shards.clear()
        for copy in self._copies.values():
            shutil.rmtree(copy, ignore_errors=True)
        self._copies.clear()
