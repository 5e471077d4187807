"""The dashboard's charts: Vega-Lite specs built as plain dicts (no Altair: it is slow to import),
drawn in the browser by the Vega files vendored in static/vega/ (see its README.md). The live
page loads those files from this app (`/static/vega/...?v=VERSION`); the static report inlines
them, so it stays one file that opens offline.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

VEGA_VERSIONS = {"vega": "6.4.0", "vega-lite": "6.4.3", "vega-embed": "7.3.0"}
VEGA_DIR = Path(__file__).parent / "static" / "vega"
VEGA_PREFIX = "/static/vega"
COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2"]
HEIGHT = 190
# Draws every chart of the page: specs come from the JSON block `chart-specs`, one per element
# id; the SVG renderer keeps marks in the DOM (tests count them) and crisp when printed.
LOADER = """
const specs = JSON.parse(document.getElementById("chart-specs").textContent);
for (const [id, spec] of Object.entries(specs)) {
  vegaEmbed("#" + id, spec, {renderer: "svg", actions: false, mode: "vega-lite"})
    .catch((err) => { document.getElementById(id).textContent = "chart failed: " + err; });
}
"""


def scripts(specs: dict[str, dict[str, Any]], inline: bool) -> str:
    """The page's script tags: the Vega files (inlined, or from this app relative to the page,
    which also holds behind a proxy's root path), the specs as JSON, and the loader."""
    if not specs:
        return ""
    tags = []
    for package in VEGA_VERSIONS:
        name = f"{package}.min.js"
        if inline:
            # No "</script" occurs in these files (checked by a test), so they inline as they are.
            tags.append(f"<script>{(VEGA_DIR / name).read_text(encoding='utf-8')}</script>")
        else:
            tags.append(f'<script src="{VEGA_PREFIX.lstrip("/")}/{name}'
                        f'?v={VEGA_VERSIONS[package]}"></script>')
    # "<" escaped: a source name or error text cannot close the script element.
    data = json.dumps(specs, default=str).replace("<", "\\u003c")
    return ("".join(tags) + f'<script type="application/json" id="chart-specs">{data}</script>'
            f"<script>{LOADER}</script>")


def _base(title: str, rows: list[dict[str, Any]], subtitle: str = "") -> dict[str, Any]:
    """What every chart shares: its data, the container's width, a legend above the plot (never
    over the x axis), the page's font."""
    return {"title": {"text": title, "subtitle": subtitle, "anchor": "start", "fontSize": 14},
            "data": {"values": rows}, "width": "container", "height": HEIGHT,
            "autosize": {"type": "fit-x", "contains": "padding"},
            "config": {"legend": {"orient": "top", "direction": "horizontal", "title": None},
                       "range": {"category": COLORS}, "font": "system-ui, sans-serif",
                       "view": {"stroke": None}}}


def _day_axis(now: datetime, days: int) -> dict[str, Any]:
    """A temporal x over the window's UTC days (today included), a tick label per day."""
    first = (now - timedelta(days=days - 1)).date().isoformat()
    last = (now + timedelta(days=1)).date().isoformat()
    return {"field": "day", "type": "temporal", "timeUnit": "utcyearmonthdate",
            "title": "day (UTC)", "scale": {"type": "utc", "domain": [first, last]},
            "axis": {"format": "%b %d", "labelAngle": 0, "tickCount": "day",
                     "labelOverlap": True, "grid": False}}


def stacked_bars(title: str, rows: list[dict[str, Any]], series: str, value: str,
                 y_title: str, now: datetime, days: int) -> dict[str, Any]:
    """Bars per UTC day, stacked by `series`, with a tooltip per bar."""
    spec = _base(title, rows)
    spec["mark"] = {"type": "bar", "tooltip": True, "width": {"band": 0.8}}
    spec["encoding"] = {
        "x": _day_axis(now, days),
        "y": {"field": value, "type": "quantitative", "stack": "zero", "title": y_title,
              "axis": {"tickMinStep": 1}},  # counts: no 0.2 of a run
        "color": {"field": series, "type": "nominal"},
        "tooltip": [{"field": "day", "type": "temporal", "timeUnit": "utcyearmonthdate",
                     "title": "day (UTC)"}, {"field": series, "type": "nominal"},
                    {"field": value, "type": "quantitative"}]}
    return spec


def lines_with_points(title: str, rows: list[dict[str, Any]], x: dict[str, Any], y: str,
                      y_title: str, series: str, subtitle: str = "") -> dict[str, Any]:
    """One line per `series` over a temporal x, each value a point with a tooltip."""
    spec = _base(title, rows, subtitle)
    spec["mark"] = {"type": "line", "point": {"filled": True, "size": 50}, "tooltip": True}
    spec["encoding"] = {
        "x": x, "y": {"field": y, "type": "quantitative", "title": y_title},
        "color": {"field": series, "type": "nominal"},
        "tooltip": [{"field": x["field"], "type": "temporal", "title": x["title"],
                     **({"timeUnit": x["timeUnit"]} if "timeUnit" in x else
                        {"format": "%Y-%m-%d %H:%M UTC", "formatType": "utc"})},
                    {"field": series, "type": "nominal"},
                    {"field": y, "type": "quantitative", "title": y_title, "format": ".3~f"}]}
    return spec


def quality_spec(quality: dict[str, list[tuple[datetime, float]]]) -> dict[str, Any]:
    """nDCG@10 per quality set and mode, one point per run, at the run's start time."""
    rows = [{"started": when.isoformat(), "series": key, "ndcg_at_10": value}
            for key, points in quality.items() for when, value in points]
    x = {"field": "started", "type": "temporal", "title": "run started (UTC)",
         "scale": {"type": "utc"},
         "axis": {"format": "%b %d %H:%M", "labelAngle": 0, "grid": False, "labelOverlap": True}}
    spec = lines_with_points("nDCG@10 per quality set and mode", rows, x, "ndcg_at_10",
                             "nDCG@10", "series")
    spec["encoding"]["y"]["scale"] = {"domain": [0, 1]}
    return spec


def latency_spec(rows: list[dict[str, Any]], now: datetime, days: int) -> dict[str, Any]:
    """Search latency p50 and p99 per UTC day, the day's search count in the tooltip."""
    spec = lines_with_points("Search latency per day, ms", rows, _day_axis(now, days), "ms",
                             "milliseconds", "stat",
                             "every interface: API, MCP, CLI and this page")
    spec["encoding"]["tooltip"].append({"field": "searches", "type": "quantitative"})
    return spec
