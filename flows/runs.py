"""Flow runs a person can find: named after what they did (`ingest-examples-20261202T0124`),
tagged with Tessera's own `run_id` (the key of every event the run wrote), and closed with a
sentence rather than a dict.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tessera.core import telemetry
from tessera.core.settings import Settings

RUN_ID_TAG = "run_id:"
TRACE_ID_TAG = "trace_id:"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:40] or "run"


def _stamp() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M}"


def _parameters() -> dict[str, Any]:
    from prefect.runtime import flow_run

    params: dict[str, Any] = flow_run.parameters or {}
    return params


def ingest_run_name() -> str:
    """`ingest-<what>-<UTC minute>`: the sources, the PATH's name, or the labelled set."""
    p = _parameters()
    if p.get("dataset"):
        what = f"quality-set-{p.get('dataset_name') or Path(p['dataset']).name}"
    elif p.get("path"):
        what = f"path-{Path(p['path']).name}"
    elif p.get("sources"):
        what = "+".join(p["sources"])
    else:
        what = "all-sources"
    return f"ingest-{_slug(what)}-{_stamp()}"


def quality_run_name() -> str:
    """`quality-<set>-<UTC minute>`."""
    p = _parameters()
    return f"quality-{_slug(p.get('name') or Path(p.get('dataset') or 'set').name)}-{_stamp()}"


def tune_run_name() -> str:
    """`tune-<set>-<UTC minute>`."""
    p = _parameters()
    return f"tune-{_slug(p.get('name') or Path(p.get('dataset') or 'set').name)}-{_stamp()}"


def prune_run_name() -> str:
    """`prune-<UTC minute>`, or `prune-dry-run-...`."""
    return f"prune{'-dry-run' if _parameters().get('dry_run') else ''}-{_stamp()}"


def plain_run_name(kind: str) -> str:
    """`<kind>-<UTC minute>` for the flows with nothing more to say (nightly, refresh-models)."""
    return f"{kind}-{_stamp()}"


def tag_run(run_id: str) -> None:
    """Add `run_id:<id>` (and `trace_id:<id>`, inside a span) to the current flow run's tags
    (no-op outside a flow run)."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    trace_id, _ = telemetry.current_ids()
    extra = [f"{TRACE_ID_TAG}{trace_id}"] if trace_id else []
    tags = list(dict.fromkeys([*(ctx.flow_run.tags or []), f"{RUN_ID_TAG}{run_id}", *extra]))
    with get_client(sync_client=True) as client:
        client.update_flow_run(ctx.flow_run.id, tags=tags)
    ctx.flow_run.tags = tags


@contextmanager
def flow_span(name: str, settings: Settings) -> Iterator[None]:
    """The flow run as the root span of its trace (a child of the caller's when the CLI started
    it), every span under it stamped with the Prefect flow-run id."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    found = str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None
    telemetry.setup(settings.telemetry, role="worker")
    token = telemetry.flow_run_id.set(found)
    try:
        with telemetry.span(f"flow {name}"):
            yield
    finally:
        telemetry.flow_run_id.reset(token)


def describe_ingest(summary: dict[str, Any]) -> str:
    """One sentence for an ingest run."""
    return (f"Ingest run {summary['run_id']} saw {summary['seen']} documents: {summary['indexed']} "
            f"indexed, {summary['unchanged']} unchanged, {summary['quarantined']} quarantined, "
            f"{summary['deleted']} deleted ({summary['chunks_embedded']} chunks embedded) "
            f"in {summary['seconds']:.1f} s.")


def describe_prune(summary: dict[str, Any]) -> str:
    """One sentence for a prune run."""
    verb = "would delete" if summary.get("dry_run") else "deleted"
    expired = summary.get("expired", summary.get("deleted", 0))
    line = (f"Prune run {summary.get('run_id', '')} {verb} {summary.get('deleted', 0)} of "
            f"{expired} expired points.").replace("run  ", "run ")
    if summary.get("unlisted"):
        line += f" Not pruned: {', '.join(summary['unlisted'])} ({summary['unlisted_fix']})."
    return line


def describe_nightly(out: dict[str, Any]) -> str:
    """One sentence for the nightly run (its parts' summaries stay in the return value)."""
    parts = []
    prune = out.get("prune") or {}
    if prune:
        parts.append(f"pruned {prune.get('deleted', 0)} expired points")
    models = (out.get("models") or {}).get("models") or []
    if models:
        parts.append(f"verified {len(models)} model{'s' if len(models) != 1 else ''}")
    for q in out.get("quality") or []:
        if q:
            parts.append(f"scored {q['dataset']} at nDCG@10 {q['ndcg@10']:.3f}")
    if out.get("marts"):
        parts.append("rebuilt the marts")
    body = ", ".join(parts) if parts else "had nothing to do"
    return f"Nightly run {body} in {out.get('seconds', 0):.1f} s."
