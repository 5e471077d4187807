"""Monitoring in the user's own tools: the index gauges behind the alerts, promtool over
infra/prometheus/, and a real Prometheus scraping `tessera api` on loopback to show that every
metric the alert rules and the Grafana dashboard name exists in the real /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tessera.core.events import EventLog, read_events
from tessera.core.settings import Settings, load_settings
from tessera.ingest.run import run_ingest
from tessera.service.app import create_app
from tessera.service.metrics import IndexCollector
from tests.support.paths import REPO
from tests.support.servers import Served, free_port

PROMETHEUS = REPO / "infra" / "prometheus"
DASHBOARD = REPO / "infra" / "grafana" / "tessera.json"
FINISHED = datetime(2024, 5, 1, 10, 0, 30, tzinfo=UTC)
_NOT_METRICS = {"and", "or", "unless", "bool", "offset"}


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _seed(events: Path) -> None:
    """A completed ingest of docs, daily and an ad-hoc source; a later quality run and a failed
    ingest of docs (neither makes docs fresher); quarantine rows over two runs."""
    run = EventLog(events, "20240501T100000-aaaa0001")
    run.add("ingest_runs", flow="ingest", sources="docs,daily,adhoc-1a2b", status="completed",
            started_at=FINISHED - timedelta(seconds=30), finished_at=FINISHED)
    for doc in ("notes-1", "notes-1", "notes-2"):  # one record written twice counts once
        run.add("quarantine", source="notes", doc_id=doc, reason="text is empty",
                recorded_at=FINISHED)
    run.flush()
    later = EventLog(events, "20240501T120000-bbbb0002")
    for flow, status in (("quality", "completed"), ("ingest", "failed")):
        later.add("ingest_runs", flow=flow, sources="docs", status=status,
                  started_at=FINISHED + timedelta(hours=2),
                  finished_at=FINISHED + timedelta(hours=2, seconds=5))
    later.add("quarantine", source="notes", doc_id="notes-1", reason="text is empty",
              recorded_at=FINISHED + timedelta(hours=2))
    later.flush()


def test_freshness_missed_runs_and_quarantine_gauges(tmp_path: Path) -> None:
    _seed(tmp_path)
    clock = {"now": (FINISHED + timedelta(hours=3)).timestamp()}
    registry = CollectorRegistry()
    registry.register(IndexCollector(lambda: {}, tmp_path, {"docs": "0 * * * *", "daily": None,
                                                            "never": "0 * * * *"},
                                     "UTC", cache_seconds=15, clock=lambda: clock["now"]))
    got = _samples(registry)
    since = {dict(k[1])["source"]: v for k, v in got.items()
             if k[0] == "tessera_source_seconds_since_last_ingest"}
    missed = {dict(k[1])["source"]: v for k, v in got.items()
              if k[0] == "tessera_source_missed_runs"}
    refused = {dict(k[1])["source"]: v for k, v in got.items()
               if k[0] == "tessera_quarantined_records_total"}
    # The quality run and the failed ingest two hours later do not count as docs' last ingest.
    assert since == {"docs": 3 * 3600.0, "daily": 3 * 3600.0, "adhoc-1a2b": 3 * 3600.0}
    # Hourly docs missed 11:00, 12:00 and 13:00; unscheduled daily is judged against a day; the
    # ad-hoc source has no schedule to miss; a declared source never ingested has no series.
    assert missed == {"docs": 3.0, "daily": 0.0}
    assert refused == {"notes": 3.0}  # notes-1 and notes-2 in one run, notes-1 again in the next

    # Events are re-read only once the cache expired; the clock moves the gauges at once.
    extra = EventLog(tmp_path, "20240501T130000-cccc0003")
    extra.add("quarantine", source="docs", doc_id="docs-9", reason="bad", recorded_at=FINISHED)
    extra.flush()
    clock["now"] += 10
    assert ("tessera_quarantined_records_total", (("source", "docs"),)) not in _samples(registry)
    clock["now"] += 10
    got = _samples(registry)
    assert got[("tessera_quarantined_records_total", (("source", "docs"),))] == 1.0
    assert got[("tessera_source_seconds_since_last_ingest", (("source", "docs"),))] == 3 * 3600 + 20


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; `make prometheus` "
                    "installs it where it runs as root with apt)")
    return found


@pytest.mark.parametrize("check", [["check", "rules", "alerts.yml"],
                                   ["check", "config", "prometheus.yml"],
                                   ["test", "rules", "alerts_test.yml"]],
                         ids=["check-rules", "check-config", "test-rules"])
def test_promtool_accepts_the_rules_config_and_rule_tests(check: list[str]) -> None:
    done = subprocess.run([_promtool(), *check], cwd=PROMETHEUS, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_for_severity_and_annotations() -> None:
    rules = [r for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
             for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"TesseraSourceStale", "TesseraApiErrorRate",
                                           "TesseraSearchP99OverGoal", "TesseraQuarantineSpike"}
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    tested = (PROMETHEUS / "alerts_test.yml").read_text()
    for rule in rules:  # each alert is shown firing in promtool's unit tests
        assert re.search(rf"alertname: {rule['alert']}\n\s+exp_alerts:\n\s+- exp_labels", tested)


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, matchers, ranges, groupings and
    function calls taken out first)."""
    for pattern in (r'"[^"]*"', r"\{[^}]*\}", r"\[[^\]]*\]",
                    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"):
        expr = re.sub(pattern, " ", expr)
    return {m for m in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr)
            if m not in _NOT_METRICS}


def _exprs() -> dict[str, str]:
    rules = {r["alert"]: r["expr"]
             for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
             for r in g["rules"]}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    board = {f"{p['title']} #{t['refId']}": t["expr"]
             for p in panels for t in p.get("targets", [])}
    return {**rules, **board}


def test_metric_names_are_read_from_expressions() -> None:
    expr = ('histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{route="/v1/x", le=~"1"}[5m])))'
            " / on (job) b_total > 0.03 and up{job=\"t\"} == 0")
    assert _metric_names(expr) == {"a_bucket", "b_total", "up"}
    names = set().union(*map(_metric_names, _exprs().values()))
    assert {"tessera_source_missed_runs", "tessera_quarantined_records_total",
            "tessera_http_request_duration_seconds_bucket"} <= names


@pytest.fixture
def indexed(tmp_path: Path) -> Settings:
    """The sample corpus and one empty file (quarantined), ingested (with the shared model)."""
    from tests.support.config import write_config
    from tests.support.paths import EXAMPLES

    base = tmp_path / "monitoring"
    corpus = base / "corpus"
    shutil.copytree(EXAMPLES, corpus)
    (corpus / "empty.txt").write_text("")
    config = write_config(base / "tessera.toml", {"home": str(base / "home"), "collection": "mon"},
                          {"embedding": {"runtime": "torch", "device": "cpu"}},
                          [{"name": "docs", "path": str(corpus), "schedule": "0 * * * *"}])
    settings = load_settings(config)
    assert run_ingest(settings)["quarantined"] == 1
    return settings


@pytest.fixture
def prometheus(indexed: Settings, tmp_path: Path) -> Iterator[tuple[str, Served]]:
    """`tessera api` on loopback, searched once (and refused once), and a real Prometheus scraping it every second
    with the shipped config and rules (only the target and the intervals changed)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian's prometheus package; `make prometheus` "
                    "installs it where it runs as root with apt)")
    api = Served(create_app(indexed, auth=False))
    with api.client(key=None) as client:
        assert client.post("/v1/search", json={"query": "tides", "k": 2}).status_code == 200
        # Error kinds appear once one happened (a fresh service has none to count yet).
        assert client.post("/v1/search", json={"query": "tides", "k": 0}).status_code == 422
    shipped = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = shipped["scrape_configs"]
    assert job["job_name"] == "tessera" and job["static_configs"][0]["targets"] == ["127.0.0.1:8000"]
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{api.port}"]
    shipped["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    shipped["rule_files"] = [str(PROMETHEUS / f) for f in shipped["rule_files"]]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(shipped))
    port = free_port()
    with (tmp_path / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", api
    finally:
        process.terminate()
        process.wait(timeout=30)
        api.stop()


def _until(what: str, check: Any, seconds: float = 60) -> Any:
    """Poll `check` until it answers something truthy (Prometheus scrapes on its own clock)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"Prometheus never {what}"
        time.sleep(0.2)


def test_a_real_prometheus_scrape_has_every_metric_the_rules_and_dashboard_name(
        prometheus: tuple[str, Served], indexed: Settings) -> None:
    url, _ = prometheus

    def get(path: str, **params: str) -> Any:
        return httpx.get(url + path, params=params, timeout=10).json()["data"]

    # Until its storage is open Prometheus answers 503 in plain text, not JSON.
    _until("got ready", lambda: httpx.get(url + "/-/ready", timeout=10).status_code == 200)
    _until("scraped the api", lambda: [t for t in get("/api/v1/targets")["activeTargets"]
                                       if t["health"] == "up"])

    def stored() -> set[str] | None:
        found = set(get("/api/v1/label/__name__/values"))
        return found if any(n.startswith("tessera_") for n in found) else None

    names = _until("stored a tessera series", stored)
    for where, expr in _exprs().items():
        missing = _metric_names(expr) - names
        assert not missing, f"{where} reads metrics /metrics does not export: {missing}"

    def value(query: str) -> dict[str, float]:
        return {r["metric"].get("source", ""): float(r["value"][1])
                for r in get("/api/v1/query", query=query)["result"]}

    # The label values the rules select on exist too, and the gauges say what the events say.
    assert value('tessera_http_request_duration_seconds_bucket{route="/v1/search", '
                 'status="200", le="+Inf"}') == {"": 1.0}
    assert value("tessera_quarantined_records_total") == {"docs": 1.0}
    assert value("tessera_source_missed_runs")["docs"] <= 1
    assert len(read_events(indexed.events_dir, "quarantine")) == 1
    rules = _until("evaluated every rule", lambda: [
        r for g in get("/api/v1/rules")["groups"] for r in g["rules"]
        if r.get("lastEvaluation", "").startswith("2")] or None)
    assert {r["name"]: r["health"] for r in rules} == {
        r["alert"]: "ok" for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for r in g["rules"]}
