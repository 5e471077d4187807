"""The prune flow: delete expired points in every collection (tessera/jobs/prune.py)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import config as tessera_config
from flows.runs import describe_prune, flow_span, prune_run_name, tag_run
from flows.steps import PrefectSteps
from tessera.jobs.prune import run_prune


@flow(name="prune", flow_run_name=prune_run_name, log_prints=True)
def prune_flow(config: str | None = None, dry_run: bool = False,
               now: int | None = None) -> dict[str, Any]:
    """Delete points whose expires_at has passed, in every collection (--dry-run: count only);
    `now` (epoch seconds, default the current time) is the clock tests inject."""
    settings = tessera_config.load(config)
    with flow_span("prune", settings):
        summary = run_prune(settings, PrefectSteps(), dry_run, now)
        tag_run(summary["run_id"])
    get_run_logger().info(describe_prune(summary))
    return summary
