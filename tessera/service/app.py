"""The search service's HTTP API: a FastAPI app that holds the store and the models open.

`create_app(settings)` builds it; `tessera api` and `tessera report --serve` serve it with
uvicorn, and infra/modal_app.py serves the same app on Modal. It also serves the report page at
`/`. Searches run in worker threads (the event loop only parses, checks keys and answers); query
embedding is batched across concurrent requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tessera.core import telemetry
from tessera.core.errors import ConfigError, PipelineError, StoreLockedError, UsageError
from tessera.core.settings import Settings
from tessera.core.types import STORED_NAME_PATTERN
from tessera.service.charts import VEGA_DIR, VEGA_PREFIX
from tessera.service.docs import add_docs
from tessera.service.guard import ANONYMOUS, BodyLimit, KeyCheck, KeyGuard, as_bearer, challenge
from tessera.service.metrics import Metrics
from tessera.service.problems import body_model, explain
from tessera.service.request_log import RequestLog
from tessera.service.schemas import (
    CaptionRequest,
    CollectionsResponse,
    DocumentResponse,
    Problem,
    SearchRequest,
    SearchResponse,
)
from tessera.service.service import InvalidRequest, NotFound, SearchService
from tessera.service.snapshot import SnapshotReader
from tessera.service.startup import StartupClock
from tessera.service.web import live_page

logger = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="an API key from TESSERA_API__KEYS")
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or wrong API key"},
    413: {"model": Problem, "description": "body over api.max_body_bytes"},
    422: {"model": Problem, "description": "a field is invalid; the message names it"},
    429: {"model": Problem, "description": "rate limit; see Retry-After"},
    503: {"model": Problem, "description": "the store is not readable yet, or too many request "
                                           "bodies are in flight; see Retry-After"},
}


class ApiError(Exception):
    """An answer other than 2xx, with its metrics kind."""

    def __init__(self, status: int, kind: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
        self.status, self.kind, self.detail, self.headers = status, kind, detail, headers
        super().__init__(detail)


def _error(request: Request, status: int, kind: str, detail: str,
           headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    request.app.state.metrics.errors.labels(kind).inc()
    telemetry.mark_error(kind, detail, failed=status >= 500,
                         span=request.scope.get("tessera.span"))
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


async def _authorized(request: Request,
                      credentials: Annotated[HTTPAuthorizationCredentials | None,
                                             Depends(_bearer)]) -> int:
    """The caller's key (its index), after the key check and the rate limit."""
    given = f"Bearer {credentials.credentials}" if credentials else None
    key = _admit(request.app.state.guard, given, page=False)
    request.scope.setdefault("tessera", {})["key_id"] = request.app.state.guard.key_id(key)
    return key


async def _page_authorized(request: Request) -> int:
    """The same for the page, which a browser signs in to with HTTP Basic."""
    given = as_bearer(request.headers.get("authorization"))
    return _admit(request.app.state.guard, given, page=True)


def _admit(guard: KeyGuard, authorization: str | None, page: bool) -> int:
    """The key in `authorization` (ANONYMOUS with auth off) once it passed its rate limit."""
    key = ANONYMOUS
    if guard.enabled:
        found = guard.identify(authorization)
        if found is None:
            detail, asks = challenge(page)
            raise ApiError(401, "unauthorized", detail, {"WWW-Authenticate": asks})
        key = found
    wait = guard.take(key)
    if wait > 0:
        raise ApiError(429, "rate_limited", f"rate limit reached ({guard.rate:g} requests/s, "
                       f"bursts of {guard.burst}; api.rate_limit); retry after the delay",
                       {"Retry-After": str(max(1, math.ceil(wait)))})
    return key


# Probes and scrapes: no trace each (a scrape every second would bury the searches).
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


class _Observe:
    """ASGI middleware: latency by route template and status, in-flight gauge, request events."""

    def __init__(self, app: Any, metrics: Metrics, log: RequestLog) -> None:
        self.app, self.metrics, self.log = app, metrics, log

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in UNTRACED:
            await self._observe(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        # One trace per request, joined to the caller's when it sent a `traceparent`.
        with telemetry.remote_parent(headers), telemetry.span(
                f"{scope['method']} {scope['path']}", server=True,
                **{"http.request.method": scope["method"]}) as span:
            scope["tessera.span"] = span  # an error answered as JSON marks this span
            status = await self._observe(scope, receive, send)
            route = getattr(scope.get("route"), "path", None)
            span.update_name(f"{scope['method']} {route or 'unmatched'}")
            span.set_attributes({"http.route": route or "unmatched",
                                 "http.response.status_code": status})

    async def _observe(self, scope: Any, receive: Any, send: Any) -> int:
        """Run the app for one request: metrics, and a search_requests row for /v1/ routes;
        the status answered."""
        start = time.perf_counter()
        status = {"code": 500}
        scope["tessera"] = {}

        async def observed_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, observed_send)
        except Exception:
            self.metrics.errors.labels("internal").inc()
            raise
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, scope["method"], str(status["code"])).observe(seconds)
            if route.startswith("/v1/"):
                info = scope["tessera"]
                if self.log.add(interface="http", route=route, status=status["code"],
                                latency_ms=seconds * 1000, **info):
                    asyncio.get_running_loop().run_in_executor(None, self.log.flush)
        return status["code"]


def _validation_message(exc: RequestValidationError, body: Any = None) -> str:
    parts = []
    for err in exc.errors()[:5]:
        field = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{field}: {explain(err, body)}")
    return "; ".join(parts)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(request, exc.status, exc.kind, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = body_model(request.scope.get("route"))
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ())),
                   "message": explain(e, body)} for e in exc.errors()]
        return _error(request, 422, "validation", _validation_message(exc, body), errors=errors)

    @app.exception_handler(InvalidRequest)
    async def invalid_field(request: Request, exc: InvalidRequest) -> JSONResponse:
        return _error(request, 422, "validation", str(exc),
                      errors=[{"field": exc.field, "message": str(exc)}])

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(request, 404, "not_found", str(exc))

    @app.exception_handler(StoreLockedError)
    async def busy(request: Request, exc: StoreLockedError) -> JSONResponse:
        return _error(request, 503, "store_busy", str(exc), {"Retry-After": "5"})

    @app.exception_handler(ConfigError)
    async def config(request: Request, exc: ConfigError) -> JSONResponse:
        return _error(request, 422, "validation", f"{exc.key}: {exc.fix}")

    @app.exception_handler(UsageError)
    async def usage(request: Request, exc: UsageError) -> JSONResponse:
        return _error(request, 422, "validation", str(exc))  # e.g. an image for a text model

    @app.exception_handler(PipelineError)
    async def pipeline(request: Request, exc: PipelineError) -> JSONResponse:
        logger.warning("request failed: %s", exc)
        return _error(request, 503, type(exc).__name__, str(exc))


def _routes(app: FastAPI) -> None:
    """Every route: search and captions, the index, the probes, and the page."""
    guarded = [Depends(_authorized)]
    _search_routes(app, guarded)
    _index_routes(app, guarded)
    _ops_routes(app)
    _page_routes(app)
    add_docs(app)


def _search_routes(app: FastAPI, guarded: list[Any]) -> None:
    """POST /v1/search and POST /v1/caption."""

    @app.post("/v1/search", response_model=SearchResponse, dependencies=guarded,
              responses=_ERRORS, tags=["search"])
    async def search(body: SearchRequest, request: Request) -> Response:
        """Search with a text query or a base64 image; the same answer as `tessera search
        --json`: documents (best chunk each) unless `chunks`, in the mode that ran."""
        service: SearchService = request.app.state.service
        info = request.scope.setdefault("tessera", {})
        info.update(mode=body.mode, k=body.k, collection=body.collection, query=body.query)
        started = time.perf_counter()
        answer, timings = await anyio.to_thread.run_sync(service.search, body)
        startup = request.app.state.startup
        if startup.waiting_for_first_search:
            await anyio.to_thread.run_sync(startup.searched, time.perf_counter() - started)
        hits = len(answer["results"])
        info.update(hits=hits, mode=answer["mode"], collection=answer["collection"],
                    embed_ms=timings.get("embed_ms"), engine_ms=timings.get("engine_ms"))
        request.app.state.metrics.observe_search(timings, hits)
        timing = ", ".join(f"{k.removesuffix('_ms')};dur={v:.2f}" for k, v in timings.items())
        trace_id, _ = telemetry.current_ids()
        if trace_id:  # the trace of this request, for a browser's network panel or a client log
            timing += f', trace;desc="{trace_id}"'
        return JSONResponse(answer, headers={"Server-Timing": timing})

    @app.post("/v1/caption", dependencies=guarded, responses=_ERRORS, tags=["captions"])
    async def caption(body: CaptionRequest, request: Request) -> dict[str, Any]:
        """Caption base64 images with a captioner model (loaded on the first request, then
        kept), through the home's caption cache: the answer of `tessera caption --json`."""
        import base64

        from tessera.service.caption import NamedImage

        images = [NamedImage(img.name or f"image{i}", base64.b64decode(img.data))
                  for i, img in enumerate(body.images)]
        service = await anyio.to_thread.run_sync(_captioner, request.app, body.captioner)
        return await anyio.to_thread.run_sync(service.caption, images)


def _index_routes(app: FastAPI, guarded: list[Any]) -> None:
    """GET /v1/collections and GET /v1/documents/{doc_id}."""

    @app.get("/v1/collections", response_model=CollectionsResponse, dependencies=guarded,
             responses=_ERRORS, tags=["index"])
    async def collections(request: Request) -> dict[str, Any]:
        """Every collection: model, dimension, sparse config, points, aliases."""
        return await anyio.to_thread.run_sync(request.app.state.service.collections)

    @app.get("/v1/documents/{doc_id:path}", response_model=DocumentResponse,
             dependencies=guarded, responses={**_ERRORS, 404: {"model": Problem}}, tags=["index"])
    async def document(doc_id: str, request: Request,
                       collection: str | None = Query(default=None, max_length=255,
                                                      pattern=STORED_NAME_PATTERN)
                       ) -> dict[str, Any]:
        """A document's chunks, in order. Ids may hold slashes (`source/relative/path`)."""
        service: SearchService = request.app.state.service
        return await anyio.to_thread.run_sync(service.document, doc_id, collection)


def _ops_routes(app: FastAPI) -> None:
    """The probes and the metrics, open to anyone (no key, nothing about the data)."""

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up (no key needed)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        """Store open, model loaded, probe vector as at start (no key needed)."""
        result = await anyio.to_thread.run_sync(request.app.state.service.ready)
        return JSONResponse(result, status_code=200 if result["ready"] else 503)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus text format (no key needed; no query text, no keys)."""
        body = await anyio.to_thread.run_sync(generate_latest, request.app.state.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _page_routes(app: FastAPI) -> None:
    """The report page at / (and /index.html): the status view with a live search box. It is
    HTML for people, so it stays out of the API's schema."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[Depends(_page_authorized)])
    @app.get("/index.html", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[Depends(_page_authorized)])
    async def page(request: Request) -> HTMLResponse:
        """The page for this query string (`q`, `mode`, `modality`)."""
        state = request.app.state
        body = await anyio.to_thread.run_sync(live_page, state.service,
                                              dict(request.query_params), state.log)
        return HTMLResponse(body)

    # The dashboard's chart library, vendored (static/vega/README.md): the page loads it from here.
    app.mount(VEGA_PREFIX, StaticFiles(directory=VEGA_DIR), name="vega")


def _captioner(app: FastAPI, name: str | None) -> Any:
    """The caption service for this captioner, made once per app (a model load is seconds)."""
    from tessera.service.caption import DEFAULT_CAPTIONER, CaptionService

    key = name or DEFAULT_CAPTIONER
    with app.state.captioners_lock:
        if key not in app.state.captioners:
            app.state.captioners[key] = CaptionService(app.state.settings, key)
        return app.state.captioners[key]


def create_app(settings: Settings, *, auth: bool = True,
               service: SearchService | None = None) -> FastAPI:
    """The API over `settings`' store, and the report page at `/`. With `auth`, at least one
    key must be configured."""
    keys = settings.api.key_list()
    if auth and not keys:
        raise ConfigError("api.keys", None, "the search API needs at least one key: set "
                          "TESSERA_API__KEYS (comma-separated) or api.keys_block (a Prefect "
                          "Secret block); on loopback only, `tessera api --no-auth` runs without")
    telemetry.setup(settings.telemetry, role="api")
    metrics = Metrics()
    log = RequestLog(settings.events_dir, settings.api.log_queries)
    app = FastAPI(title="Tessera search", version="1", docs_url=None, redoc_url=None,
                  lifespan=_lifespan(settings, service, metrics, log),
                  description="Search the Tessera index: text or image queries, filters, "
                              "documents by id. Send `Authorization: Bearer KEY`.",
                  # Our _Observe middleware makes each request's span: FastAPI's own would put
                  # the page's query string (the search text) on it, and trace probes.
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.metrics = metrics
    app.state.startup = StartupClock(settings.events_dir, "api", log.run_id, metrics.startup)
    app.state.settings = settings
    app.state.captioners, app.state.captioners_lock = {}, threading.Lock()
    app.state.guard = KeyGuard(keys if auth else [], settings.api.rate_limit, settings.api.burst)
    app.state.log = log
    _handlers(app)
    _routes(app)
    _middleware(app, settings, metrics, log)
    return app


def _lifespan(settings: Settings, service: SearchService | None, metrics: Metrics,
              log: RequestLog) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Open the service (unless one was passed in) and warm it before the first request; flush
    request events now and then; close what was opened here at the end."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = (service if service is not None
               else await anyio.to_thread.run_sync(SearchService, settings))
        app.state.service = svc
        metrics.watch_index(lambda: {n: svc.points(n) for n in svc.reader.live.list_collections()},
                            settings.events_dir, {s.name: s.schedule for s in settings.sources},
                            settings.timezone)
        metrics.watch_cache(svc.cache_stats)
        if isinstance(svc.reader, SnapshotReader):
            metrics.watch_snapshots(svc.reader)
        await anyio.to_thread.run_sync(svc.warm)
        await anyio.to_thread.run_sync(app.state.startup.ready)

        async def flush_now_and_then() -> None:
            while True:
                await asyncio.sleep(settings.api.events_flush_seconds)
                await anyio.to_thread.run_sync(log.flush)

        flusher = asyncio.create_task(flush_now_and_then())
        try:
            yield
        finally:
            flusher.cancel()
            await anyio.to_thread.run_sync(log.flush)
            for captions in app.state.captioners.values():
                await anyio.to_thread.run_sync(captions.close)
            if service is None:
                await anyio.to_thread.run_sync(svc.close)

    return lifespan


def _middleware(app: FastAPI, settings: Settings, metrics: Metrics, log: RequestLog) -> None:
    """The ASGI layers around the routes."""
    # The last added runs first: observe, CORS, the key (from headers), then the body reader.
    app.add_middleware(BodyLimit, limit=settings.api.max_body_bytes,
                       on_reject=lambda: metrics.errors.labels("body_too_large").inc(),
                       on_busy=lambda: metrics.errors.labels("bodies_in_flight").inc())
    app.add_middleware(KeyCheck, guard=app.state.guard, router=app.router,
                       on_reject=lambda: metrics.errors.labels("unauthorized").inc())
    if settings.api.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        # Outside the key check: a browser's preflight carries no key, and a 401 needs the
        # CORS headers for the page to read it.
        app.add_middleware(CORSMiddleware, allow_origins=settings.api.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(_Observe, metrics=metrics, log=log)
