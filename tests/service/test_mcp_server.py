"""`tessera mcp` over stdio, driven by the MCP SDK's own client."""

from __future__ import annotations

import json
import os
import shutil
import sys
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


def _read(events_dir: Path) -> list[dict[str, Any]]:
    from tessera.core.events import read_events

    return read_events(events_dir, "search_requests")


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
