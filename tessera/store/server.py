"""A Qdrant server or cluster through qdrant-client (tests drive it through local mode)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from tessera.core.errors import ForeignCollectionError, StoreUnavailableError, VectorStoreError
from tessera.core.query import StoreQuery
from tessera.core.settings import StoreConfig
from tessera.core.sparse import SPARSE_VECTOR, SparseVec
from tessera.core.types import CollectionInfo, Hit, Match, PointRecord
from tessera.store.base import INTEGER_INDEXES, KEYWORD_INDEXES, HnswParams, group_documents

logger = logging.getLogger(__name__)

_SCROLL_PAGE = 2048


def _m() -> Any:
    from qdrant_client import models

    return models


def _filter(match: Match | None) -> Any:
    if match is None:
        return None
    m = _m()
    must: list[Any] = []
    if match.source is not None:
        must.append(m.FieldCondition(key="source", match=m.MatchValue(value=match.source)))
    if match.modality is not None:
        must.append(m.FieldCondition(key="modality", match=m.MatchValue(value=match.modality)))
    if match.doc_ids is not None:
        must.append(m.FieldCondition(key="doc_id", match=m.MatchAny(any=list(match.doc_ids))))
    if match.point_ids is not None:
        must.append(m.HasIdCondition(has_id=list(match.point_ids)))
    for key, value in match.equals:
        must.append(m.FieldCondition(key=key, match=m.MatchValue(value=value)))
    for key, gte, lte in match.ranges:
        must.append(m.FieldCondition(key=key, range=m.Range(gte=gte, lte=lte)))
    return m.Filter(must=must) if must else None


def _sparse(vec: SparseVec) -> Any:
    return _m().SparseVector(indices=list(vec.indices), values=list(vec.values))


def _transient(exc: BaseException) -> bool:
    """Errors a retry can fix: no connection, a timeout, the server overloaded or restarting."""
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is not None and (exc.status_code >= 500 or exc.status_code == 429)
    return isinstance(exc, ResponseHandlingException | httpx.TransportError | ConnectionError
                      | TimeoutError)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


def _expired(now: int) -> Any:
    m = _m()
    return m.Filter(must=[m.FieldCondition(key="expires_at", range=m.Range(lte=now))])


class ServerStore:
    """VectorStore over qdrant-client: `url` (+ `api_key`) for a server, `path` for local mode."""

    def __init__(self, config: StoreConfig) -> None:
        from qdrant_client import QdrantClient

        config.check()
        self._where = config.url or str(config.path)
        self.hnsw = HnswParams(config.hnsw_m, config.hnsw_ef_construct)
        api_key = config.api_key.get_secret_value() if config.api_key else None
        try:
            if config.url:
                self.client = QdrantClient(url=config.url, api_key=api_key, timeout=30)
                self.client.get_collections()  # fail now, clearly, if unreachable
            elif config.in_memory:
                self.client = QdrantClient(":memory:")
            else:
                self.client = QdrantClient(path=str(config.path))
        except Exception as exc:  # noqa: BLE001 - connection errors come in many types
            raise VectorStoreError(
                f"cannot reach Qdrant at {self._where}: {type(exc).__name__}; check store.url, "
                "that the server is running, and that TESSERA_STORE__API_KEY is right"
            ) from None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - wrapped where it crosses into our code
            if _transient(exc):
                raise StoreUnavailableError(
                    f"Qdrant at {self._where} could not {what} just now ({_describe(exc)}); "
                    "retrying may help, or check that the server is up") from exc
            raise VectorStoreError(f"Qdrant at {self._where} failed to {what}: {exc}") from exc

    def get_collection(self, name: str) -> CollectionInfo | None:
        """The model recorded in the collection's metadata, or None."""
        if not self._call("list collections", self.client.collection_exists, name):
            return None
        info = self._call("read collection", self.client.get_collection, name)
        meta = getattr(info.config, "metadata", None) or {}
        if "model_id" not in meta:
            raise ForeignCollectionError(
                f"collection {name!r} exists but was not created by Tessera (no model recorded); "
                "choose another collection name"
            )
        return CollectionInfo.from_metadata(meta)

    def create_collection(self, info: CollectionInfo) -> None:
        """Named vector for the model's space, payload indexes, model recorded as metadata."""
        m = _m()
        distance = {"cosine": m.Distance.COSINE, "dot": m.Distance.DOT,
                    "euclid": m.Distance.EUCLID}[info.distance]
        sparse = ({SPARSE_VECTOR: m.SparseVectorParams(modifier=m.Modifier.IDF)}
                  if info.sparse is not None else None)
        self._call("create collection", self.client.create_collection, info.name,
                   vectors_config={info.vector_name: m.VectorParams(size=info.dimension,
                                                                    distance=distance)},
                   sparse_vectors_config=sparse, metadata=info.to_metadata(),
                   hnsw_config=m.HnswConfigDiff(m=self.hnsw.m,
                                                ef_construct=self.hnsw.ef_construct))
        for field in KEYWORD_INDEXES:
            self._call("index payload", self.client.create_payload_index, info.name, field,
                       field_schema=m.PayloadSchemaType.KEYWORD)
        for field in INTEGER_INDEXES:
            self._call("index payload", self.client.create_payload_index, info.name, field,
                       field_schema=m.PayloadSchemaType.INTEGER)

    def index_params(self, name: str) -> HnswParams | None:
        """The collection's HNSW config, as the server reports it."""
        hnsw = self._call("read the collection", self.client.get_collection, name).config.hnsw_config
        return HnswParams(int(hnsw.m), int(hnsw.ef_construct)) if hnsw is not None else None

    def build_index(self, name: str, hnsw: HnswParams) -> dict[str, Any]:
        """Change the HNSW config; the server rebuilds the graph in the background."""
        self._call("update the HNSW config", self.client.update_collection, name,
                   hnsw_config=_m().HnswConfigDiff(m=hnsw.m, ef_construct=hnsw.ef_construct))
        return {"collection": name, "hnsw_m": hnsw.m, "ef_construct": hnsw.ef_construct,
                "rebuilt": "by the server, in the background"}

    def list_collections(self) -> list[str]:
        """Collections Tessera created. An outage raises: an empty list would read as "nothing
        to prune" or "no collections" and let a run report success."""
        names = [c.name for c in self._call("list collections", self.client.get_collections).collections]
        return sorted(n for n in names if self._ours(n))

    def unlisted(self) -> list[str]:
        """None: a server's collections are names, not folders; every one is listed."""
        return []

    def _ours(self, name: str) -> bool:
        try:
            return self.get_collection(name) is not None
        except ForeignCollectionError:
            return False

    def scan(self, name: str, match: Match, fields: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Scroll with a payload selector."""
        offset = None
        while True:
            records, offset = self._call("scroll", self.client.scroll, name,
                                         scroll_filter=_filter(match), limit=_SCROLL_PAGE,
                                         offset=offset, with_payload=fields, with_vectors=False)
            for rec in records:
                yield str(rec.id), dict(rec.payload or {})
            if offset is None:
                return

    def upsert(self, name: str, points: list[PointRecord]) -> None:
        """One upsert call per batch, waiting for the write to be applied."""
        if not points:
            return
        m = _m()
        info = self._info(name)

        def vectors(p: PointRecord) -> dict[str, Any]:
            out: dict[str, Any] = {info.vector_name: np.asarray(p.vector, np.float32).tolist()}
            if info.sparse is not None and p.sparse:
                out[SPARSE_VECTOR] = _sparse(p.sparse)
            return out

        structs = [m.PointStruct(id=p.id, vector=vectors(p), payload=p.payload) for p in points]
        self._call("upsert", self.client.upsert, name, points=structs, wait=True)

    def set_payload(self, name: str, ids: list[str], payload: dict[str, Any]) -> None:
        """Set keys on existing points."""
        if ids:
            self._call("set payload", self.client.set_payload, name, payload=payload,
                       points=ids, wait=True)

    def set_payload_where(self, name: str, match: Match, payload: dict[str, Any]) -> None:
        """Set keys on every point matching `match`."""
        self._call("set payload", self.client.set_payload, name, payload=payload,
                   points=_filter(match), wait=True)

    def delete(self, name: str, ids: list[str]) -> None:
        """Delete by id."""
        if ids:
            self._call("delete", self.client.delete, name,
                       points_selector=_m().PointIdsList(points=ids), wait=True)

    def count(self, name: str, match: Match | None = None) -> int:
        """Exact count."""
        return int(self._call("count", self.client.count, name, count_filter=_filter(match),
                              exact=True).count)

    def count_expired(self, name: str, now: int) -> int:
        """Points at or past their expiry."""
        return int(self._call("count", self.client.count, name, count_filter=_expired(now),
                              exact=True).count)

    def delete_expired(self, name: str, now: int) -> None:
        """Delete by a range filter on expires_at."""
        self._call("delete expired", self.client.delete, name,
                   points_selector=_m().FilterSelector(filter=_expired(now)), wait=True)

    def search(self, name: str, vector: np.ndarray, limit: int, match: Match | None = None) -> list[Hit]:
        """query_points on the collection's named vector."""
        info = self.get_collection(name)
        if info is None:
            raise VectorStoreError(f"collection {name!r} does not exist; run `tessera ingest` first")
        res = self._call("search", self.client.query_points, name,
                         query=np.asarray(vector, np.float32).tolist(), using=info.vector_name,
                         query_filter=_filter(match), limit=limit, with_payload=True)
        return [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))
                for p in res.points]

    def _info(self, name: str) -> CollectionInfo:
        info = self.get_collection(name)
        if info is None:
            raise VectorStoreError(f"collection {name!r} does not exist; run `tessera ingest` first")
        return info

    def _request(self, info: CollectionInfo, q: StoreQuery) -> dict[str, Any]:
        """query_points arguments: one side's nearest query, or both prefetched and fused."""
        m = _m()
        if q.sparse is not None and info.sparse is None:
            raise VectorStoreError(f"collection {info.name!r} has no sparse vectors; run "
                                   f"`tessera backfill-sparse --collection {info.name}`")
        flt = _filter(q.match)
        payload = list(q.fields) if q.fields else q.fields is None  # (): no payload
        exact = m.SearchParams(exact=q.exact, hnsw_ef=q.hnsw_ef)
        dense = np.asarray(q.dense, np.float32).tolist() if q.dense is not None else None
        sparse = _sparse(q.sparse) if q.sparse is not None else None
        if dense is not None and sparse is not None:
            fusion = (m.RrfQuery(rrf=m.Rrf(k=q.rrf_k)) if q.fusion == "rrf"
                      else m.FusionQuery(fusion=m.Fusion.DBSF))
            return {"query": fusion, "query_filter": flt, "limit": q.limit,
                    "with_payload": payload, "prefetch": [
                        m.Prefetch(query=dense, using=info.vector_name, limit=q.dense_depth,
                                   filter=flt, params=exact),
                        m.Prefetch(query=sparse, using=SPARSE_VECTOR, limit=q.sparse_depth,
                                   filter=flt)]}
        if dense is not None:
            return {"query": dense, "using": info.vector_name, "query_filter": flt,
                    "limit": q.limit, "with_payload": payload, "search_params": exact}
        return {"query": sparse, "using": SPARSE_VECTOR, "query_filter": flt, "limit": q.limit,
                "with_payload": payload}

    def query(self, name: str, query: StoreQuery) -> list[Hit]:
        """query_points; hybrid is one call (prefetches fused by the server)."""
        res = self._call("search", self.client.query_points, name,
                         **self._request(self._info(name), query))
        return [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))
                for p in res.points]

    def query_batch(self, name: str, queries: list[StoreQuery]) -> list[list[Hit]]:
        """query_batch_points: one round trip for many queries of any mode."""
        if not queries:
            return []
        m = _m()
        info = self._info(name)
        requests = []
        for q in queries:
            args = self._request(info, q)
            args["filter"] = args.pop("query_filter")
            if "search_params" in args:
                args["params"] = args.pop("search_params")
            requests.append(m.QueryRequest(**args))
        responses = self._call("search", self.client.query_batch_points, name, requests=requests)
        return [[Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {}))
                 for p in res.points] for res in responses]

    def query_documents(self, name: str, query: StoreQuery) -> list[Hit]:
        """The server groups: query_points_groups by doc_id, one (best) chunk per group; a score
        over several chunks is summed here from over-fetched chunks."""
        if query.doc_chunks > 1:
            return group_documents(lambda q: self.query(name, q), query)
        args = self._request(self._info(name), query)
        res = self._call("search", self.client.query_points_groups, name, group_by="doc_id",
                         group_size=1, **args)
        return [Hit(id=str(g.hits[0].id), score=float(g.hits[0].score),
                    payload=dict(g.hits[0].payload or {})) for g in res.groups if g.hits]

    def add_sparse_vector(self, name: str, identity: dict[str, Any]) -> None:
        """create_vector_name on the existing collection (a no-op when it is there)."""
        m = _m()
        info = self._call("read collection", self.client.get_collection, name)
        if SPARSE_VECTOR in (info.config.params.sparse_vectors or {}):
            return
        self._call("add the sparse vector", self.client.create_vector_name, name, SPARSE_VECTOR,
                   m.SparseVectorNameConfig(sparse=m.SparseVectorConfig(modifier=m.Modifier.IDF)))

    def set_sparse(self, name: str, vectors: dict[str, SparseVec]) -> None:
        """update_vectors: only the sparse vector of each point changes."""
        if vectors:
            m = _m()
            self._call("set sparse vectors", self.client.update_vectors, name, points=[
                m.PointVectors(id=pid, vector={SPARSE_VECTOR: _sparse(v)})
                for pid, v in vectors.items()], wait=True)

    def record_collection(self, info: CollectionInfo) -> None:
        """Replace the collection's metadata."""
        self._call("record collection", self.client.update_collection, info.name,
                   metadata=info.to_metadata())

    def aliases(self) -> dict[str, str]:
        """Qdrant's own collection aliases."""
        res = self._call("list aliases", self.client.get_aliases)
        return {a.alias_name: a.collection_name for a in res.aliases}

    def set_alias(self, alias: str, collection: str) -> None:
        """Delete and create the alias in one atomic aliases update."""
        m = _m()
        ops: list[Any] = []
        if alias in self.aliases():
            ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias)))
        ops.append(m.CreateAliasOperation(create_alias=m.CreateAlias(
            collection_name=collection, alias_name=alias)))
        self._call("switch alias", self.client.update_collection_aliases, change_aliases_operations=ops)

    def real_name(self, name: str) -> str:
        """The collection behind `name` when it is an alias, else `name`."""
        return self.aliases().get(name, name)

    def drop_collection(self, name: str) -> None:
        """Delete a collection no alias points at."""
        if name in self.aliases().values():
            raise VectorStoreError(f"collection {name!r} is what an alias points at; switch the "
                                   "alias first")
        self._call("delete collection", self.client.delete_collection, name)

    def adopt(self, plain: str, info: CollectionInfo) -> None:
        """Make the plain collection `plain` the versioned `info.name`, behind alias `plain`.

        Qdrant cannot rename a collection, and an alias may not share a collection's name: the
        points are copied (ids, vectors, payloads) into the new collection, the copy is counted,
        then the plain one is deleted and the alias made in its place. Readers of `plain` see
        nothing between the delete and the alias (one request apart). A crash midway leaves the
        copy, recording `adopted_from`; the next migration copies again (same ids) and finishes."""
        if self.client.collection_exists(plain) and plain not in self.aliases():
            if self.get_collection(info.name) is None:
                self.create_collection(info)
            offset = None
            while True:
                records, offset = self._call("scroll", self.client.scroll, plain,
                                             limit=_SCROLL_PAGE, offset=offset,
                                             with_payload=True, with_vectors=True)
                if records:
                    m = _m()
                    self._call("copy points", self.client.upsert, info.name, wait=True, points=[
                        m.PointStruct(id=r.id, vector=r.vector, payload=r.payload)
                        for r in records])
                if offset is None:
                    break
            if self.count(info.name) != self.count(plain):
                raise VectorStoreError(f"copying {plain!r} into {info.name!r} left different "
                                       "point counts; nothing was switched, run it again")
            self._call("delete collection", self.client.delete_collection, plain)
        self.set_alias(plain, info.name)

    def optimize(self, name: str) -> None:
        """The server optimizes on its own."""

    def close(self) -> None:
        """Close the client (local mode releases its folder)."""
        self.client.close()
