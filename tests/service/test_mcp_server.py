"""`tessera mcp` over stdio, driven by the MCP SDK's own client."""

from __future__ import annotations

import json
import os
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from tessera.core.settings import load_settings
from tessera.ingest.run import run_ingest
from tessera.service.search import search as search_fn
from tests.support.config import write_config
from tests.support.paths import EXAMPLES, REPO


def _payload(result: Any) -> dict[str, Any]:
    if result.structured_content is not None:
        return dict(result.structured_content)
    return dict(json.loads(result.content[0].text))


def test_mcp_lists_tools_and_searches_over_stdio(tmp_path: Path) -> None:
    from mcp import Client, StdioServerParameters

    corpus = tmp_path / "corpus"
    shutil.copytree(EXAMPLES, corpus)
    config = write_config(tmp_path / "tessera.toml", {"home": str(tmp_path / "home"),
                                                      "collection": "test"},
                          {"embedding": {"runtime": "torch", "device": "cpu"}},
                          [{"name": "docs", "path": str(corpus), "ttl": "7d"}])
    settings = load_settings(config)
    run_ingest(settings)
    expected = [h["doc_id"] for h in search_fn(settings, query="volcanic eruptions", k=3)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update(PYTHONPATH=str(REPO), TESSERA_CONFIG=str(config))
    params = StdioServerParameters(command=sys.executable, args=["-m", "tessera.cli.main", "mcp"],
                                   env=env, cwd=str(tmp_path))

    async def session() -> tuple[Any, Any, Any, Any]:
        async with Client(params, read_timeout_seconds=180) as client:
            tools = await client.list_tools()
            found = await client.call_tool("search", {"query": "volcanic eruptions", "k": 3})
            bad = await client.call_tool("search", {"query": "x", "k": 0})
            doc = await client.call_tool("get_document", {"doc_id": expected[0]})
            return tools, found, bad, doc

    tools, found, bad, doc = anyio.run(session)

    by_name = {t.name: t for t in tools.tools}
    assert set(by_name) == {"search", "get_document"}
    description = by_name["search"].description or ""
    # The collection lives behind its alias: both are named, so an agent can use either.
    assert "test--all-minilm-l6-v2-" in description and "Aliases: test -> test--" in description
    assert "all-MiniLM-L6-v2" in description and "Sources: docs" in description
    assert {"query", "k", "mode", "collection", "source"} <= set(by_name["search"].input_schema[
        "properties"])
    assert not found.is_error
    assert [h["doc_id"] for h in _payload(found)["results"]] == expected
    assert bad.is_error and "k" in bad.content[0].text
    assert _payload(doc)["doc_id"] == expected[0] and _payload(doc)["chunks"]
    rows = [r for r in _read(settings.events_dir) if r["interface"] == "mcp"]
    assert {r["status"] for r in rows} == {200, 422} and all(r["query"] is None for r in rows)
    # Cold start: ready once the server could answer, then its first answered search.
    from tessera.core.events import read_events

    starts = read_events(settings.events_dir, "service_starts")
    assert sorted((r["interface"], r["phase"]) for r in starts) == [
        ("mcp", "first_search"), ("mcp", "ready")]
    assert {r["run_id"] for r in starts} == {r["run_id"] for r in rows}  # the same process
    assert all(r["seconds"] > 0 for r in starts)


def test_a_rejected_mode_is_recorded_without_a_mode(make_config: Any) -> None:
    """A tool call with `mode: "hybird"` is refused (422) and its event carries no mode, so the
    marts never see a `hybird` row: only a search that ran has a mode."""
    from mcp.server.mcpserver.exceptions import ToolError

    from tessera.service.mcp_tools import search_tool
    from tessera.service.request_log import RequestLog
    from tessera.service.service import SearchService

    settings = load_settings(make_config())
    log = RequestLog(settings.events_dir)
    search = search_tool(SearchService(settings), log)
    with pytest.raises(ToolError, match="mode"):
        anyio.run(partial(search, query="tides", mode="hybird"))
    assert log.flush() == 1
    [row] = _read(settings.events_dir)
    assert (row["status"], row["mode"], row["route"]) == (422, None, "tool/search")


def _enum(prop: dict[str, Any]) -> list[Any]:
    """The values an optional enum allows (pydantic writes `anyOf: [{enum}, {null}]`)."""
    return [v for arm in prop.get("anyOf", [prop]) for v in arm.get("enum", [])]


def _in_process(settings: Any, call: Any) -> Any:
    """`call(client)` with the SDK's client connected in-process to our server over `settings`."""
    from mcp import Client

    from tessera.service.mcp_server import build_mcp
    from tessera.service.request_log import RequestLog
    from tessera.service.service import SearchService

    service = SearchService(settings)
    log = RequestLog(settings.events_dir)
    try:
        server = build_mcp(settings, service, log)

        async def session() -> Any:
            async with Client(server) as client:
                return await call(client)

        return anyio.run(session)
    finally:
        log.flush()
        service.close()


def test_the_search_tool_takes_the_api_request_schema(make_config: Any) -> None:
    """`search`'s input schema is the API's SearchRequest: enums for mode and modality, k bounded
    by api.max_k, a description on every parameter. Both tools say they only read, and are
    idempotent; their output schemas are the API's response models; the server has a version."""
    from importlib.metadata import version

    settings = load_settings(make_config(api={"max_k": 40}))

    async def call(client: Any) -> tuple[Any, Any]:
        return client.server_info, (await client.list_tools()).tools

    info, tools = _in_process(settings, call)

    by_name = {t.name: t for t in tools}
    props = by_name["search"].input_schema["properties"]
    assert set(props) == {"query", "image", "k", "mode", "collection", "with_text", "chunks",
                          "source", "modality", "equals", "ranges"}
    assert _enum(props["mode"]) == ["dense", "sparse", "hybrid"]
    assert _enum(props["modality"]) == ["text", "image"]
    assert (props["k"]["minimum"], props["k"]["maximum"], props["k"]["default"]) == (1, 40, 5)
    assert "pattern" in str(props["collection"]) and "Range" in str(props["ranges"])
    for tool in tools:
        assert [n for n, p in tool.input_schema["properties"].items()
                if not p.get("description")] == [], tool.name
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
        assert tool.annotations.idempotent_hint is True
        assert tool.annotations.destructive_hint is False
    assert by_name["get_document"].input_schema["required"] == ["doc_id"]
    out = by_name["search"].output_schema
    assert out is not None and {"results", "mode", "grouped", "collection"} <= set(out["properties"])
    assert "score" in out["$defs"]["Hit"]["properties"]
    document = by_name["get_document"].output_schema
    assert document is not None and "chunks" in document["properties"]
    assert info is not None and info.name == "tessera" and info.version == version("tessera")
    assert info.version


def test_arguments_the_schema_refuses_are_worded_and_counted(make_config: Any) -> None:
    """A k over api.max_k, an unknown mode, a misspelt argument: each refused before any search
    (no model loads), worded `field: problem` (with a did-you-mean for the argument), and
    recorded as a rejected request without a mode."""
    settings = load_settings(make_config(api={"max_k": 40}))

    async def call(client: Any) -> list[Any]:
        return [await client.call_tool("search", args) for args in (
            {"query": "tides", "k": 41}, {"query": "tides", "mode": "hybird"},
            {"querry": "tides"})]

    over, mode, typo = _in_process(settings, call)

    assert all(r.is_error for r in (over, mode, typo))
    assert over.content[0].text == "k: Input should be less than or equal to 40"
    assert mode.content[0].text.startswith("mode: Input should be 'dense', 'sparse' or 'hybrid'")
    assert "querry" in typo.content[0].text and "did you mean 'query'" in typo.content[0].text
    rows = _read(settings.events_dir)
    assert [(r["status"], r["mode"]) for r in rows] == [(422, None)] * 3
    assert sorted(r["k"] or 0 for r in rows) == [0, 0, 41]


def test_collections_are_resources_and_ad_hoc_sources_are_named(make_config: Any,
                                                                tmp_path: Path) -> None:
    """After an ingest of a declared source and one of a path (`tessera ingest PATH`), the
    instructions name both sources, and each collection is a resource under the name users
    type (its alias) with its model, point count, sources and when it was last written."""
    from tessera.ingest.selection import adhoc_name

    docs, notes = tmp_path / "docs", tmp_path / "notes"
    for folder, text in ((docs, "Volcanoes erupt molten rock."), (notes, "Tides follow the moon.")):
        folder.mkdir()
        (folder / "a.md").write_text(f"# {folder.name}\n\n{text}\n")
    settings = load_settings(make_config(sources=[{"name": "docs", "path": str(docs)}],
                                         embedding={"runtime": "torch", "device": "cpu"}))
    run_ingest(settings)
    run_ingest(settings, path=str(notes))
    adhoc = adhoc_name(notes.resolve())

    async def call(client: Any) -> tuple[Any, Any, Any, Any]:
        listed = await client.list_resources()
        one = await client.read_resource("tessera://collections/test")
        every = await client.read_resource("tessera://collections")
        return client.instructions, listed, one, every

    instructions, listed, one, every = _in_process(settings, call)

    assert f"Sources: docs (directory, text), {adhoc} (ad-hoc" in (instructions or "")
    assert {str(r.uri) for r in listed.resources} == {"tessera://collections",
                                                     "tessera://collections/test"}
    card = json.loads(one.contents[0].text)
    assert card["name"] == "test" and card["aliases"] == ["test"]
    assert card["collection"].startswith("test--all-minilm-l6-v2-")
    assert card["model"] == "sentence-transformers/all-MiniLM-L6-v2" and card["points"] == 2
    assert card["sources"] == sorted(["docs", adhoc]) and card["last_written"]
    assert 0 <= card["seconds_since_written"] < 600
    assert json.loads(every.contents[0].text) == [card]


def _read(events_dir: Path) -> list[dict[str, Any]]:
    from tessera.core.events import read_events

    return read_events(events_dir, "search_requests")


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_a_tool_call_is_one_trace_with_the_search_under_it(make_config: Any) -> None:
    """The `search` tool is a server span (`tool search`) carrying the search's attributes, with
    the query embedding and the engine query as its children; its request row has its trace."""
    from tessera.service.mcp_tools import search_tool
    from tessera.service.request_log import RequestLog
    from tessera.service.service import SearchService
    from tests.support.traces import children, exporter, trace_of

    settings = load_settings(make_config(
        sources=[{"name": "docs", "path": str(EXAMPLES), "ttl": "7d"}],
        embedding={"runtime": "torch", "device": "cpu"}))
    run_ingest(settings)
    log = RequestLog(settings.events_dir)
    search = search_tool(SearchService(settings), log)
    exporter()
    found = anyio.run(partial(search, query="tides", k=2))
    assert len(found["results"]) == 2
    log.flush()
    [row] = _read(settings.events_dir)
    spans = trace_of(row["trace_id"])
    [tool] = [s for s in spans if s.parent is None]
    assert tool.name == "tool search" and tool.kind.name == "SERVER"
    assert (tool.attributes["tessera.k"], tool.attributes["mcp.tool"]) == (2, "search")
    assert tool.attributes["tessera.mode"] == found["mode"]
    assert {s.name for s in children(spans, tool)} == {"embed query", "engine query"}
