"""Nightly operations: prune -> refresh models -> quality sets -> marts.

Each step is its own flow run (a subflow), so the Prefect UI shows which one failed; the sequence
and its failure rules are tessera/jobs/nightly.py's.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from prefect import flow, get_run_logger

from flows import config as tessera_config
from flows.prune import prune_flow
from flows.quality import quality_flow
from flows.runs import describe_nightly, flow_span, plain_run_name, tag_run
from flows.steps import PrefectSteps
from tessera.core.errors import PipelineError
from tessera.jobs.marts import build_and_report
from tessera.jobs.model_cache import run_refresh_models
from tessera.jobs.nightly import NightlySteps, run_nightly

NIGHTLY_CRON = "0 2 * * *"  # 02:00 in Settings.timezone; infra/prefect.yaml says the same


@flow(name="refresh-models", flow_run_name=partial(plain_run_name, "refresh-models"),
      log_prints=True)
def refresh_models_flow(config: str | None = None) -> dict[str, Any]:
    """Verify every configured model against its manifest and probe; fill the Modal Volume."""
    settings = tessera_config.load(config)
    with flow_span("refresh-models", settings):
        out = run_refresh_models(settings, PrefectSteps())
        tag_run(out["run_id"])
    return out


@flow(name="nightly", flow_run_name=partial(plain_run_name, "nightly"), log_prints=True)
def nightly_flow(config: str | None = None) -> dict[str, Any]:
    """Prune expired points, verify the model cache, score the quality sets, rebuild the marts."""
    settings = tessera_config.load(config)

    def subflow(state: Any) -> Any:
        if state.is_completed():
            return state.result()
        raise PipelineError(str(state.message or state.name))

    with flow_span("nightly", settings):
        out = run_nightly(settings, NightlySteps(
            prune=lambda: subflow(prune_flow(config=config, return_state=True)),
            refresh_models=lambda: subflow(refresh_models_flow(config=config, return_state=True)),
            quality=lambda qs: subflow(quality_flow(dataset=str(qs.path), config=config,
                                                    name=qs.name, return_state=True)),
            marts=lambda: build_and_report(settings, PrefectSteps())))
    from tessera.service.report_data import publish

    publish(settings, PrefectSteps())  # the web page's tables, where the Prefect UI shows them
    get_run_logger().info(describe_nightly(out))
    return out
