"""The MCP tools' functions. Their parameters are the HTTP API's request models (schemas.py) with
the filters flattened, so an agent sees the same enums, bounds and descriptions as /docs, and the
SDK checks them before a tool runs; their return types are the API's response models, which the
SDK publishes as the tools' output schemas."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo

from tessera.core import telemetry
from tessera.core.errors import PipelineError
from tessera.service.request_log import RequestLog
from tessera.service.schemas import DocumentResponse, Filters, SearchRequest, SearchResponse
from tessera.service.service import SearchService
from tessera.service.startup import StartupClock

# Flat tool arguments that go under the request's `filters`: agents fill flat arguments more
# reliably than nested objects.
FILTER_FIELDS = tuple(Filters.model_fields)
ToolFn = Callable[..., Coroutine[Any, Any, dict[str, Any]]]


def search_parameters(max_k: int) -> list[inspect.Parameter]:
    """SearchRequest's fields, then Filters', each with its type, constraints, default and
    description; `k` also capped at api.max_k (the service refuses more)."""
    fields = {n: f for n, f in SearchRequest.model_fields.items() if n != "filters"}
    fields.update(Filters.model_fields)
    return [_parameter(name, info, [Field(le=max_k)] if name == "k" else [])
            for name, info in fields.items()]


def _parameter(name: str, info: FieldInfo, more: list[Any] | None = None) -> inspect.Parameter:
    """A keyword parameter typed, constrained, described and defaulted as a model's field."""
    metadata = (*info.metadata, *(more or []), Field(description=info.description))
    annotation = Annotated[(info.annotation, *metadata)]  # type: ignore[name-defined,valid-type]
    default = (info.get_default(call_default_factory=True) if not info.is_required()
               else inspect.Parameter.empty)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=default)


def _typed(fn: ToolFn, params: list[inspect.Parameter], returns: type) -> ToolFn:
    """`fn` (taking **arguments) with `params` as its signature: the SDK builds the tool's input
    schema from the signature, and its output schema from `returns`."""
    fn.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in params} | {"return": returns}
    return fn


def validation_message(exc: ValidationError) -> str:
    """`field: problem; ...`, as the API's 422 words it."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])


def record(log: RequestLog | None, status: int, start: float, **info: Any) -> None:
    """A tool call as a request event (interface `mcp`), flushed at once."""
    if log is not None and log.add(interface="mcp", route="tool/search", status=status,
                                   latency_ms=(time.perf_counter() - start) * 1000, **info):
        log.flush()


def search_tool(service: SearchService, log: RequestLog | None,
                startup: StartupClock | None = None) -> ToolFn:
    """The `search` tool: the API's search, its filters flattened into arguments; its first
    answered search is the server's first-search time (`startup`)."""
    signature = inspect.Signature(search_parameters(service.settings.api.max_k))

    async def search(**given: Any) -> dict[str, Any]:
        with telemetry.span("tool search", server=True, **{"mcp.tool": "search"}):
            return await answer(**given)

    async def answer(**given: Any) -> dict[str, Any]:
        start = time.perf_counter()
        bound = signature.bind(**given)  # the SDK passes every argument; a direct call need not
        bound.apply_defaults()
        arguments = bound.arguments
        body = {k: v for k, v in arguments.items() if k not in FILTER_FIELDS}
        body["filters"] = {k: arguments[k] for k in FILTER_FIELDS}
        # No mode until a search ran: a refused "hybird" is not a mode the marts should count.
        seen = {"k": arguments["k"], "collection": arguments["collection"],
                "query": arguments["query"]}
        try:
            req = SearchRequest.model_validate(body)
        except ValidationError as exc:  # what no schema can say: query or image, base64, fields
            telemetry.mark_error("validation", validation_message(exc), failed=False)
            record(log, 422, start, **seen)
            raise ToolError(validation_message(exc)) from None
        try:
            found, timings = await anyio.to_thread.run_sync(service.search, req)
        except PipelineError as exc:
            telemetry.mark_error(type(exc).__name__, str(exc))
            record(log, 500, start, **seen)
            raise ToolError(str(exc)) from None
        seen.update(collection=found["collection"])
        if startup is not None and startup.waiting_for_first_search:
            await anyio.to_thread.run_sync(startup.searched, time.perf_counter() - start)
        record(log, 200, start, **seen, mode=found["mode"], hits=len(found["results"]),
               embed_ms=timings.get("embed_ms"), engine_ms=timings.get("engine_ms"))
        return found

    return _typed(search, list(signature.parameters.values()), SearchResponse)


DOCUMENT_PARAMETERS = [
    _parameter("doc_id", FieldInfo.from_annotation(Annotated[str, Field(  # type: ignore[arg-type]
        min_length=1, max_length=4096,
        description="the document's doc_id, as search returned it (e.g. 'docs/guides/setup.md')")])),
    _parameter("collection", SearchRequest.model_fields["collection"]),
]


def document_tool(service: SearchService) -> ToolFn:
    """The `get_document` tool: a document's chunks in order."""

    async def get_document(**arguments: Any) -> dict[str, Any]:
        try:
            return await anyio.to_thread.run_sync(service.document, arguments["doc_id"],
                                                  arguments["collection"])
        except PipelineError as exc:
            raise ToolError(str(exc)) from None

    return _typed(get_document, DOCUMENT_PARAMETERS, DocumentResponse)
