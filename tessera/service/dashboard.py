"""The operator dashboard under the search box: freshness of every source, the collections
(aliases first), charts (quality, volume, search latency, failures, GPU), and why things failed.
HTML from ReportData; the charts are Vega-Lite specs (charts.py) drawn in the browser, and each
chart with no data says which command fills it.
"""

from __future__ import annotations

import html
from typing import Any

from tessera.service.charts import latency_spec, quality_spec, stacked_bars
from tessera.service.report_data import DAYS, Freshness, ReportData, readable_source

ADHOC_NOTE = ("Ad-hoc sources (<code>tessera ingest PATH</code>) have no schedule: they are "
              "fresh as of their last ingest and are not judged stale; rerun the command to "
              "refresh one. Declared sources are stale after 2 missed scheduled runs (unscheduled "
              "ones: 2 days).")
GPU_NOTE = ("GPU seconds as recorded by each run; their cost at the rates of "
            "<code>dbt/seeds/gpu_prices.csv</code> is in the marts <code>fct_embedding_cost</code> "
            "and <code>fct_caption_cost</code> (<code>tessera marts</code>).")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(head: list[str], rows: list[str], attrs: str = "") -> str:
    return (f"<table{attrs}><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
            + "".join(rows) + "</table>")


def _freshness_row(f: Freshness) -> str:
    last = f"{f.last_success:%Y-%m-%d %H:%M} UTC" if f.last_success else "never"
    adhoc = f.status == "ad-hoc" or readable_source(f.source) != f.source
    schedule = "ad-hoc (none)" if adhoc else f.schedule or "none (judged daily)"
    missed = "–" if adhoc else str(f.missed)
    return (f'<tr class="{_e(f.status)}" data-source="{_e(f.source)}"><td title="{_e(f.source)}">'
            f"{_e(readable_source(f.source))}</td><td>{_e(schedule)}</td><td>{last}</td>"
            f"<td>{missed}</td><td>{_e(f.status)}</td></tr>")


def freshness_section(data: ReportData) -> str:
    """Every source, declared then ad-hoc, with its last completed ingest and verdict."""
    table = _table(["source", "schedule", "last completed ingest", "scheduled runs missed",
                    "verdict"], [_freshness_row(f) for f in data.freshness])
    if not data.freshness:
        table = '<p class="muted">No sources yet: declare one in tessera.toml, or run <code>' \
                "tessera ingest PATH</code>.</p>"
    return (f'<section id="freshness"><h2>Freshness of every source</h2>{table}'
            f'<p class="muted">{ADHOC_NOTE}</p></section>')


def _collection_row(card: dict[str, Any]) -> str:
    sources = ", ".join(readable_source(s) for s in card["sources"]) or "–"
    behind = card["collection"] if card["aliases"] else "–"
    return (f'<tr data-collection="{_e(card["name"])}"><td>{_e(card["name"])}</td>'
            f"<td>{_e(behind)}</td><td>{_e(card['model'])}</td><td>{card['points']}</td>"
            f"<td>{_e(sources)}</td><td>{_e(_minute(card['last_written']))}</td></tr>")


def _minute(iso: str | None) -> str:
    """An ISO timestamp (UTC) as YYYY-MM-DD HH:MM, or never."""
    return iso.replace("T", " ")[:16] if iso else "never"


def collections_section(data: ReportData) -> str:
    """Aliases (the names users type) first; versioned and internal collections behind a
    toggle."""
    head = ["name", "collection", "model", "points", "sources", "last written (UTC)"]
    named = [c for c in data.collections if c["aliases"]]
    other = [c for c in data.collections if not c["aliases"]]
    main = (_table(head, [_collection_row(c) for c in named], ' id="aliases"') if named else
            '<p class="muted">No aliased collections yet: <code>tessera ingest</code> makes '
            "one.</p>")
    toggle = ""
    if other:
        toggle = (f'<details id="other-collections"><summary>{len(other)} versioned and internal '
                  "collections (not aliased: superseded versions, quality-* sets)</summary>"
                  + _table(head, [_collection_row(c) for c in other]) + "</details>")
    return f'<section id="collections"><h2>Collections</h2>{main}{toggle}</section>'


def _slot(chart_id: str, spec: dict[str, Any] | None, empty: str,
          specs: dict[str, dict[str, Any]], note: str = "") -> str:
    """A chart's place on the page: filled by the loader from `specs`, or its empty state."""
    if spec is None:
        return f'<div id="{chart_id}" class="empty"><p class="muted">{empty}</p>{note}</div>'
    specs[chart_id] = spec
    return f'<div><div id="{chart_id}" class="chart"></div>{note}</div>'


def charts_section(data: ReportData) -> tuple[str, dict[str, dict[str, Any]]]:
    """The charts' places and their specs (element id -> Vega-Lite spec)."""
    now, specs = data.generated_at, dict[str, dict[str, Any]]()
    volume = [{**r, "source": readable_source(r["source"])} for r in data.volume]
    slots = [
        _slot("quality-chart", quality_spec(data.quality) if data.quality else None,
              "No quality runs yet: <code>tessera quality</code> (or the nightly flow) fills "
              "this chart.", specs),
        _slot("volume-chart", stacked_bars(f"Documents indexed per source per day (last {DAYS})",
                                           volume, "source", "documents", "documents", now, DAYS)
              if volume else None,
              f"No documents indexed in the last {DAYS} days: <code>tessera ingest</code>.", specs),
        _slot("latency-chart", latency_spec(data.latency, now, DAYS) if data.latency else None,
              "No searches recorded yet: searches through <code>tessera api</code>, "
              "<code>tessera mcp</code>, <code>tessera search</code> or this page fill it.", specs),
        _slot("failure-chart", stacked_bars("Failed ingest runs per day (input vs pipeline)",
                                            data.failures, "kind", "runs", "runs", now, DAYS)
              if data.failures else None,
              f"No failed ingest runs in the last {DAYS} days.", specs),
        _slot("gpu-chart", stacked_bars("GPU seconds per day", data.gpu, "gpu_type", "seconds",
                                        "GPU seconds", now, DAYS) if data.gpu else None,
              "No GPU runs: runs on a GPU (local CUDA or the Modal backend) show here.", specs,
              f'<p class="muted">{GPU_NOTE}</p>')]
    return ('<section id="charts"><h2>Quality, volume, latency, failures, GPU</h2>'
            f'<div class="charts">{"".join(slots)}</div></section>', specs)


def failures_section(data: ReportData) -> str:
    """The latest failed runs with their errors, and quarantine reasons with record counts."""
    runs = [f'<tr class="failure"><td>{r["started_at"]:%Y-%m-%d %H:%M}</td><td>'
            f'{_e(", ".join(readable_source(s) for s in r["sources"].split(",") if s))}</td>'
            f'<td>{r["kind"]}</td><td class="err">{_e(str(r["error"])[:400])}</td></tr>'
            for r in data.failure_reasons]
    held = [f'<tr class="quarantined"><td>{_e(readable_source(q["source"]))}</td><td>'
            f'{_e(q["reason"])}</td><td>{q["records"]}</td></tr>' for q in data.quarantine_reasons]
    failed = (_table(["started (UTC)", "sources", "kind", "error"], runs, ' id="failed-runs"')
              if runs else '<p class="muted">No failed runs.</p>')
    refused = (_table(["source", "reason", "records"], held, ' id="quarantine-reasons"')
               if held else '<p class="muted">Nothing quarantined.</p>')
    return (f'<section id="failures"><h2>Failures and their reasons</h2><h3>Latest failed runs'
            f"</h3>{failed}<h3>Quarantined records by reason</h3>{refused}<p class=\"muted\">"
            "Each record: <code>tessera quarantine</code>.</p></section>")


def comparisons_section(data: ReportData) -> str:
    """The latest quality comparisons: what changed nDCG@10, by how much, and whether it is
    more than noise (the interval, the p-value, the set's power to see a max_drop loss)."""
    rows = [f'<tr class="comparison"><td>{r["recorded_at"]:%Y-%m-%d %H:%M}</td>'
            f'<td>{_e(r["kind"])}</td><td>{_e(readable_source(r["subject"]))}</td>'
            f'<td>{_e(r["dataset"])} · {_e(r["mode"])}</td><td>{_e(r["baseline"])} → '
            f'{_e(r["candidate"])}</td><td>{r["difference"]:+.4f} [{r["ci_low"]:+.4f}, '
            f'{r["ci_high"]:+.4f}]</td><td>{r["p_value"]:.3g}</td><td>{r["power"]:.0%}</td>'
            f'<td>{_e(r["decision"])}</td></tr>' for r in data.comparisons]
    body = (_table(["recorded (UTC)", "kind", "subject", "set · mode", "compared",
                    "nDCG@10 change [95%]", "p", "power", "decision"], rows,
                   ' id="comparisons"') if rows else
            '<p class="muted">No comparisons yet: a migration, a second quality run of a set, '
            'or <code>tessera tune</code> makes one.</p>')
    return ('<section id="quality-comparisons"><h2>Quality comparisons</h2>'
            f'{body}<p class="muted">Paired over the same queries: significant when p is under '
            '<code>quality.significance</code>; power is the chance to see a '
            '<code>quality.max_drop</code> loss.</p></section>')


def dashboard(data: ReportData) -> tuple[str, dict[str, dict[str, Any]]]:
    """The dashboard's HTML and its chart specs."""
    charts, specs = charts_section(data)
    return (freshness_section(data) + collections_section(data) + charts
            + comparisons_section(data) + failures_section(data), specs)
