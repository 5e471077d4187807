"""`tessera mcp`: the index as MCP tools for agents (`search`, `get_document`) and its collections
as resources, over stdio or streamable HTTP, with the official `mcp` SDK. The tools call the same
SearchService as the HTTP API and take its request models (mcp_tools.py), so an agent and an app
get the same results, the same checks and the same schema."""

from __future__ import annotations

import difflib
import logging
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.resources import FunctionResource
from mcp.types import ToolAnnotations
from pydantic import ValidationError

import tessera
from tessera.core import telemetry
from tessera.core.errors import PipelineError, UsageError
from tessera.core.settings import Settings
from tessera.service.catalog import adhoc_sources, collection_cards, written
from tessera.service.mcp_tools import (
    DOCUMENT_PARAMETERS,
    document_tool,
    record,
    search_parameters,
    search_tool,
    validation_message,
)
from tessera.service.request_log import RequestLog
from tessera.service.server import check_port, is_loopback
from tessera.service.service import SearchService
from tessera.service.startup import StartupClock

logger = logging.getLogger(__name__)

# Both tools only read the index: a client may run them without asking and retry them freely.
READ_ONLY = {"readOnlyHint": True, "idempotentHint": True, "destructiveHint": False,
             "openWorldHint": False}


def tessera_version() -> str:
    """Tessera's version, which the server reports in `initialize`."""
    return tessera.__version__


def describe_index(settings: Settings, found: dict[str, Any] | PipelineError,
                   history: dict[str, dict[str, Any]]) -> str:
    """One paragraph for the instructions and tool descriptions: collections, their models and
    sizes, and the sources, declared and ad-hoc (`tessera ingest PATH`, known from the runs)."""
    if isinstance(found, PipelineError):
        parts, aliases = [f"unavailable right now ({found})"], ""
    else:
        parts = [f"{c['name']} ({c['points']} points, model {c['model']}, "
                 f"{'/'.join(c['modalities'])})" for c in found["collections"]]
        aliases = ", ".join(f"{a} -> {c}" for a, c in found["aliases"].items())
    sources = [f"{s.name} ({s.kind}, {s.modality})" for s in settings.sources]
    sources += [f"{n} (ad-hoc, from `tessera ingest PATH`)" for n in adhoc_sources(history, settings)]
    return (f"Collections: {'; '.join(parts) or 'none yet'}."
            + (f" Aliases: {aliases}." if aliases else "")
            + f" Default collection: {settings.collection}."
            + (f" Sources: {', '.join(sources)}." if sources else ""))


SEARCH_HELP = (
    "Search the index with a text `query` (or a base64 `image` for CLIP collections): documents "
    "(best chunk each) best first, or chunks with chunks=true. Each argument is described in the "
    "input schema; `collection` takes the names and aliases below, `source` the sources. ")
DOCUMENT_HELP = "All chunks of one document, in order, by its doc_id (as search returned it). "


def build_mcp(settings: Settings, service: SearchService, log: RequestLog | None = None,
              startup: StartupClock | None = None) -> MCPServer:
    """An MCP server with the `search` and `get_document` tools over `service`, and each
    collection as a resource."""
    telemetry.setup(settings.telemetry, role="mcp")
    history = written(settings.events_dir)
    try:
        found: dict[str, Any] | PipelineError = service.collections()
    except PipelineError as exc:
        found = exc
    index = describe_index(settings, found, history)
    server = _Server("tessera", version=tessera_version(), log=log,
                     instructions=f"Search the Tessera vector index. {index}")
    server.add_tool(search_tool(service, log, startup), name="search", title="Search the index",
                    description=SEARCH_HELP + index, structured_output=True,
                    annotations=ToolAnnotations.model_validate(
                        {**READ_ONLY, "title": "Search the index"}))
    server.add_tool(document_tool(service), name="get_document", title="Read one document",
                    description=DOCUMENT_HELP + index, structured_output=True,
                    annotations=ToolAnnotations.model_validate(
                        {**READ_ONLY, "title": "Read one document"}))
    _add_collections(server, settings, service,
                     [] if isinstance(found, PipelineError) else collection_cards(
                         found, history, datetime.now(UTC)))
    return server


class _Server(MCPServer):
    """The SDK's server, with argument errors worded as the API words them. The SDK checks the
    arguments against the input schema before a tool runs, so a `search` it refuses is also
    counted here, as the rejected request it is; an unknown argument is refused, not dropped."""

    def __init__(self, *args: Any, log: RequestLog | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request_log = log
        self.takes = {"search": [p.name for p in search_parameters(1)],
                      "get_document": [p.name for p in DOCUMENT_PARAMETERS]}

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        """Run a tool; a refusal of its arguments as `field: problem`."""
        start = time.perf_counter()
        try:
            _known_arguments(name, arguments, self.takes.get(name))
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ValidationError | _UnknownArgument):
                raise
            if name == "search":
                k, query, collection = (arguments.get(f) for f in ("k", "query", "collection"))
                record(self.request_log, 422, start,
                       k=k if isinstance(k, int) and not isinstance(k, bool) else None,
                       query=query if isinstance(query, str) else None,
                       collection=collection if isinstance(collection, str) else None)
            message = validation_message(cause) if isinstance(cause, ValidationError) else str(cause)
            raise ToolError(message) from None


class _UnknownArgument(Exception):
    """An argument the tool does not take."""


def _known_arguments(name: str, arguments: dict[str, Any], takes: list[str] | None) -> None:
    """Refuse an argument the tool does not take (the SDK would drop it: `querry` would search
    for nothing), with the closest one it does take."""
    for given in sorted(set(arguments) - set(takes or arguments)):
        close = difflib.get_close_matches(given, takes or [], n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problem = _UnknownArgument(f"{given}: {name} takes no argument {given!r}{hint}; it takes "
                                   f"{', '.join(takes or [])}")
        raise ToolError(str(problem)) from problem


def _add_collections(server: MCPServer, settings: Settings, service: SearchService,
                     listed: list[dict[str, Any]]) -> None:
    """`tessera://collections` (every collection) and `tessera://collections/<name>` for each one
    (by its alias where it has one). Read when a client reads them: counts and freshness are
    current; the list of resources is the one at start."""
    cards = partial(_cards, settings, service)
    server.add_resource(FunctionResource(
        uri="tessera://collections", name="collections", title="Collections",
        mime_type="application/json", fn=cards,
        description="Every collection: the name to search (alias first), model, points, the "
                    "sources that wrote it, when it was last written"))
    for card in listed:
        server.add_resource(FunctionResource(
            uri=f"tessera://collections/{card['name']}", name=card["name"],
            title=f"Collection {card['name']}", mime_type="application/json",
            fn=partial(_card, cards, card["name"]),
            description=f"{card['collection']}: model {card['model']}, "
                        f"{'/'.join(card['modalities'])}; points, sources and freshness"))


def _cards(settings: Settings, service: SearchService) -> list[dict[str, Any]]:
    """Every collection's card, as of now."""
    try:
        found = service.collections()
    except PipelineError as exc:
        raise ResourceError(str(exc)) from None
    return collection_cards(found, written(settings.events_dir), datetime.now(UTC))


def _card(cards: Any, name: str) -> dict[str, Any]:
    """The card of the collection (or alias) `name`, as of now."""
    for card in cards():
        if name in (card["name"], card["collection"], *card["aliases"]):
            return dict(card)
    raise ResourceError(f"no collection {name!r} any more; read tessera://collections")


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
        startup = StartupClock(settings.events_dir, "mcp", log.run_id)
        server = build_mcp(settings, service, log, startup)
        startup.ready()
        if transport == "http":
            server.run("streamable-http", host=host, port=port)
        else:
            server.run("stdio")
    finally:
        log.flush()
        service.close()
