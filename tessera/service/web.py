"""The web page: a search box with results, and the operator dashboard (freshness, collections,
charts, failures). Server-rendered HTML; the charts are Vega-Lite specs drawn by the vendored
Vega files (charts.py): no JavaScript build, nothing fetched from outside the machine.

`tessera report` writes it as one static file (the dashboard, Vega inlined; the search box then
says how to serve it). The search service's app serves it live at `/` (`tessera report --serve`,
`tessera api`), searching through the same SearchService as the API.
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
from tessera.service.charts import scripts
from tessera.service.dashboard import dashboard
from tessera.service.report_data import ReportData, gather
from tessera.service.schemas import SearchRequest
from tessera.service.search import readable_score

if TYPE_CHECKING:
    from tessera.service.request_log import RequestLog
    from tessera.service.service import SearchService

PAGE_MODES = ("hybrid", "dense", "sparse")  # the first is the page's default
PAGE_K = 10
# The page's searches as search_requests rows: the route, like the MCP tool's "tool/search".
PAGE_ROUTE = "page/search"
# A "T" on the header's colour, inline: the browser asks for no /favicon.ico.
FAVICON = ("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
           "%3Crect width='16' height='16' rx='3' fill='%23111827'/%3E%3Cpath d='M3 3h10v2.5H9.3V13"
           "H6.7V5.5H3z' fill='%23fff'/%3E%3C/svg%3E")
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
.rank{font-variant-numeric:tabular-nums;color:#374151;min-width:24px;font-weight:600}
.score{font-variant-numeric:tabular-nums;color:#374151;font-size:13px}
mark{background:#fde68a}.muted{color:#6b7280;font-size:13px}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:14px}.charts>div{min-width:0}
.chart{width:100%}.empty{border:1px dashed #d1d5db;border-radius:6px;padding:10px 14px}
details summary{cursor:pointer;color:#374151;margin:8px 0}td.err{font-family:monospace;font-size:12px}
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
                        f'<span class="rank">{hit["rank"]}</span><div>'
                        f'<b>{_e(hit.get("title") or hit["doc_id"])}</b> '
                        f'<span class="muted">{_e(hit.get("uri") or hit["doc_id"])}</span> '
                        f'<span class="score">{_e(readable_score(hit))}</span>'
                        f'<br>{highlight(str(hit.get("text") or ""), query)}</div></div>')
        body = "".join(rows) or '<p class="muted" id="no-results">No results.</p>'
    return f'<section id="search"><h2>Search</h2>{form}<div id="results">{body}</div></section>'


def render_page(data: ReportData, *, query: str = "", mode: str = "dense", modality: str = "",
                modes: list[str] | None = None, results: list[dict[str, Any]] | None = None,
                error: str | None = None, live: bool = True) -> str:
    """The whole page as one HTML document; the static copy (not `live`) inlines the Vega files,
    so it is one file that draws its charts offline."""
    board, specs = dashboard(data)
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<link rel="icon" href="{FAVICON}"><title>Tessera index</title><style>{CSS}</style>'
            '</head><body><header><h1>Tessera index</h1><span class="muted">generated '
            f"{data.generated_at:%Y-%m-%d %H:%M:%S} UTC</span></header><main>"
            + _search_section(query, mode, modality, modes or ["dense"], results, error, live)
            + board + "</main>" + scripts(specs, inline=not live) + "</body></html>")


def write_report(settings: Settings, out: Path) -> Path:
    """The static page (the dashboard; search needs `--serve`)."""
    from tessera.core.fs import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, render_page(gather(settings), live=False).encode("utf-8"))
    return out


def live_page(service: SearchService, params: Mapping[str, str],
              log: RequestLog | None = None) -> str:
    """The page for one GET's query string (`q`, `mode`, `modality`), searched through the
    search service. Each search is a search_requests event (interface `page`) in `log`, so the
    latency chart counts it with the API's, MCP's and CLI's searches."""
    query = params.get("q", "").strip()
    mode = params.get("mode") or PAGE_MODES[0]
    modality = params.get("modality", "")
    results, error = None, None
    if query:
        took: list[float] = []
        results, error = _page_search(service, query, mode, modality, took)
        if log is not None:
            for ms in took:
                log.add(interface="page", route=PAGE_ROUTE, status=200, latency_ms=ms, mode=mode,
                        k=PAGE_K, hits=len(results or []), query=query)
    data = gather(service.settings, found=_collections(service),
                  pending=log.pending() if log is not None else None)
    return render_page(data, query=query, mode=mode, modality=modality, modes=list(PAGE_MODES),
                       results=results, error=error)


def _collections(service: SearchService) -> dict[str, Any] | None:
    """The open service's collections; None (the store is read instead) when it cannot say."""
    try:
        return service.collections()
    except PipelineError:
        return None


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
