"""The search service over a real uvicorn server on a free loopback port: every route, keys,
limits, metrics, events, and ids that are paths."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tessera.core.events import read_events
from tessera.core.settings import Settings, load_settings
from tessera.ingest.run import run_ingest
from tessera.service.app import create_app
from tessera.service.search import SearchQuery, run_search
from tessera.service.search import search as search_fn
from tessera.service.service import SearchService
from tests.support.servers import KEY, Served, free_port

OTHER_KEY = "tk-live-second-key-77"
NESTED_ID_PART = "guides/deep dive/setup notes.md"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def logs() -> Iterator[_Capture]:
    capture = _Capture()
    root = logging.getLogger()
    old = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    root.setLevel(old)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The sample corpus plus a nested file, ingested once (torch runtime: the shared model)."""
    import shutil

    from tests.support.config import write_config
    from tests.support.paths import EXAMPLES

    base = tmp_path_factory.mktemp("api")
    corpus = base / "corpus"
    shutil.copytree(EXAMPLES, corpus)
    nested = corpus / NESTED_ID_PART
    nested.parent.mkdir(parents=True)
    nested.write_text("# Setup notes\n\n" + " ".join(
        f"Step {i}: tighten bolt number {i} on the turbine housing." for i in range(400)))
    config = write_config(base / "tessera.toml", {"home": str(base / "home"), "collection": "test"},
                          {"embedding": {"runtime": "torch", "device": "cpu"}},
                          [{"name": "docs", "path": str(corpus), "ttl": "7d"}])
    settings = load_settings(config)
    run_ingest(settings)
    return settings


def _with(settings: Settings, **api: Any) -> Settings:
    return settings.model_copy(update={"api": settings.api.model_copy(update=api)})


@pytest.fixture(scope="module")
def service(indexed: Settings) -> Iterator[SearchService]:
    svc = SearchService(indexed)
    svc.warm()
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def served(indexed: Settings, service: SearchService, logs: _Capture) -> Iterator[Served]:
    from pydantic import SecretStr

    settings = _with(indexed, keys=SecretStr(f"{KEY}, {OTHER_KEY}"), rate_limit=1000.0,
                     burst=1000, events_flush_seconds=0.2)
    server = Served(create_app(settings, service=service))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def limited(indexed: Settings, service: SearchService) -> Iterator[Served]:
    """The same service behind tight limits: 2 requests per burst, 0.2/s, 1 KiB bodies."""
    from pydantic import SecretStr

    settings = _with(indexed, keys=SecretStr(KEY), rate_limit=0.2, burst=2, max_body_bytes=1024)
    server = Served(create_app(settings, service=service))
    yield server
    server.stop()


def _search(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/v1/search", json=body)


@pytest.mark.parametrize(("mode", "chunks"), [(None, False), ("dense", False), ("sparse", True),
                                              ("hybrid", True)])
def test_search_answers_like_the_cli(served: Served, indexed: Settings, mode: str | None,
                                     chunks: bool) -> None:
    text = "what happens to the ocean at high tide"
    with served.client() as client:
        response = _search(client, query=text, k=3, mode=mode, chunks=chunks)
    assert response.status_code == 200, response.text
    body = response.json()
    cli = run_search(indexed, SearchQuery(text=text, k=3, mode=mode, chunks=chunks))
    assert body == cli  # the same answer as `tessera search --json`, scores included
    assert body["mode"] == (mode or indexed.search.mode) and body["grouped"] is not chunks
    assert body["results"][0]["doc_id"].endswith("tides.txt")
    assert "embed;dur=" in response.headers["server-timing"]


def test_filters_narrow_the_hits(served: Served, indexed: Settings) -> None:
    target = next(r["doc_id"] for r in search_fn(indexed, query="volcano", k=1))
    with served.client() as client:
        only = _search(client, query="ocean tides", k=5, filters={"equals": {"doc_id": target}})
        past = _search(client, query="ocean tides", k=5,
                       filters={"ranges": {"expires_at": {"lte": 1000}}})
        future = _search(client, query="ocean tides", k=5, filters={
            "source": "docs", "modality": "text", "ranges": {"expires_at": {"gte": time.time()}}})
        nosource = _search(client, query="ocean tides", filters={"source": "nope"})
        no_text = _search(client, query="ocean tides", k=2, with_text=False)
    assert {r["doc_id"] for r in only.json()["results"]} == {target}
    assert past.json()["results"] == []
    assert nosource.status_code == 422  # a source the index lacks is refused, as the CLI does
    assert len(future.json()["results"]) == 5
    assert no_text.json()["results"] and all("text" not in r for r in no_text.json()["results"])


@pytest.mark.parametrize(("body", "field"), [
    ({"query": "x", "k": 0}, "k"),
    ({"query": "x", "k": 101}, "k"),
    ({"query": "x", "image": "aGVsbG8="}, "body"),
    ({}, "body"),
    ({"query": ""}, "query"),
    ({"image": "not base64!"}, "image"),
    ({"query": "x", "mode": "magic"}, "mode"),
    ({"query": "x", "filters": {"equals": {"title": "t"}}}, "filters.equals"),
    ({"query": "x", "filters": {"ranges": {"expires_at": {"gte": 5, "lte": 1}}}},
     "filters.ranges"),
    ({"query": "x", "colour": "red"}, "colour"),
    ({"query": "x", "collection": "team/docs"}, "collection"),
])
def test_invalid_fields_get_422_naming_the_field(served: Served, body: dict[str, Any],
                                                  field: str) -> None:
    with served.client() as client:
        response = _search(client, **body)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]


def test_image_query_on_a_text_collection_is_refused(served: Served) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(64)).decode()
    with served.client() as client:
        response = _search(client, image=png)
    assert response.status_code == 422 and "image" in response.json()["detail"]


def test_unknown_collection_is_404_and_builds_no_path(served: Served) -> None:
    with served.client() as client:
        response = _search(client, query="x", collection="nope")
        assert response.status_code == 404
        assert "no collection or alias" in response.json()["detail"]
        # A name no collection can have is refused before any lookup, naming the pattern.
        for name in ("../home", "/etc", ".writers"):
            for response in (_search(client, query="x", collection=name),
                             client.get("/v1/documents/docs/tides.txt",
                                        params={"collection": name})):
                assert response.status_code == 422, (name, response.text)
                detail = response.json()["detail"]
                assert "collection" in detail and "[A-Za-z0-9][A-Za-z0-9_.-]" in detail


def test_unknown_source_is_422_naming_the_sources_with_a_did_you_mean(served: Served) -> None:
    with served.client() as client:
        typo = _search(client, query="ocean tides", filters={"source": "doc"})
        # A source the index holds stays a 200, even when the other filters leave nothing.
        empty = _search(client, query="ocean tides", filters={
            "source": "docs", "ranges": {"expires_at": {"lte": 1000}}})
    assert typo.status_code == 422, typo.text
    detail = typo.json()["detail"]
    assert detail.startswith("filters.source: 'doc'") and "(did you mean 'docs'?)" in detail
    assert detail.endswith("known sources: docs")
    assert typo.json()["errors"] == [{"field": "filters.source", "message": detail}]
    assert empty.status_code == 200 and empty.json()["results"] == []


def test_unknown_collection_lists_aliases_first_with_a_did_you_mean(served: Served) -> None:
    with served.client() as client:
        search = _search(client, query="x", collection="tset")
        document = client.get("/v1/documents/docs/tides.txt", params={"collection": "tset"})
    assert search.status_code == document.status_code == 404
    detail = search.json()["detail"]
    assert detail == document.json()["detail"]
    assert detail == "no collection or alias 'tset' (did you mean 'test'?); aliases: test"
    assert "--" not in detail  # the versioned collection behind the alias is not offered


@pytest.mark.parametrize(("body", "field", "meant"), [
    ({"querry": "tides"}, "querry", "query"),
    ({"query": "x", "filters": {"sourc": "docs"}}, "filters.sourc", "source"),
    ({"query": "x", "filters": {"ranges": {"expires_at": {"gtee": 1}}}},
     "filters.ranges.expires_at.gtee", "gte"),
])
def test_an_unknown_field_gets_a_did_you_mean(served: Served, body: dict[str, Any], field: str,
                                              meant: str) -> None:
    with served.client() as client:
        response = _search(client, **body)
    assert response.status_code == 422, response.text
    hint = f"{field}: unknown field (did you mean {meant!r}?); fields here: "
    assert hint in response.json()["detail"]
    (error,) = [e for e in response.json()["errors"] if e["field"] == f"body.{field}"]
    assert error["message"].startswith(f"unknown field (did you mean {meant!r}?)")


def test_keys(served: Served) -> None:
    with served.client(key=None) as none, served.client(key="tk-wrong") as wrong, \
            served.client(key=OTHER_KEY) as second:
        missing = _search(none, query="x")
        bad = _search(wrong, query="x")
        basic = none.post("/v1/search", json={"query": "x"}, headers={"Authorization": KEY})
        ok = _search(second, query="x")
        for path in ("/v1/collections", f"/v1/documents/{quote('docs/tides.txt')}"):
            assert none.get(path).status_code == 401
        open_routes = [none.get(p).status_code for p in ("/healthz", "/readyz", "/metrics",
                                                          "/docs", "/openapi.json")]
    assert missing.status_code == bad.status_code == basic.status_code == 401
    assert missing.json() == bad.json() == basic.json()
    assert missing.headers["www-authenticate"] == "Bearer"
    assert ok.status_code == 200
    assert open_routes == [200, 200, 200, 200, 200]


def test_rate_limit_answers_429_with_retry_after(limited: Served) -> None:
    with limited.client() as client:
        codes = [_search(client, query="tides").status_code for _ in range(3)]
        last = _search(client, query="tides")
    assert codes[:2] == [200, 200] and codes[2] == 429
    assert last.status_code == 429 and int(last.headers["retry-after"]) >= 1
    assert "rate limit" in last.json()["detail"]


def test_one_sequential_client_at_full_speed_is_never_throttled(indexed: Settings,
                                                                service: SearchService) -> None:
    """The default limits, the real app under uvicorn: a client that sends each search as soon
    as the last one answered gets no 429 (the old 50/s, burst 100, throttled it after ~100)."""
    from pydantic import SecretStr

    from tessera.core.settings import ApiConfig

    settings = _with(indexed, keys=SecretStr(KEY))
    fields = ApiConfig.model_fields
    assert settings.api.rate_limit == fields["rate_limit"].default
    assert settings.api.burst == fields["burst"].default
    server = Served(create_app(settings, service=service))
    try:
        with server.client() as client:
            started = time.perf_counter()
            codes = [_search(client, query=f"tides {i % 7}", k=3).status_code
                     for i in range(400)]
            pace = len(codes) / (time.perf_counter() - started)
    finally:
        server.stop()
    assert codes.count(429) == 0 and set(codes) == {200}, pace


def test_the_default_bucket_admits_a_client_four_times_faster_than_the_service() -> None:
    """The service answers one sequential client ~100-125 times a second on 2 cores: with the
    default limits a key sending 500 a second for a minute is never refused (a clock the test
    moves, so the check does not depend on this machine's speed)."""
    from tessera.core.settings import ApiConfig
    from tessera.service.guard import KeyGuard

    fields = ApiConfig.model_fields
    now = [0.0]
    guard = KeyGuard([KEY], fields["rate_limit"].default, fields["burst"].default,
                     clock=lambda: now[0])
    refused = 0
    for i in range(500 * 60):
        now[0] = i / 500
        refused += guard.take(0) > 0
    assert refused == 0


def test_body_limit_answers_413_declared_or_streamed(limited: Served) -> None:
    big = {"query": "x" * 5000}
    with limited.client() as client:
        declared = client.post("/v1/search", json=big)
        streamed = client.post("/v1/search", content=iter([json.dumps(big).encode()]),
                               headers={"Content-Type": "application/json"})
    assert declared.status_code == streamed.status_code == 413
    assert "api.max_body_bytes" in declared.json()["detail"]


def test_collections(served: Served, indexed: Settings) -> None:
    from tessera.store import open_store

    with served.client() as client:
        body = client.get("/v1/collections").json()
    store = open_store(indexed)
    try:
        points, live = store.count("test"), store.real_name("test")
    finally:
        store.close()
    (row,) = body["collections"]
    assert live.startswith("test--")  # collections live behind their alias (see migrations)
    assert row["name"] == live and row["dimension"] == 384 and row["points"] == points
    assert row["model"] == "sentence-transformers/all-MiniLM-L6-v2" and row["aliases"] == ["test"]


def test_documents_round_trip_ids_with_slashes(served: Served, indexed: Settings) -> None:
    hits = search_fn(indexed, query="tighten bolt on the turbine housing", k=1)
    doc_id = hits[0]["doc_id"]
    assert doc_id.endswith(NESTED_ID_PART) and doc_id.count("/") >= 3
    with served.client() as client:
        response = client.get(f"/v1/documents/{quote(doc_id)}")
        aliased = client.get(f"/v1/documents/{quote(doc_id)}", params={"collection": "test"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["doc_id"] == doc_id and body == aliased.json()
    assert [c["chunk_index"] for c in body["chunks"]] == list(range(body["chunk_count"]))
    assert body["chunk_count"] > 1 and "bolt number 0 " in body["chunks"][0]["text"]


def test_unknown_and_traversing_ids_are_refused_without_touching_files(served: Served) -> None:
    """Unknown and traversing document ids are 404; a collection name outside the one safe
    pattern is 422 naming the field (it is refused before any lookup)."""
    opened: list[str] = []
    watching = threading.Event()

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if watching.is_set() and event == "open" and "passwd" in str(args[0]):
            opened.append(str(args[0]))

    sys.addaudithook(audit)
    watching.set()
    try:
        with served.client() as client:
            codes = [client.get(f"/v1/documents/{path}").status_code for path in (
                "docs/nothing-here.md", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd",
                quote("../../../../etc/passwd", safe=""))]
            dotted = client.get("/v1/documents/x", params={"collection": "../../../../etc/passwd"})
    finally:
        watching.clear()
    assert codes == [404, 404, 404, 404] and dotted.status_code == 422
    assert "collection" in dotted.text
    assert opened == []


def test_health_and_readiness(served: Served) -> None:
    with served.client(key=None) as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")
    assert health.json() == {"status": "ok"}
    body = ready.json()
    assert ready.status_code == 200 and body["ready"] is True
    assert body["checks"]["probe"]["dimension"] == 384 and body["checks"]["probe"]["cosine"] > 0.999


def _metrics(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_parse_and_move(served: Served, indexed: Settings) -> None:
    search_count = ("tessera_http_request_duration_seconds_count",
                    (("method", "POST"), ("route", "/v1/search"), ("status", "200")))
    unauthorized = ("tessera_api_errors_total", (("kind", "unauthorized"),))
    with served.client() as client, served.client(key=None) as anonymous:
        before = _metrics(client)
        for _ in range(3):
            assert _search(client, query="secret-query-text tides").status_code == 200
        assert _search(anonymous, query="x").status_code == 401
        after = _metrics(client)
        text = client.get("/metrics").text
    assert after[search_count] == before.get(search_count, 0) + 3
    assert after[unauthorized] == before.get(unauthorized, 0) + 1
    assert after[("tessera_search_embed_seconds_count", ())] >= 3
    assert after[("tessera_search_engine_seconds_count", ())] >= 3
    (points,) = [v for (name, labels), v in after.items() if name == "tessera_collection_points"
                 and dict(labels)["collection"].startswith("test--")]
    assert points > 0
    fresh = after[("tessera_source_seconds_since_last_ingest", (("source", "docs"),))]
    assert 0 <= fresh < 3600
    assert ("tessera_http_requests_in_flight", ()) in after
    # The same query three times: the model embedded it at most once (the query cache).
    (model,) = {dict(labels)["model"] for (name, labels), _ in after.items()
                if name == "tessera_query_cache_hits_total"}
    label = (("model", model),)
    hits = after[("tessera_query_cache_hits_total", label)] - before.get(
        ("tessera_query_cache_hits_total", label), 0)
    misses = after[("tessera_query_cache_misses_total", label)] - before.get(
        ("tessera_query_cache_misses_total", label), 0)
    assert hits >= 2 and misses <= 1 and hits + misses == 3
    assert 1 <= after[("tessera_query_cache_entries", label)] <= after[
        ("tessera_query_cache_capacity", label)] == 4096
    # The embedded store's search snapshot: what the last one cost, and none torn.
    assert after[("tessera_snapshot_last_seconds", (("phase", "lock"),))] >= 0
    assert after[("tessera_snapshot_last_bytes", (("kind", "copied"),))] > 0
    assert after[("tessera_snapshot_torn_total", ())] == 0
    assert KEY not in text and "secret-query-text" not in text


def test_the_key_never_reaches_logs_or_events(served: Served, indexed: Settings,
                                              logs: _Capture) -> None:
    with served.client() as client, served.client(key=KEY + "x") as wrong:
        _search(client, query="tides and the moon", k=2)
        _search(wrong, query="tides and the moon")
    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = read_events(indexed.events_dir, "search_requests")
        if any(r["status"] == 401 for r in rows):
            break
        time.sleep(0.2)
    assert {r["status"] for r in rows} >= {200, 401}
    ok = [r for r in rows if r["status"] == 200 and r["route"] == "/v1/search"]
    assert ok and all(r["hits"] is not None and r["latency_ms"] > 0 and r["embed_ms"] is not None
                      for r in ok)
    assert all(r["query"] is None for r in rows)  # api.log_queries is off
    dump = json.dumps(rows, default=str) + "\n".join(logs.lines)
    assert KEY not in dump and OTHER_KEY not in dump
    assert "tides and the moon" not in dump


def test_cli_refuses_a_bad_start_in_one_line(indexed: Settings, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tessera.cli.main import main

    config = str(tmp_path / "c.toml")
    Path(config).write_text(f'home = "{indexed.home}"\ncollection = "test"\n')
    assert main(["api", "--config", config, "--no-auth", "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err
    assert main(["api", "--config", config, "--port", str(free_port())]) == 2
    assert "TESSERA_API__KEYS" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("TESSERA_API__KEYS", KEY)
        assert main(["api", "--config", config, "--port", str(busy.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert "--port" in err and len(err.strip().splitlines()) == 1 and KEY not in err


def _wait(predicate: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_search_requests_reach_the_mart(served: Served, indexed: Settings) -> None:
    """The events the tests above wrote, through dbt, into fct_search_requests."""
    import duckdb

    from tessera.jobs.marts import build_marts

    with served.client() as client, served.client(key=None) as anonymous:
        for _ in range(3):
            assert _search(client, query="tides").status_code == 200
        assert _search(anonymous, query="tides").status_code == 401
    _wait(lambda: {r["status"] for r in read_events(indexed.events_dir, "search_requests")
                   } >= {200, 401})
    build_marts(indexed, "+fct_search_requests")
    with duckdb.connect(str(indexed.warehouse_path), read_only=True) as con:
        rows = con.execute("select request_status, search_mode, requests, failed_requests, "
                           "latency_p50_ms, latency_p99_ms from fct_search_requests").fetchall()
        # From a day's figures to its requests' traces and keys (never the key itself).
        traced = con.execute("select trace_id, key_id, http_status from "
                             "stg_tessera__search_requests where route = '/v1/search'").fetchall()
    by_group = {row[:2]: row[2:] for row in rows}
    requests, failed, p50, p99 = by_group["answered", indexed.search.mode]  # the mode that ran
    assert requests >= 3 and failed == 0 and 0 < p50 <= p99
    # A request refused before it was read (401) ran no search: rejected, with no mode.
    assert by_group["rejected", None][1] >= 1
    answered = [(t, k) for t, k, status in traced if status == 200]
    assert answered and all(t and len(t) == 32 for t, _ in answered)
    assert len({t for t, _ in answered}) == len(answered)  # one trace per request
    assert {k for _, k in answered} <= {f"key-{hashlib.sha256(k.encode()).hexdigest()[:8]}"
                                        for k in (KEY, OTHER_KEY)}
    assert {k for t, k, status in traced if status == 401} == {None}  # no key was admitted


def test_caption_route_captions_through_the_cache(indexed: Settings, service: SearchService,
                                                  tmp_path: Path) -> None:
    """POST /v1/caption: the captioner loads once, a repeat is served from the cache, a bad
    image gets its own error and costs the others nothing, an unknown captioner is a 422."""
    import io

    import numpy as np
    from PIL import Image
    from pydantic import SecretStr

    from tests.support.tiny_blip import build_tiny_blip, tiny_blip_toml

    config = tmp_path / "tessera.toml"
    config.write_text((indexed.home.parent / "tessera.toml").read_text()
                      + tiny_blip_toml(build_tiny_blip(tmp_path / "blip")))
    settings = _with(load_settings(config), keys=SecretStr(KEY))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
        buf, "PNG")
    good = base64.b64encode(buf.getvalue()).decode()
    broken = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(64)).decode()
    server = Served(create_app(settings, service=service))
    try:
        with server.client() as client:
            body = {"images": [{"name": "a.png", "data": good}, {"name": "bad.png", "data": broken}],
                    "captioner": "tiny-blip"}
            first = client.post("/v1/caption", json=body)
            assert first.status_code == 200, first.text
            made = first.json()
            assert [r["image"] for r in made["captions"]] == ["a.png", "bad.png"]
            assert made["captions"][0]["caption"] and made["captions"][0]["cached"] is False
            assert "error" in made["captions"][1] and (made["made"], made["failed"]) == (1, 1)
            again = client.post("/v1/caption", json={"images": [{"data": good}],
                                                     "captioner": "tiny-blip"}).json()
            assert again["captions"][0]["caption"] == made["captions"][0]["caption"]
            assert (again["captions"][0]["cached"], again["reused"], again["captions"][0]["image"]
                    ) == (True, 1, "image0")
            unknown = client.post("/v1/caption", json={"images": [{"data": good}],
                                                       "captioner": "no-such-model"})
            assert unknown.status_code == 422 and "no-such-model" in unknown.text
            not_b64 = client.post("/v1/caption", json={"images": [{"data": "%%%"}]})
            assert not_b64.status_code == 422 and "base64" in not_b64.text
        with server.client(key=None) as anonymous:
            assert anonymous.post("/v1/caption", json=body).status_code == 401
    finally:
        server.stop()
