"""Traces (OpenTelemetry SDK, in-memory exporter): a search over HTTP is one trace shaped as the
request flows (the request with the search's attributes, query embedding with its queue wait
as an attribute, engine query), and the request's search_requests row carries that trace's id and the key's id; an
error answered by the service marks its span with our error kind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.core.events import read_events
from tessera.core.settings import Settings, load_settings
from tessera.service.app import create_app
from tests.support.config import write_config
from tests.support.paths import EXAMPLES
from tests.support.servers import KEY, Served
from tests.support.traces import children, exporter, finished_trace, named, trace_of


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    from tessera.ingest.run import run_ingest

    root = tmp_path_factory.mktemp("traces")
    config = write_config(root / "tessera.toml", {"home": str(root / "home"), "collection": "t"},
                          {"api": {"events_flush_seconds": 0.2}},
                          [{"name": "examples", "path": str(EXAMPLES)}])
    settings = load_settings(config)
    run_ingest(settings)
    return settings


@pytest.fixture(scope="module")
def served(indexed: Settings) -> Iterator[Served]:
    from pydantic import SecretStr

    exporter()
    settings = indexed.model_copy(update={"api": indexed.api.model_copy(
        update={"keys": SecretStr(KEY)})})
    server = Served(create_app(settings))
    yield server
    server.stop()


def _trace_id(server_timing: str) -> str:
    part = next(p for p in server_timing.split(",") if p.strip().startswith("trace;"))
    return part.split('desc="')[1].rstrip('"')


def test_a_search_over_http_is_one_trace_shaped_like_the_request(served: Served,
                                                                  indexed: Settings) -> None:
    with served.client() as client:
        answer = client.post("/v1/search", json={"query": "why do tides rise", "k": 3})
    assert answer.status_code == 200, answer.text
    trace_id = _trace_id(answer.headers["server-timing"])
    spans = finished_trace(trace_id, "POST /v1/search")
    [root] = [s for s in spans if s.parent is None]
    assert root.name == "POST /v1/search" and root.kind.name == "SERVER"
    assert root.attributes["http.route"] == "/v1/search"
    assert root.attributes["http.response.status_code"] == 200
    # The search adds its attributes to the request's span, not a span of its own.
    assert root.attributes["tessera.mode"] == "hybrid" and root.attributes["tessera.k"] == 3
    assert root.attributes["tessera.collection"].startswith("t--")
    below = {s.name: s for s in children(spans, root)}
    assert set(below) == {"embed query", "engine query"}
    engine = below["engine query"].attributes
    assert (engine["tessera.k"], engine["tessera.hits"], engine["tessera.mode"]) == (3, 3, "hybrid")
    assert engine["tessera.prefetch"] == indexed.search.prefetch
    embed = below["embed query"]
    assert children(spans, embed) == []  # the batcher's wait and model call are its attributes
    wait, model = embed.attributes["tessera.queue_wait_ms"], embed.attributes["tessera.model_ms"]
    assert wait >= 0 and model > 0 and embed.attributes["tessera.batch_size"] >= 1
    assert wait + model <= (embed.end_time - embed.start_time) / 1e6 + 1  # timed inside it
    assert all(s.start_time <= s.end_time for s in spans)
    # No query text on a span (api.log_queries is off), and never the key, on any span so far.
    assert not any("tides" in str(v) for s in spans for v in s.attributes.values())
    every = exporter().get_finished_spans()
    assert not any(KEY in s.to_json() for s in every)

    deadline = time.monotonic() + 10
    while not (rows := [r for r in read_events(indexed.events_dir, "search_requests")
                        if r["trace_id"] == trace_id]) and time.monotonic() < deadline:
        time.sleep(0.1)
    [row] = rows
    assert row["route"] == "/v1/search" and row["span_id"] == f"{root.context.span_id:016x}"
    assert row["key_id"].startswith("key-") and KEY not in row["key_id"] and len(row["key_id"]) == 12


def test_a_caller_s_traceparent_is_the_parent_of_the_request(served: Served) -> None:
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    header = f"00-{parent_trace}-00f067aa0ba902b7-01"
    with served.client() as client:
        answer = client.post("/v1/search", json={"query": "volcano", "k": 1},
                             headers={"traceparent": header})
    assert _trace_id(answer.headers["server-timing"]) == parent_trace
    [root] = named(finished_trace(parent_trace, "POST /v1/search"), "POST /v1/search")
    assert root.parent is not None and f"{root.parent.span_id:016x}" == "00f067aa0ba902b7"


def test_an_error_answer_marks_its_span_with_our_error_kind(served: Served) -> None:
    import secrets

    trace_id = secrets.token_hex(16)  # this request's own trace, whatever else the suite ran
    with served.client() as client:
        refused = client.post("/v1/search", json={"query": "x", "collection": "nope"},
                              headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    assert refused.status_code == 404
    [span] = named(finished_trace(trace_id, "POST /v1/search"), "POST /v1/search")
    assert span.attributes["http.response.status_code"] == 404
    assert span.attributes["tessera.error.kind"] == "not_found"
    assert span.status.status_code.name == "UNSET"  # a client's mistake is not a server error


def test_probes_and_scrapes_make_no_trace(served: Served) -> None:
    before = len(exporter().get_finished_spans())
    with served.client() as client:
        for path in ("/healthz", "/metrics"):
            assert client.get(path).status_code == 200
    assert not [s for s in exporter().get_finished_spans()[before:]
                if s.name.startswith("GET /")]


def test_a_failing_model_marks_the_search_span_failed(indexed: Settings, tmp_path: Path) -> None:
    """A model that raises (a broken model plug-in) fails the search's span, and the embed
    span under it, with the error's class as its kind."""
    import numpy as np

    from models import get_spec
    from models.base import EmbedStats
    from tessera.core.errors import EmbeddingError
    from tessera.service.search import SearchQuery, run_search

    class Broken:
        spec = get_spec(indexed, indexed.model)
        stats = EmbedStats()

        def embed_queries(self, texts: list[str]) -> np.ndarray:
            raise EmbeddingError("the model's weights are corrupt")

    exporter()
    with pytest.raises(EmbeddingError):
        run_search(indexed, SearchQuery(text="tides", k=1, mode="dense"), Broken())  # type: ignore[arg-type]
    embed = [s for s in exporter().get_finished_spans() if s.name == "embed query"][-1]
    assert embed.status.status_code.name == "ERROR"
    assert embed.attributes["tessera.error.kind"] == "EmbeddingError"
    search = next(s for s in trace_of(f"{embed.context.trace_id:032x}") if s.name == "search")
    assert search.status.status_code.name == "ERROR"
    assert any(e.name == "exception" for e in embed.events)


def test_cold_start_is_a_metric_and_an_event(served: Served, indexed: Settings) -> None:
    """Process start to ready, and the first search's time: `tessera_startup_seconds{phase}`
    on /metrics and a `service_starts` row each, written once however many searches follow."""
    with served.client() as client:
        for _ in range(3):
            assert client.post("/v1/search", json={"query": "tides", "k": 1}).status_code == 200
        metrics = client.get("/metrics").text
    values = {phase: float(line.split()[-1]) for line in metrics.splitlines()
              for phase in ("ready", "first_search")
              if line.startswith(f'tessera_startup_seconds{{phase="{phase}"}}')}
    assert set(values) == {"ready", "first_search"} and all(v > 0 for v in values.values())
    rows = [r for r in read_events(indexed.events_dir, "service_starts") if r["interface"] == "api"]
    assert sorted(r["phase"] for r in rows) == ["first_search", "ready"]
    assert {r["phase"]: r["seconds"] for r in rows} == pytest.approx(values)
    # Ready counts from the process's own start (a pytest process: well before this app).
    assert values["ready"] > values["first_search"]
