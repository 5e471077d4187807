"""The Prefect task that runs one suite on one batch, so each suite run shows in the flow's UI."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from data_contracts import engine
from data_contracts.engine import Outcome


@task(name="contract-suite", task_run_name="contract-{suite}", cache_policy=NO_CACHE)
def validate_suite(suite: str, frame: Any, parameters: dict[str, Any]) -> list[Outcome]:
    """Validate one batch's frame against one suite (no retries: the same data fails the same way)."""
    outcomes = engine.validate(suite, frame, parameters)
    failed = [f"{o.spec.name} ({o.unexpected_count if o.unexpected_count is not None else 'batch'})"
              for o in outcomes if not o.success]
    get_run_logger().info("%s: %d rows, %d expectations, %s", suite, len(frame), len(outcomes),
                          "all passed" if not failed else "failed: " + ", ".join(failed))
    return outcomes
