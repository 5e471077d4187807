"""The migrate flow: blue/green migration of an alias (tessera/jobs/migration/job.py), or rollback.

A refusal (quality gate, missing documents) fails the flow run; the markdown artifact compares
live and shadow per metric either way.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows import config as tessera_config
from flows.runs import flow_span
from flows.steps import PrefectSteps
from tessera.jobs.migration.job import run_migrate, run_rollback


@flow(name="migrate", log_prints=True)
def migrate_flow(alias: str, config: str | None = None, model: str | None = None,
                 set: list[str] | None = None, dry_run: bool = False,  # noqa: A002 - the CLI's name
                 rollback: bool = False) -> dict[str, Any]:
    """Build a shadow of `alias` with `model` / `set` (KEY=VALUE), gate it on the quality sets
    against the live collection, and switch the alias; or, with `rollback`, point it back."""
    settings = tessera_config.load(config)
    steps = PrefectSteps()
    with flow_span("migrate", settings):
        if rollback:
            result = run_rollback(settings, alias, steps)
        else:
            result = run_migrate(settings, alias, model, set, dry_run, steps)
    get_run_logger().info("migrate %s", result)
    return result
