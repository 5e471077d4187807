"""The web page in a real browser: Debian's headless Chromium, driven by Playwright, against the
page served on loopback over a real index (Qdrant Edge, the bundled model, real ingest events).

Skips only when no Chromium binary is installed (`make test` installs Debian's where it can).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tessera.core.events import EventLog
from tessera.core.settings import Settings, load_settings
from tessera.service.app import create_app
from tessera.service.report_data import daily_ingest, freshness, missed_runs, percentiles
from tessera.service.web import highlight, write_report
from tests.support.browser import CHROMIUM, needs_chromium, screenshot
from tests.support.config import write_config
from tests.support.paths import EXAMPLES
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
    """Every chart is an SVG with a real size on screen, and its marks are drawn."""
    for chart in ("#volume-chart", "#failure-chart", "#quality-chart"):
        box = page.locator(f"{chart} svg").bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100, (chart, box)
    bars = page.locator("#volume-chart rect.bar")
    assert bars.count() == 14  # one per day of the last two weeks
    heights = [float(bars.nth(i).get_attribute("height") or 0) for i in range(bars.count())]
    assert heights[-1] > 0 and sum(h > 0 for h in heights) == 1  # today's ingest only
    lines = page.locator("#quality-chart polyline.series")
    assert lines.count() >= 1
    assert (lines.first.bounding_box() or {}).get("width", 0) > 50
    assert page.locator("#quality-chart circle.point").count() >= 2


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
    float(first.locator(".score").inner_text())  # a score is shown
    assert page.locator("select[name=mode] option").count() >= 1
    _charts_render(page)
    # The search just made is in the latency chart.
    assert page.locator("#latency-chart rect.bar").count() == 3
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
