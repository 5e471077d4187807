"""The web page: a search box with results, and a status view with charts. Plain server-rendered
HTML with inline SVG charts: no JavaScript build, nothing fetched from the network.

`tessera report` writes it as one static file (the status view; the search box then says how to
serve it). The search service's app serves it live at `/` (`tessera report --serve`, `tessera
api`), searching through the same SearchService as the API.
"""

from __future__ import annotations

import base64
import html
import io
import re
import time
from collections.abc import Mapping, MutableSequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tessera.core.errors import PipelineError
from tessera.core.settings import Settings
from tessera.service.report_data import ReportData, gather
from tessera.service.schemas import SearchRequest

if TYPE_CHECKING:
    from tessera.service.service import SearchService

PAGE_MODES = ("hybrid", "dense", "sparse")  # the first is the page's default
PAGE_K = 10
# The latency chart draws the page's last searches: a long-running server's memory stays flat.
LATENCY_SAMPLES = 10_000
COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2"]
CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#111;background:#f6f7f9}
header{background:#111827;color:#fff;padding:12px 24px}header h1{margin:0;font-size:20px}
main{max-width:1100px;margin:0 auto;padding:16px 24px}
section{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 18px;margin:14px 0}
h2{font-size:17px;margin:4px 0 10px}table{border-collapse:collapse;width:100%}
td,th{padding:4px 8px;border-bottom:1px solid #eee;text-align:left;font-size:14px}
.fresh{color:#15803d}.stale{color:#b91c1c;font-weight:600}.never{color:#6b7280}
form input[type=text]{width:55%;padding:6px;font-size:15px}form select,form button{padding:6px}
.hit{display:flex;gap:12px;padding:8px 0;border-bottom:1px solid #eee}
.hit img{width:96px;height:96px;object-fit:cover;border-radius:4px}
.score{font-variant-numeric:tabular-nums;color:#374151;min-width:56px}
mark{background:#fde68a}.muted{color:#6b7280;font-size:13px}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:14px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


_STOPWORDS = frozenset(["the", "and", "for", "are", "was", "were", "with", "from", "that", "this", "what", "why", "how", "who", "which", "does", "did", "into", "onto", "over", "under", "about", "than", "then", "them", "they", "their", "there"])


def highlight(text: str, query: str, width: int = 260) -> str:
    """An escaped snippet around the first matching term, every query word (whole words, not
    stopwords) in <mark>."""
    terms = sorted({t for t in re.findall(r"\w+", query.lower())
                    if len(t) >= 3 and t not in _STOPWORDS}, key=len, reverse=True)
    flat = " ".join(text.split())
    start = 0
    if terms:
        hit = re.search(r"\b(" + "|".join(map(re.escape, terms)) + r")\b", flat, re.IGNORECASE)
        start = max(0, hit.start() - width // 3) if hit else 0
    snippet = ("…" if start else "") + flat[start:start + width] + ("…" if start + width < len(flat) else "")
    out = _e(snippet)
    if terms:
        out = re.sub(r"\b(" + "|".join(re.escape(_e(t)) for t in terms) + r")\b",
                     r"<mark>\1</mark>", out, flags=re.IGNORECASE)
    return out


def thumbnail(uri: str | None, size: int = 96) -> str | None:
    """A small JPEG of an image hit as a data: URI (the page never links files on disk)."""
    if not uri or not Path(uri).is_file():
        return None
    try:
        from PIL import Image

        with Image.open(uri) as img:
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.convert("RGB").save(buf, "JPEG", quality=80)
    except Exception:  # noqa: BLE001 - an unreadable image shows no thumbnail, not an error
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def thumbnail_of(settings: Settings, hit: dict[str, Any]) -> str | None:
    """An image hit's thumbnail, its file found from the uri search shows: `source:path` under
    that source's configured root (nothing outside it is read), or the stored absolute path
    with api.absolute_uris."""
    from tessera.core.errors import RecordError
    from tessera.sources.base import safe_path

    uri = str(hit.get("uri") or "")
    if settings.api.absolute_uris:
        return thumbnail(uri)
    name, colon, rel = uri.partition(":")
    root = next((s.path for s in settings.sources if s.name == name == hit.get("source")), None)
    if not colon or root is None:
        return None
    try:
        return thumbnail(str(safe_path(root, rel)))  # an image's uri has no #fragment
    except RecordError:
        return None


# ------------------------------------------------------------------------------------ charts


def _short(label: str) -> str:
    """MM-DD for an ISO date, the label itself otherwise."""
    return label[5:] if re.fullmatch(r"\d{4}-\d\d-\d\d", label) else label


def bar_chart(title: str, labels: list[str], series: dict[str, list[float]],
              width: int = 500, height: int = 200) -> str:
    """Grouped bars, one group per label (an SVG with class `chart`)."""
    pad, n = 30, max(len(labels), 1)
    top = max([v for vals in series.values() for v in vals] + [1.0])
    group = (width - pad) / n
    bar = max(group / (len(series) + 1), 1.0)
    parts = [f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" '
             f'height="{height + 40}" viewBox="0 0 {width} {height + 40}">',
             f'<text x="{pad}" y="14" font-size="13">{_e(title)}</text>',
             f'<line x1="{pad}" y1="{height + 20}" x2="{width}" y2="{height + 20}" stroke="#999"/>',
             f'<text x="0" y="34" font-size="10">{top:g}</text>']
    for s, (name, vals) in enumerate(series.items()):
        for i, v in enumerate(vals):
            h = (height - 20) * v / top
            x = pad + i * group + s * bar
            parts.append(f'<rect class="bar" data-series="{_e(name)}" x="{x:.1f}" '
                         f'y="{height + 20 - h:.1f}" width="{bar * 0.9:.1f}" height="{h:.1f}" '
                         f'fill="{COLORS[s % len(COLORS)]}"><title>{_e(labels[i])} {_e(name)}: '
                         f'{v:g}</title></rect>')
        parts.append(f'<text x="{pad + 110 * s}" y="{height + 36}" font-size="11" '
                     f'fill="{COLORS[s % len(COLORS)]}">■ {_e(name)}</text>')
    for i, label in enumerate(labels):
        if i % max(1, n // 7) == 0:
            parts.append(f'<text x="{pad + i * group:.1f}" y="{height + 30}" font-size="9">'
                         f"{_e(_short(label))}</text>")
    return "".join(parts) + "</svg>"


def line_chart(title: str, series: dict[str, list[tuple[Any, float]]], width: int = 500,
               height: int = 200) -> str:
    """One polyline per series over its runs in order, y from 0 to 1 (nDCG)."""
    pad = 30
    parts = [f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" '
             f'height="{height + 40}" viewBox="0 0 {width} {height + 40}">',
             f'<text x="{pad}" y="14" font-size="13">{_e(title)}</text>',
             f'<line x1="{pad}" y1="{height + 20}" x2="{width}" y2="{height + 20}" stroke="#999"/>',
             '<text x="0" y="34" font-size="10">1.0</text>',
             f'<text x="0" y="{height + 20}" font-size="10">0</text>']
    for s, (name, points) in enumerate(series.items()):
        color = COLORS[s % len(COLORS)]
        step = (width - pad - 10) / max(len(points) - 1, 1)
        xy = [(pad + 5 + i * step, height + 20 - (height - 20) * v) for i, (_, v) in enumerate(points)]
        parts.append(f'<polyline class="series" data-series="{_e(name)}" fill="none" '
                     f'stroke="{color}" stroke-width="2" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy) + '"/>')
        parts += [f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}">'
                  f'<title>{_e(name)} {when:%Y-%m-%d %H:%M}: {v:.3f}</title></circle>'
                  for (x, y), (when, v) in zip(xy, points, strict=True)]
        parts.append(f'<text x="{pad + 160 * s}" y="{height + 36}" font-size="11" '
                     f'fill="{color}">■ {_e(name)}</text>')
    return "".join(parts) + "</svg>"


# -------------------------------------------------------------------------------------- page


def _search_section(query: str, mode: str, modality: str, modes: list[str],
                    results: list[dict[str, Any]] | None, error: str | None, live: bool) -> str:
    opts = "".join(f'<option value="{m}"{" selected" if m == mode else ""}>{m}</option>' for m in modes)
    kinds = "".join(f'<option value="{m}"{" selected" if m == modality else ""}>{m or "all"}</option>'
                    for m in ("", "text", "image"))
    form = (f'<form method="get" action="/"><input type="text" name="q" value="{_e(query)}" '
            f'placeholder="search the index" aria-label="query" autofocus{"" if live else " disabled"}> '
            f'<select name="mode" aria-label="mode">{opts}</select> '
            f'<select name="modality" aria-label="modality">{kinds}</select> '
            f'<button type="submit"{"" if live else " disabled"}>Search</button></form>')
    body = ""
    if not live:
        body = ('<p class="muted">This is a static copy. Run <code>tessera report --serve</code> '
                "to search from this page.</p>")
    elif error:
        body = f'<p class="stale" id="search-error">{_e(error)}</p>'
    elif results is not None:
        rows = []
        for hit in results:
            thumb = hit.get("thumbnail")  # made by the server, which knows the source roots
            img = f'<img src="{thumb}" alt="{_e(hit.get("title") or hit["doc_id"])}">' if thumb else ""
            rows.append(f'<div class="hit" data-doc-id="{_e(hit["doc_id"])}">{img}'
                        f'<span class="score">{hit["score"]:.3f}</span><div>'
                        f'<b>{_e(hit.get("title") or hit["doc_id"])}</b> '
                        f'<span class="muted">{_e(hit["doc_id"])} · {_e(hit.get("source"))}</span>'
                        f'<br>{highlight(str(hit.get("text") or ""), query)}</div></div>')
        body = "".join(rows) or '<p class="muted" id="no-results">No results.</p>'
    return f'<section id="search"><h2>Search</h2>{form}<div id="results">{body}</div></section>'


def _status_section(data: ReportData) -> str:
    rows = ""
    for f in data.freshness:
        last = f"{f.last_success:%Y-%m-%d %H:%M} UTC" if f.last_success else "never"
        rows += (f'<tr class="{f.status}" data-source="{_e(f.source)}"><td>{_e(f.source)}</td>'
                 f'<td>{_e(f.schedule or "none (judged daily)")}</td><td>{last}</td>'
                 f"<td>{f.missed}</td><td>{f.status}</td></tr>")
    fresh = ("<table><tr><th>source</th><th>schedule</th><th>last completed ingest</th>"
             f"<th>scheduled runs missed</th><th>verdict</th></tr>{rows}</table>")
    cols = "".join(f"<tr><td>{_e(c['name'])}</td><td>{_e(c['model'])}</td><td>{c['points']}</td></tr>"
                   for c in data.collections)
    days = [d["day"] for d in data.daily]
    volume = bar_chart("Documents indexed per day", days, {"indexed": [d["documents"] for d in data.daily]})
    failures = bar_chart("Failed runs per day", days, {
        "pipeline": [d["failures"] for d in data.daily],
        "input": [d["input_failures"] for d in data.daily]})
    quality = (line_chart("nDCG@10 per quality set and mode", data.quality) if data.quality
               else '<p class="muted">No quality runs yet: <code>tessera nightly</code>.</p>')
    lat = data.latency_ms
    latency = (bar_chart(f"Search latency, ms ({int(lat['count'])} searches)", ["p50", "p95", "p99"],
                         {"ms": [lat["p50"], lat["p95"], lat["p99"]]}) if lat else
               '<p class="muted">No searches measured yet (search from this page).</p>')
    return (f'<section id="freshness"><h2>Freshness against each source\'s schedule</h2>{fresh}'
            f'</section><section id="collections"><h2>Collections</h2><table><tr><th>collection'
            f"</th><th>model</th><th>points</th></tr>{cols}</table></section>"
            f'<section id="charts"><h2>Quality, volume, failures, latency</h2><div class="charts">'
            f'<div id="quality-chart">{quality}</div><div id="volume-chart">{volume}</div>'
            f'<div id="failure-chart">{failures}</div><div id="latency-chart">{latency}</div>'
            "</div></section>")


def render_page(data: ReportData, *, query: str = "", mode: str = "dense", modality: str = "",
                modes: list[str] | None = None, results: list[dict[str, Any]] | None = None,
                error: str | None = None, live: bool = True) -> str:
    """The whole page as one HTML document."""
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>Tessera index</title><style>{CSS}</style></head><body><header><h1>Tessera "
            f'index</h1><span class="muted">generated {data.generated_at:%Y-%m-%d %H:%M:%S} UTC'
            f"</span></header><main>"
            + _search_section(query, mode, modality, modes or ["dense"], results, error, live)
            + _status_section(data) + "</main></body></html>")


def write_report(settings: Settings, out: Path) -> Path:
    """The static page (status view; search needs `--serve`)."""
    from tessera.core.fs import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, render_page(gather(settings), live=False).encode("utf-8"))
    return out


def live_page(service: SearchService, params: Mapping[str, str],
              latencies: MutableSequence[float]) -> str:
    """The page for one GET's query string (`q`, `mode`, `modality`), searched through the
    search service; each search's time goes into `latencies` for the latency chart."""
    query = params.get("q", "").strip()
    mode = params.get("mode") or PAGE_MODES[0]
    modality = params.get("modality", "")
    results, error = None, None
    if query:
        results, error = _page_search(service, query, mode, modality, latencies)
    return render_page(gather(service.settings, list(latencies)), query=query, mode=mode,
                       modality=modality, modes=list(PAGE_MODES), results=results, error=error)


def _page_search(service: SearchService, query: str, mode: str, modality: str,
                 latencies: MutableSequence[float]
                 ) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(the hits, with thumbnails for images; None) or (None, why the search was refused)."""
    try:
        request = SearchRequest.model_validate({"query": query, "k": PAGE_K, "mode": mode,
                                                "filters": {"modality": modality or None}})
        start = time.perf_counter()
        answer, _ = service.search(request)
        latencies.append((time.perf_counter() - start) * 1000)
    except ValidationError as exc:
        return None, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                               for e in exc.errors())
    except PipelineError as exc:
        return None, str(exc)
    results: list[dict[str, Any]] = answer["results"]
    for hit in results:
        if hit.get("modality") == "image":
            hit["thumbnail"] = thumbnail_of(service.settings, hit)
    return results, None
