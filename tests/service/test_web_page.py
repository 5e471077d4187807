"""The web page in a real browser: Debian's headless Chromium, driven by Playwright, against the
page served on loopback over a real index (Qdrant Edge, the bundled model, real ingest events).

Skips only when no Chromium binary is installed (`make test` installs Debian's where it can).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tessera.core.events import EventLog
from tessera.core.settings import Settings, load_settings
from tessera.service.app import create_app
from tessera.service.report_data import daily_ingest, freshness, missed_runs, percentiles
from tessera.service.web import highlight, write_report
from tests.support.browser import CHROMIUM, needs_chromium, screenshot
from tests.support.config import write_config
from tests.support.paths import EXAMPLES, REPO
from tests.support.servers import Served


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The sample corpus ingested for real, plus two earlier quality runs of a set in two modes."""
    from tessera.ingest.run import run_ingest

    root = tmp_path_factory.mktemp("web")
    config = write_config(root / "tessera.toml", {"home": str(root / "home"), "collection": "web"},
                          {}, [{"name": "examples", "path": str(EXAMPLES), "schedule": "*/30 * * * *"},
                               {"name": "never-run", "path": str(root)}])
    settings = load_settings(config)
    run_ingest(settings, sources=["examples"])
    now = datetime.now(UTC)
    for days_ago, dense, sparse in ((2, 0.61, 0.66), (1, 0.64, 0.67)):
        events = EventLog(settings.events_dir, f"q{days_ago}")
        for mode, value in (("dense", dense), ("sparse", sparse)):
            events.add("quality_runs", dataset="sample", model_id="m", collection="c", queries=8,
                       ndcg_at_10=value, status="passed", started_at=now - timedelta(days=days_ago),
                       **({"mode": mode} if "mode" in _quality_columns() else {}))
        events.flush()
    return settings


def _quality_columns() -> list[str]:
    from tessera.core.events import SCHEMAS

    return list(SCHEMAS["quality_runs"].names)


@pytest.fixture(scope="module")
def served(indexed: Settings) -> Iterator[str]:
    """The search service's app (what `tessera api` and `tessera report --serve` run), keyless
    on loopback under uvicorn."""
    server = Served(create_app(indexed, auth=False))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no Chromium binary")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()



def _charts_render(page: Any) -> None:
    """The charts the ingested sample fills are SVGs with a real size, their marks drawn: today's
    ingest of one source (one bar), two quality runs in two modes; no failures (its empty state
    names none)."""
    page.wait_for_selector("#volume-chart svg g.role-mark", timeout=30_000)
    for chart in ("#volume-chart", "#quality-chart"):
        box = page.locator(f"{chart} svg").first.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 150, (chart, box)
    assert _marks(page, "volume-chart", "rect") == 1
    bar = page.locator("#volume-chart svg g.role-mark.mark-rect > path").first
    assert "source: examples" in (bar.get_attribute("aria-label") or "")
    assert (bar.bounding_box() or {}).get("height", 0) > 50
    assert _marks(page, "quality-chart", "line") == 2
    assert _marks(page, "quality-chart", "symbol") == 4
    assert "No failed ingest runs" in page.inner_text("#failure-chart")
    assert "No GPU runs" in page.inner_text("#gpu-chart")


@needs_chromium
def test_search_from_the_page_returns_the_expected_document(served: str, browser: Any,
                                                            tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    page.goto(served + "/")
    page.fill("input[name=q]", "why do the tides rise and fall")
    page.click("button[type=submit]")
    page.wait_for_selector("#results .hit")
    first = page.locator("#results .hit").first
    assert first.get_attribute("data-doc-id") == "examples/tides.txt"
    marked = [m.lower() for m in first.locator("mark").all_inner_texts()]
    assert "tides" in marked
    # The scores a person reads (hybrid: the dense similarity and BM25), not the fused sum.
    assert re.fullmatch(r"dense \d\.\d{3} · bm25 \d+\.\d\d", first.locator(".score").inner_text())
    assert page.locator("select[name=mode] option").count() >= 1
    _charts_render(page)
    # The search just made is a search_requests event (interface "page"): today's p50 and p99.
    labels = page.locator("#latency-chart svg g.role-mark.mark-symbol > path").evaluate_all(
        "ps => ps.map(p => p.getAttribute('aria-label'))")
    assert sorted(_field(label, "stat") for label in labels) == ["p50", "p99"], labels
    assert all(_field(label, "searches") == "1" for label in labels), labels
    fresh = page.locator("#freshness tr[data-source=examples]")
    assert fresh.get_attribute("class") == "fresh"
    assert page.locator("#freshness tr[data-source=never-run]").get_attribute("class") == "never"
    screenshot(page, tmp_path, "report-served.png")
    page.close()


@needs_chromium
def test_the_static_page_renders_its_charts(indexed: Settings, browser: Any, tmp_path: Path) -> None:
    out = write_report(indexed, tmp_path / "report" / "index.html")
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    page.goto(out.as_uri())
    _charts_render(page)
    assert page.locator("input[name=q]").is_disabled()
    assert "tessera report --serve" in page.inner_text("#search")
    screenshot(page, tmp_path, "report-static.png")
    page.close()


def test_a_refused_search_is_told_on_the_page(served: str) -> None:
    """A field the search service refuses comes back as the page with the reason, not a 422."""
    import httpx

    page = httpx.get(served + "/index.html", params={"q": "tides", "mode": "fuzzy"}, timeout=60)
    assert page.status_code == 200 and 'id="search-error"' in page.text
    assert "mode" in page.text.split('id="search-error"')[1].split("</p>")[0]


def _specs(page_html: str) -> dict[str, Any]:
    """The chart specs a page embeds (element id -> Vega-Lite spec)."""
    block = page_html.split('<script type="application/json" id="chart-specs">')[1]
    return dict(json.loads(block.split("</script>")[0]))


def test_page_searches_count_in_the_latency_chart(served: str) -> None:
    """A search from the page is a search_requests row (interface "page"): the next page's
    latency chart counts it, before the row is even written to disk."""
    import httpx

    def searches_today() -> int:
        spec = _specs(httpx.get(served + "/", timeout=60).text).get("latency-chart")
        rows = spec["data"]["values"] if spec else []
        today = datetime.now(UTC).date().isoformat()
        return sum(r["searches"] for r in rows if r["day"] == today and r["stat"] == "p50")

    before = searches_today()
    for query in ("tides", "volcano"):
        assert httpx.get(served + "/", params={"q": query}, timeout=60).status_code == 200
    assert searches_today() == before + 2


def test_the_vendored_vega_carries_its_licences_and_versions() -> None:
    """Each file is named in the README with its version and licence, ships as package data, and
    inlines into the static report as it is (no "</script" in it to close the element early)."""
    import tomllib

    from tessera.service.charts import VEGA_DIR, VEGA_VERSIONS

    readme = (VEGA_DIR / "README.md").read_text(encoding="utf-8")
    for package, version in VEGA_VERSIONS.items():
        assert f"`{package}` | **{version}**" in readme
        assert "Redistribution" in (VEGA_DIR / f"LICENSE-{package}").read_text(encoding="utf-8")
        assert "</script" not in (VEGA_DIR / f"{package}.min.js").read_text(encoding="utf-8")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "static/vega/*" in pyproject["tool"]["setuptools"]["package-data"]["tessera.service"]


def test_report_serve_runs_the_search_service_app(indexed: Settings) -> None:
    """`tessera report --serve` serves the page from the FastAPI app under uvicorn: the page
    searches, the API's own routes answer on the same port, and Ctrl-C ends it with one JSON
    object."""
    import httpx

    config = indexed.home.parent / "tessera.toml"
    cmd = [sys.executable, "-m", "tessera.cli.main", "report", "--serve", "--port", "0",
           "--json", "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        # Printed once the port is bound, before the model loads.
        banner = next((line for line in proc.stderr if line.startswith("serving the report")), "")
        assert banner.startswith("serving the report on http://127.0.0.1:"), banner
        url = banner.split()[4]
        with httpx.Client(timeout=120) as client:
            page = client.get(url, params={"q": "why do the tides rise and fall"})
            health = client.get(url + "healthz")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'data-doc-id="examples/tides.txt"' in page.text
    assert health.json() == {"status": "ok"}  # the search service's route, on the same port
    assert proc.returncode == 0, err
    assert json.loads(out) == {"served": url}
    assert "serving WITHOUT API keys on 127.0.0.1" in err  # the API's routes answer keyless too


# --------------------------------------------------- the dashboard over a seeded event history

ADHOC = "adhoc-scans-0123abcd"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Two days of events written with EventLog (no ingest, no model): two declared sources and
    an ad-hoc one, quality runs and searches both days, a failed run with its error, a
    quarantined record, a GPU run; and a store with an aliased collection, a superseded version
    and an internal quality collection."""
    from tessera.core.types import CollectionInfo
    from tessera.store import open_store

    root = tmp_path_factory.mktemp("dashboard")
    config = write_config(root / "tessera.toml", {"home": str(root / "home"), "collection": "web"},
                          {}, [{"name": "docs", "path": str(root), "schedule": "0 * * * *"},
                               {"name": "notes", "path": str(root)}])
    settings = load_settings(config)
    store = open_store(settings)
    try:
        for name in ("web--m-0000aaaa", "web--m-1111bbbb", "quality-sample"):
            store.create_collection(CollectionInfo(name, "m", "m", 8, "cosine", "m"))
        store.set_alias("web", "web--m-1111bbbb")
    finally:
        store.close()
    now = datetime.now(UTC)
    _seed(settings, now - timedelta(days=1), now)
    return settings


def _seed(settings: Settings, day1: datetime, day2: datetime) -> None:
    from tests.support.events import write_docs, write_run

    log = EventLog(settings.events_dir, "seeded")
    write_run(log, day1, sources="docs", indexed=3, seconds=5.0)
    write_run(log, day1, sources=ADHOC, indexed=2, seconds=9.0, device="cuda", gpu_type="L4",
              gpu_seconds=12.5)
    write_run(log, day2, sources="notes", indexed=1, seconds=2.0)
    write_run(log, day2, sources="docs", status="failed", seconds=1.0,
              error="store locked by another process (pid 42)")
    write_docs(log, day1, "docs", "indexed", 3)
    write_docs(log, day1, ADHOC, "indexed", 2)
    write_docs(log, day2, "notes", "indexed", 1)
    log.add("quarantine", source="notes", doc_id="notes/empty.txt", suite="text",
            expectation="non-empty text", reason="the text is empty", recorded_at=day2)
    for day, dense, sparse in ((day1, 0.61, 0.66), (day2, 0.64, 0.67)):
        for mode, value in (("dense", dense), ("sparse", sparse)):
            log.add("quality_runs", dataset="sample", model_id="m", collection="quality-sample",
                    mode=mode, queries=8, ndcg_at_10=value, status="passed", started_at=day)
    for day, interface, route, ms in ((day1, "http", "/v1/search", 10.0),
                                      (day1, "http", "/v1/search", 20.0),
                                      (day2, "mcp", "tool/search", 30.0),
                                      (day2, "http", "/v1/search", 40.0)):
        log.add("search_requests", request_id=f"r{ms:g}", interface=interface, route=route,
                status=200, mode="dense", k=10, hits=3, latency_ms=ms, recorded_at=day)
    log.flush()


def _marks(page: Any, chart: str, kind: str) -> int:
    """The data marks (not legend symbols) of one kind Vega drew in a chart's SVG."""
    return int(page.locator(f"#{chart} svg g.role-mark.mark-{kind} > path").count())


def _field(aria_label: str, name: str) -> str:
    """One field's value in the aria-label Vega gives a mark ("day (UTC): ...; stat: p50; ...")."""
    return aria_label.split(f"{name}: ")[1].split(";")[0].strip()


def _loopback_only(page: Any, allowed: Any) -> tuple[list[str], list[str]]:
    """Abort every request `allowed` refuses; (refused URLs, failed requests) as they come."""
    left: list[str] = []
    failed: list[str] = []

    def route(r: Any) -> None:
        if allowed(r.request.url):
            r.continue_()
        else:
            left.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("requestfailed", lambda r: failed.append(f"{r.url} {r.failure}"))
    return left, failed


def _dashboard_drawn(page: Any) -> None:
    """Every chart drawn with the seeded data's marks; every source's freshness; aliases first."""
    page.wait_for_selector("#gpu-chart svg g.role-mark", timeout=30_000)
    for chart in ("quality-chart", "volume-chart", "latency-chart", "failure-chart", "gpu-chart"):
        box = page.locator(f"#{chart} svg").first.bounding_box()
        assert box and box["width"] > 300 and box["height"] > 150, (chart, box)
    assert _marks(page, "volume-chart", "rect") == 3  # docs, scans on day 1; notes on day 2
    assert _marks(page, "failure-chart", "rect") == 1 and _marks(page, "gpu-chart", "rect") == 1
    assert _marks(page, "quality-chart", "symbol") == 4  # 2 runs x (dense, sparse)
    assert _marks(page, "quality-chart", "line") == 2
    assert _marks(page, "latency-chart", "symbol") == 4  # 2 days x (p50, p99)
    labels = page.locator("#latency-chart svg g.role-mark.mark-symbol > path").evaluate_all(
        "ps => ps.map(p => p.getAttribute('aria-label'))")
    # Nearest rank: day 1 searched in 10 and 20 ms, day 2 in 30 and 40 ms.
    assert sorted((_field(label, "stat"), _field(label, "milliseconds")) for label in labels) == [
        ("p50", "10"), ("p50", "30"), ("p99", "20"), ("p99", "40")], labels
    for source, verdict in (("docs", "stale"), ("notes", "fresh"), (ADHOC, "ad-hoc")):
        assert page.locator(f"#freshness tr[data-source='{source}']").get_attribute("class") == verdict
    assert "scans (ad-hoc)" in page.inner_text("#freshness")
    order = page.evaluate("document.querySelector('#aliases').compareDocumentPosition("
                          "document.querySelector('#other-collections'))")
    assert order & 4  # the aliases table comes before the toggle
    assert page.locator("#aliases tr[data-collection=web]").is_visible()
    assert not page.locator("#other-collections tr[data-collection=quality-sample]").is_visible()
    assert "store locked by another process" in page.inner_text("#failed-runs")
    assert "the text is empty" in page.inner_text("#quarantine-reasons")


@needs_chromium
def test_the_dashboard_draws_a_seeded_history_offline(seeded: Settings, browser: Any,
                                                      tmp_path: Path) -> None:
    """Served by the app, then as the static file: no request leaves loopback (the static file
    makes none at all), none fails, and every chart, row and reason is there."""
    server = Served(create_app(seeded, auth=False))
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        left, failed = _loopback_only(page, lambda url: urlsplit(url).hostname == "127.0.0.1")
        page.goto(server.url + "/", wait_until="networkidle")
        _dashboard_drawn(page)
        screenshot(page, tmp_path, "dashboard-served.png")
        page.close()
    finally:
        server.stop()
    assert left == [] and failed == [], (left, failed)
    assert {urlsplit(u).path for u in requested} == {
        "/", "/static/vega/vega.min.js", "/static/vega/vega-lite.min.js",
        "/static/vega/vega-embed.min.js"}  # no favicon.ico: the page carries its own
    out = write_report(seeded, tmp_path / "report" / "index.html")
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    left, failed = _loopback_only(page, lambda url: url == out.as_uri())
    page.goto(out.as_uri(), wait_until="networkidle")
    _dashboard_drawn(page)
    screenshot(page, tmp_path, "dashboard-static.png")
    page.close()
    assert left == [] and failed == [], (left, failed)


# ------------------------------------------------------------------ the logic under the page


def test_freshness_is_judged_against_each_source_schedule(tmp_path: Path) -> None:
    config = write_config(tmp_path / "t.toml", {"home": str(tmp_path / "h")}, {}, [
        {"name": "half-hourly", "path": str(tmp_path), "schedule": "*/30 * * * *"},
        {"name": "weekly", "path": str(tmp_path), "schedule": "0 3 * * 1"},
        {"name": "unscheduled", "path": str(tmp_path)}])
    settings = load_settings(config)
    now = datetime(2026, 12, 2, 12, 10, tzinfo=UTC)  # a Wednesday
    two_hours_ago = now - timedelta(hours=2)
    runs = [{"status": "completed", "flow": "ingest", "sources": name, "started_at": two_hours_ago,
             "finished_at": two_hours_ago} for name in ("half-hourly", "weekly", "unscheduled")]
    runs.append({"status": "completed", "flow": "quality", "sources": "half-hourly",
                 "started_at": now, "finished_at": now})  # not an ingest of the source
    verdicts = {f.source: (f.status, f.missed) for f in freshness(settings, runs, now)}
    assert verdicts["half-hourly"] == ("stale", 3)  # 4 half-hours passed; counting stops at 3
    assert verdicts["weekly"] == ("fresh", 0)
    assert verdicts["unscheduled"] == ("fresh", 0)
    assert missed_runs("*/30 * * * *", now - timedelta(minutes=40), now, "UTC") == 1


def test_daily_volume_keeps_input_failures_apart() -> None:
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    runs = [{"started_at": now, "status": "completed", "indexed": 5},
            {"started_at": now, "status": "failed", "indexed": 0},
            {"started_at": now, "status": "failed_input", "indexed": 0},
            {"started_at": now - timedelta(days=30), "status": "failed", "indexed": 0}]
    days = daily_ingest(runs, days=3, now=now)
    assert [d["day"] for d in days] == ["2026-11-30", "2026-12-01", "2026-12-02"]
    assert days[-1] == {"day": "2026-12-02", "runs": 3, "documents": 5, "failures": 1,
                        "input_failures": 1}


def test_snippets_mark_terms_and_escape_html() -> None:
    out = highlight("<b>Tides</b> rise because the Moon pulls the oceans.", "tides moon")
    assert "<b>" not in out and "&lt;b&gt;<mark>Tides</mark>" in out and "<mark>Moon</mark>" in out
    assert percentiles([1.0, 2.0, 3.0, 100.0]) == {"p50": 2.0, "p95": 100.0, "p99": 100.0, "count": 4.0}


def test_the_status_tables_are_published_as_reports(indexed: Settings) -> None:
    """The nightly flow publishes these as Prefect table artifacts; PlainSteps keeps them."""
    from tessera.core.steps import PlainSteps
    from tessera.service.report_data import publish

    steps = PlainSteps()
    publish(indexed, steps)
    assert set(steps.reports) == {"freshness", "quality-trend", "ingest-per-day"}
    assert "| examples | */30 * * * * |" in steps.reports["freshness"]
    assert "fresh" in steps.reports["freshness"] and "never" in steps.reports["freshness"]
    assert "sample · " in steps.reports["quality-trend"]


def test_snippets_mark_whole_words_only() -> None:
    out = highlight("Photosynthesis in Iceland: the tides and the Moon.", "why do the tides and moon")
    assert "<mark>tides</mark>" in out and "<mark>Moon</mark>" in out
    assert "<mark>the</mark>" not in out and "Photosynthesis" in out and "Iceland" in out


def test_the_marts_know_each_schedule_interval() -> None:
    """dim_sources judges freshness against this interval (stale after 2 of them)."""
    from tessera.jobs.marts import schedule_interval

    now = datetime(2026, 12, 2, 12, 10, tzinfo=UTC)
    assert schedule_interval("*/30 * * * *", now, "UTC") == 1800
    assert schedule_interval("0 3 * * 1", now, "Europe/Paris") == 7 * 86400
    assert schedule_interval("0 9-17 * * 1-5", now, "UTC") == 3600  # the typical gap
    assert schedule_interval(None, now, "UTC") is None
