"""The quality flow: index a labelled set through the ingest flow (a subflow), then score it."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import config as tessera_config
from flows.ingest import ingest_flow
from flows.runs import flow_span, quality_run_name, tag_run
from flows.steps import PrefectSteps
from tessera.core.events import utcnow
from tessera.jobs.quality import score_quality


@flow(name="quality", flow_run_name=quality_run_name, log_prints=True)
def quality_flow(dataset: str, config: str | None = None, limit_queries: int | None = None,
                 name: str | None = None) -> dict[str, Any]:
    """Score retrieval on a BEIR-layout set; fail the run when a configured gate is breached."""
    settings = tessera_config.load(config)
    started = utcnow()
    with flow_span("quality", settings):
        indexed = ingest_flow(config=config, dataset=dataset, dataset_name=name)
        tag_run(indexed["run_id"])
        return score_quality(settings, PrefectSteps(), dataset, indexed, started, limit_queries,
                             name)
