"""The tune flow: learn search settings on a labelled set's train split, gated on its test split."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import config as tessera_config
from flows.runs import flow_span, tag_run, tune_run_name
from flows.steps import PrefectSteps
from tessera.jobs.tune import run_tune


@flow(name="tune", flow_run_name=tune_run_name, log_prints=True)
def tune_flow(dataset: str, config: str | None = None, name: str | None = None) -> dict[str, Any]:
    """Choose fusion and document scoring on `train`, apply them only if `test` does not say
    they are worse (the run's table artifact lists every trial)."""
    settings = tessera_config.load(config)
    with flow_span("tune", settings):
        summary = run_tune(settings, dataset, PrefectSteps(), name)
        tag_run(summary["run_id"])
    return summary
