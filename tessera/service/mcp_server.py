"""`tessera mcp`: the index as MCP tools for agents (`search`, `get_document`), over stdio or
streamable HTTP, with the official `mcp` SDK. The tools call the same SearchService as the HTTP
API, so an agent and an app get the same results."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from pydantic import ValidationError

from tessera.core.errors import PipelineError, UsageError
from tessera.core.settings import Settings
from tessera.service.request_log import RequestLog
from tessera.service.schemas import SearchRequest
from tessera.service.server import check_port, is_loopback
from tessera.service.service import SearchService

logger = logging.getLogger(__name__)


def _tool_error(message: str) -> Exception:
    """An error the agent sees with its message (the SDK hides other exceptions' text)."""
    from mcp.server.mcpserver.exceptions import ToolError

    return ToolError(message)


def describe_index(settings: Settings, service: SearchService) -> str:
    """One paragraph for the tool descriptions: collections, their models and sizes, sources."""
    try:
        found = service.collections()
        parts = [f"{c['name']} ({c['points']} points, model {c['model']}, "
                 f"{'/'.join(c['modalities'])})" for c in found["collections"]]
        aliases = ", ".join(f"{a} -> {c}" for a, c in found["aliases"].items())
    except PipelineError as exc:
        parts, aliases = [f"unavailable right now ({exc})"], ""
    sources = ", ".join(f"{s.name} ({s.kind}, {s.modality})" for s in settings.sources)
    return (f"Collections: {'; '.join(parts) or 'none yet'}."
            + (f" Aliases: {aliases}." if aliases else "")
            + f" Default collection: {settings.collection}."
            + (f" Sources: {sources}." if sources else ""))


SEARCH_HELP = (
    "Search the index with a text `query` (or a base64 `image` for CLIP collections). "
    "Returns {results: [{doc_id, chunk_index, source, title, text, modality, uri, score}], "
    "mode, grouped, collection, warning}: documents (best chunk each) best first, or chunks "
    "with chunks=true. Optional: k (1-100), mode (dense|sparse|hybrid), collection (name or "
    "alias), source, modality (text|image), equals {doc_id: ...}, ranges "
    "{expires_at: {gte, lte}}, with_text, chunks. ")
DOCUMENT_HELP = ("All chunks of one document, in order, by its doc_id (as search returned it, e.g. "
                 "'docs/guides/setup.md'). ")


def build_mcp(settings: Settings, service: SearchService, log: RequestLog | None = None) -> Any:
    """An MCPServer with the `search` and `get_document` tools over `service`."""
    from mcp.server.mcpserver import MCPServer

    index = describe_index(settings, service)
    server = MCPServer("tessera", instructions=f"Search the Tessera vector index. {index}")
    server.add_tool(_search_tool(service, log), name="search", description=SEARCH_HELP + index)
    server.add_tool(_document_tool(service), name="get_document",
                    description=DOCUMENT_HELP + index)
    return server


def _record(log: RequestLog | None, status: int, start: float, **info: Any) -> None:
    """A tool call as a request event (interface `mcp`), flushed at once."""
    if log is not None and log.add(interface="mcp", route="tool/search", status=status,
                                   latency_ms=(time.perf_counter() - start) * 1000, **info):
        log.flush()


def _search_tool(service: SearchService, log: RequestLog | None) -> Any:
    """The `search` tool: its parameters are the HTTP API's request fields, filters flattened."""

    async def search(query: str | None = None, image: str | None = None, k: int = 5,
                     mode: str | None = None, collection: str | None = None,
                     source: str | None = None, modality: str | None = None,
                     equals: dict[str, str | int | bool] | None = None,
                     ranges: dict[str, dict[str, float]] | None = None,
                     with_text: bool = True, chunks: bool = False) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            req = SearchRequest.model_validate({
                "query": query, "image": image, "k": k, "mode": mode, "collection": collection,
                "filters": {"source": source, "modality": modality, "equals": equals or {},
                            "ranges": ranges or {}},
                "with_text": with_text, "chunks": chunks})
        except ValidationError as exc:
            _record(log, 422, start, k=k, mode=mode, collection=collection, query=query)
            raise _tool_error("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                       for e in exc.errors())) from None
        try:
            answer, timings = await anyio.to_thread.run_sync(service.search, req)
        except PipelineError as exc:
            _record(log, 500, start, k=k, mode=mode, collection=collection, query=query)
            raise _tool_error(str(exc)) from None
        _record(log, 200, start, k=k, mode=answer["mode"], collection=answer["collection"],
                query=query, hits=len(answer["results"]), embed_ms=timings.get("embed_ms"),
                engine_ms=timings.get("engine_ms"))
        return answer

    return search


def _document_tool(service: SearchService) -> Any:
    """The `get_document` tool."""

    async def get_document(doc_id: str, collection: str | None = None) -> dict[str, Any]:
        try:
            return await anyio.to_thread.run_sync(service.document, doc_id, collection)
        except PipelineError as exc:
            raise _tool_error(str(exc)) from None

    return get_document


def serve_mcp(settings: Settings, transport: str, host: str = "127.0.0.1",
              port: int = 8001) -> None:
    """Serve the MCP tools until the client hangs up (stdio) or the process is stopped (http)."""
    if transport == "http":
        if not is_loopback(host):
            raise UsageError(f"the MCP server has no keys of its own; serve it on loopback only "
                             f"(not {host}) and let agents reach it there, or use the HTTP API")
        check_port(host, port)
    service = SearchService(settings)
    log = RequestLog(settings.events_dir, settings.api.log_queries)
    try:
        service.warm()
        server = build_mcp(settings, service, log)
        if transport == "http":
            server.run("streamable-http", host=host, port=port)
        else:
            server.run("stdio")
    finally:
        log.flush()
        service.close()
