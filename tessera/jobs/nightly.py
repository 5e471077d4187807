"""The nightly sequence: prune -> refresh models -> quality sets -> marts.

A failed step does not stop the later ones that do not depend on it: the marts are rebuilt even
after a quality gate breach, so `fct_retrieval_quality` shows the breach. The run then fails,
naming every failed step. Who runs each step is the caller's: plain calls from the CLI, subflows
from the nightly flow (so the Prefect UI shows which one failed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from tessera.core import telemetry
from tessera.core.errors import PipelineError
from tessera.core.settings import QualitySet, Settings


@dataclass
class NightlySteps:
    """How to run each part of the nightly sequence; each returns its summary or raises."""

    prune: Callable[[], Any]
    refresh_models: Callable[[], Any]
    quality: Callable[[QualitySet], Any]
    marts: Callable[[], Any]


@telemetry.traced("nightly run")
def run_nightly(settings: Settings, run: NightlySteps) -> dict[str, Any]:
    """Run every step, collect the failures, then raise naming them all (or return summaries)."""
    started = time.perf_counter()
    failures: list[str] = []

    def attempt(label: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except PipelineError as exc:
            failures.append(f"{label}: {exc}")
            return None

    out: dict[str, Any] = {"prune": attempt("prune", run.prune)}
    out["models"] = attempt("refresh-models", run.refresh_models)
    out["quality"] = []
    if out["models"] is not None:  # scoring with an unverified model would mean nothing
        for qs in settings.quality.sets:
            label = f"quality {qs.name or qs.path.name}"
            out["quality"].append(attempt(label, partial(run.quality, qs)))
    out["marts"] = attempt("marts", run.marts) if settings.marts.build_after_nightly else None
    out["seconds"] = round(time.perf_counter() - started, 3)
    if failures:
        raise PipelineError("nightly run failed in " + " | ".join(failures))
    return out
