"""The ingest flow: the ingest job (tessera/ingest/run.py) with each step a Prefect task."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import config as tessera_config
from flows.runs import describe_ingest, flow_span, ingest_run_name, tag_run
from flows.steps import PrefectSteps
from tessera.core.events import new_run_id
from tessera.ingest.run import run_ingest
from tessera.jobs.marts import build_and_report
from tessera.jobs.quality import dataset_settings


@flow(name="ingest", flow_run_name=ingest_run_name, log_prints=True)
def ingest_flow(config: str | None = None, sources: list[str] | None = None,
                ttl: str | None = None, path: str | None = None, dataset: str | None = None,
                dataset_name: str | None = None, verify: bool = False) -> dict[str, Any]:
    """Index new and changed documents of the given sources (default: all declared), of PATH,
    or of a labelled set's corpus (`dataset`, as the quality flow does). `verify` reads every
    file, even one whose stat is unchanged since it was indexed."""
    settings = tessera_config.load(config)
    steps = PrefectSteps()
    run_id = new_run_id()
    with flow_span("ingest", settings):
        tag_run(run_id)
        if dataset is not None:
            scoped = dataset_settings(settings, dataset, dataset_name)
            summary = run_ingest(scoped, steps, [scoped.sources[0].name], flow="quality",
                                 run_id=run_id)
        else:
            summary = run_ingest(settings, steps, sources, ttl, path, run_id=run_id,
                                 verify=verify)
    get_run_logger().info(describe_ingest(summary))
    if settings.marts.build_after_ingest:
        build_and_report(settings, steps)
    return summary
