"""Qdrant Edge: the Qdrant engine in-process, one shard per collection under TESSERA_HOME/qdrant."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from flows.store import INTEGER_INDEXES, KEYWORD_INDEXES
from tessera.errors import StoreLockedError, VectorStoreError
from tessera.types import CollectionInfo, Hit, Match, PointRecord

logger = logging.getLogger(__name__)

_META = "tessera.json"
_SCROLL_PAGE = 2048


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
    return qe.Filter(must=must) if must else None


def _expired_filter(now: int) -> Any:
    qe = _qe()
    return qe.Filter(must=[qe.FieldCondition(key="expires_at", range=qe.RangeFloat(lte=float(now)))])


class _CollectionLock:
    """An exclusive flock on the collection: one process writes a shard at a time."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    raise StoreLockedError(
                        f"the embedded store at {path.parent} is in use by another Tessera process "
                        f"(pid {holder}) and did not come free within {timeout:.0f} s; wait for it "
                        "to finish, or raise store.lock_timeout"
                    ) from None
                if not waited:
                    logger.warning("waiting for pid %s to release %s", holder, path.parent)
                    waited = True
                time.sleep(0.2)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        """Let the next process in."""
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


class EdgeStore:
    """VectorStore over qdrant-edge-py: no server, data on disk, WAL-backed."""

    kind = "edge"

    def __init__(self, root: Path, lock_timeout: float = 600.0) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self._shards: dict[str, Any] = {}
        self._locks: dict[str, _CollectionLock] = {}

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _shard(self, name: str) -> Any:
        shard = self._shards.get(name)
        if shard is not None:
            return shard
        if self.get_collection(name) is None:
            raise VectorStoreError(f"collection {name!r} does not exist in {self.root}; "
                                   "run `tessera ingest` first")
        self._locks[name] = _CollectionLock(self._dir(name) / ".lock", self.lock_timeout)
        try:
            shard = _qe().EdgeShard.load(str(self._dir(name) / "shard"))
        except Exception as exc:  # noqa: BLE001 - the engine raises plain exceptions
            self._locks.pop(name).release()
            raise VectorStoreError(f"cannot open collection {name!r} at {self._dir(name)}: {exc}") from exc
        self._shards[name] = shard
        return shard

    def get_collection(self, name: str) -> CollectionInfo | None:
        """The model recorded beside the shard, or None."""
        meta = self._dir(name) / _META
        if not meta.exists():
            return None
        return CollectionInfo.from_metadata(json.loads(meta.read_text()))

    def create_collection(self, info: CollectionInfo) -> None:
        """Create the shard, its payload indexes, then record the model (last: marks it done)."""
        qe = _qe()
        folder = self._dir(info.name)
        if folder.exists() and not (folder / _META).exists():
            shutil.rmtree(folder / "shard", ignore_errors=True)  # a create that crashed midway
        folder.mkdir(parents=True, exist_ok=True)
        self._locks[info.name] = _CollectionLock(folder / ".lock", self.lock_timeout)
        config = qe.EdgeConfig(vectors={info.vector_name: qe.EdgeVectorParams(
            size=info.dimension, distance=_distance(info.distance))})
        shard = qe.EdgeShard.create(str(folder / "shard"), config)
        for field in KEYWORD_INDEXES:
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        for field in INTEGER_INDEXES:
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Integer))
        shard.flush()
        tmp = folder / f".{_META}.tmp"
        tmp.write_text(json.dumps(info.to_metadata(), indent=2))
        os.replace(tmp, folder / _META)
        self._shards[info.name] = shard

    def list_collections(self) -> list[str]:
        """Folders under the root that hold a finished collection."""
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / _META).exists())

    def scan(self, name: str, match: Match, fields: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Page through matching points with only `fields` of their payload."""
        qe = _qe()
        shard = self._shard(name)
        offset = None
        while True:
            records, offset = shard.scroll(qe.ScrollRequest(
                offset=offset, limit=_SCROLL_PAGE, filter=_filter(match),
                with_payload=fields, with_vector=False))
            for rec in records:
                yield str(rec.id), dict(rec.payload or {})
            if offset is None:
                return

    def upsert(self, name: str, points: list[PointRecord]) -> None:
        """One update operation for the whole batch."""
        if not points:
            return
        qe = _qe()
        vector_name = self.get_collection(name).vector_name  # type: ignore[union-attr]
        batch = [qe.Point(p.id, {vector_name: np.asarray(p.vector, dtype=np.float32).tolist()},
                          p.payload) for p in points]
        self._shard(name).update(qe.UpdateOperation.upsert_points(batch))

    def set_payload(self, name: str, ids: list[str], payload: dict[str, Any]) -> None:
        """Set keys on existing points, leaving the rest of the payload."""
        if ids:
            self._shard(name).update(_qe().UpdateOperation.set_payload(ids, payload))

    def delete(self, name: str, ids: list[str]) -> None:
        """Delete by id."""
        if ids:
            self._shard(name).update(_qe().UpdateOperation.delete_points(ids))

    def count(self, name: str, match: Match | None = None) -> int:
        """Exact count."""
        return int(self._shard(name).count(_qe().CountRequest(exact=True, filter=_filter(match))))

    def count_expired(self, name: str, now: int) -> int:
        """Points at or past their expiry."""
        return int(self._shard(name).count(_qe().CountRequest(exact=True, filter=_expired_filter(now))))

    def delete_expired(self, name: str, now: int) -> None:
        """One delete-by-filter over the expires_at range index."""
        self._shard(name).update(_qe().UpdateOperation.delete_points_by_filter(_expired_filter(now)))

    def search(self, name: str, vector: np.ndarray, limit: int, match: Match | None = None) -> list[Hit]:
        """Nearest neighbours in the collection's named vector."""
        qe = _qe()
        info = self.get_collection(name)
        if info is None:
            raise VectorStoreError(f"collection {name!r} does not exist; run `tessera ingest` first")
        query = qe.Query.Nearest(np.asarray(vector, dtype=np.float32).tolist(), using=info.vector_name)
        points = self._shard(name).query(qe.QueryRequest(
            limit=limit, query=query, filter=_filter(match), with_payload=True, with_vector=False))
        return [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in points]

    def search_batch(self, name: str, vectors: np.ndarray, limit: int,
                     fields: list[str] | None = None, exact: bool = False) -> list[list[Hit]]:
        """One planned batch of nearest-neighbour queries (shares a pass over the segments)."""
        qe = _qe()
        info = self.get_collection(name)
        if info is None:
            raise VectorStoreError(f"collection {name!r} does not exist; run `tessera ingest` first")
        params = qe.SearchParams(exact=exact)
        payload: Any = fields if fields is not None else True
        requests = [qe.QueryRequest(limit=limit, with_payload=payload, with_vector=False,
                                    params=params, query=qe.Query.Nearest(
                                        np.asarray(v, dtype=np.float32).tolist(),
                                        using=info.vector_name))
                    for v in vectors]
        if not requests:
            return []
        results = self._shard(name).query_batch(qe.QueryBatchRequest(requests))
        return [[Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))
                 for p in points] for points in results]

    def optimize(self, name: str) -> None:
        """Merge segments and build the HNSW index (after large writes)."""
        self._shard(name).optimize()

    def aliases(self) -> dict[str, str]:
        """Aliases kept in aliases.json beside the shards."""
        path = self.root / "aliases.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def set_alias(self, alias: str, collection: str) -> None:
        """Rewrite aliases.json atomically (temp file, then rename)."""
        data = {**self.aliases(), alias: collection}
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / ".aliases.json.tmp"
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, self.root / "aliases.json")

    def close(self) -> None:
        """Flush and close every open shard, then release the locks."""
        for name, shard in list(self._shards.items()):
            try:
                shard.flush()
                shard.close()
            finally:
                self._locks.pop(name).release()
        self._shards.clear()
