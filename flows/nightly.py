"""Nightly operations: prune -> refresh models -> quality sets -> marts; and serving every deployment.

Each step is its own flow run (a subflow), so the Prefect UI shows which one failed. A failed step
does not stop the later ones that do not depend on it: the marts are rebuilt even after a
quality gate breach, so `fct_retrieval_quality` shows the breach. The nightly run then fails,
naming every failed step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.prune import prune_flow
from flows.quality import quality_flow
from models import get_spec
from models.cache import (
    CacheReport,
    fill_modal_volume,
    hub_fetcher,
    hub_reachable,
    local_loader,
    unreachable,
)
from models.cache import refresh_model as refresh_one
from tessera.errors import EmbeddingError, PipelineError
from tessera.events import EventLog, new_run_id, utcnow
from tessera.settings import Settings, default_config_path, load_settings

NIGHTLY_CRON = "0 2 * * *"  # 02:00 in Settings.timezone; infra/prefect.yaml says the same
WORK_POOL = "tessera"


def configured_models(settings: Settings) -> list[str]:
    """The model the pipeline embeds with, then every model declared under [models]."""
    return list(dict.fromkeys([settings.model, *settings.models]))


@task(cache_policy=NO_CACHE)
def refresh_model(settings: Settings, name: str) -> CacheReport:
    """Verify one model's files and probe vector; download it first where a source is reachable."""
    spec = get_spec(settings, name)
    fetch = hub_fetcher if hub_reachable() else None
    emb = settings.embedding
    loader = local_loader(emb.device)
    if emb.runtime == "openvino" and spec.kind == "sentence-transformers":
        # Probe through the derived export, so a stale or broken export fails the check too.
        from models.optimized import openvino_loader

        loader = openvino_loader(settings.model_cache_dir, emb.precision)
    return refresh_one(spec, settings.model_cache_dir, fetch=fetch, loader=loader)


def _transient(_task: Any, _run: Any, state: Any) -> bool:
    """Retry a Volume fill unless Modal said no credentials or no deployed app (retries won't help)."""
    from models.modal_backend import explain_modal_error

    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - only inspecting why it failed
        cause = exc.__cause__ or exc
        return explain_modal_error(cause, "", "") is None
    return False


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=_transient)
def fill_volume(settings: Settings, names: list[str]) -> list[CacheReport]:
    """Have the deployed Modal app download the models into its Volume."""
    return fill_modal_volume([get_spec(settings, n) for n in names], settings.embedding.modal)


@flow(name="refresh-models", log_prints=True)
def refresh_models_flow(config: str | None = None) -> dict[str, Any]:
    """Verify every configured model against its manifest and probe; fill the Modal Volume."""
    settings = load_settings(config)
    started, events = time.perf_counter(), EventLog(settings.events_dir, new_run_id())
    names = configured_models(settings)
    local = [refresh_model(settings, name) for name in names]
    remote: list[CacheReport] = []
    if settings.embedding.backend in ("modal", "auto"):
        state = fill_volume(settings, names, return_state=True)
        remote = state.result() if state.is_completed() else unreachable(
            [get_spec(settings, n) for n in names],
            f"Modal Volume {settings.embedding.modal.volume!r}", str(state.message))
    reports = local + remote
    now = utcnow()
    for report in reports:
        events.add("model_cache_events", recorded_at=now, **report.event())
    events.flush()
    for report in reports:
        get_run_logger().info("model %s: %s - %s", report.model, report.status, report.message)
    # With backend "auto" the Volume serves only large backlogs and local embedding still works,
    # so an unreachable Volume is recorded (status missing) without failing the run.
    failed = [r for r in (reports if settings.embedding.backend == "modal" else local) if r.failed]
    if failed:
        raise EmbeddingError("model cache check failed: " + " | ".join(
            f"{r.model} ({r.status}): {r.message}" for r in failed))
    return {"run_id": events.run_id, "models": [r.summary() for r in reports],
            "seconds": round(time.perf_counter() - started, 3)}


@flow(name="nightly", log_prints=True)
def nightly_flow(config: str | None = None) -> dict[str, Any]:
    """Prune expired points, verify the model cache, score the quality sets, rebuild the marts."""
    settings = load_settings(config)
    started = time.perf_counter()
    out: dict[str, Any] = {"prune": None, "models": None, "quality": [], "marts": None}
    failures: list[str] = []

    def step(label: str, state: Any) -> Any:
        if state.is_completed():
            return state.result()
        failures.append(f"{label}: {state.message or state.name}")
        return None

    out["prune"] = step("prune", prune_flow(config=config, return_state=True))
    out["models"] = step("refresh-models", refresh_models_flow(config=config, return_state=True))
    if out["models"] is not None:  # scoring with an unverified model would mean nothing
        for qs in settings.quality.sets:
            out["quality"].append(step(f"quality {qs.name or qs.path.name}", quality_flow(
                dataset=str(qs.path), config=config, name=qs.name, return_state=True)))
    if settings.marts.build_after_nightly:
        from flows.marts import build_marts_task

        out["marts"] = step("marts", build_marts_task(settings, return_state=True))
    out["seconds"] = round(time.perf_counter() - started, 3)
    get_run_logger().info("nightly %s", out)
    if failures:
        raise PipelineError("nightly run failed in " + " | ".join(failures))
    return out


def build_deployments(settings: Settings, config: str | None) -> list[Any]:
    """The deployments `infra/prefect.yaml` declares, as in-process (served) deployments."""
    from prefect.schedules import Cron

    from flows.ingest import ingest_flow

    config = str(Path(config).resolve()) if config else _default_config()
    deployments = [
        ingest_flow.to_deployment(
            name=f"ingest-{src.name}", parameters={"config": config, "sources": [src.name]},
            schedules=[Cron(src.schedule, timezone=settings.timezone)] if src.schedule else None,
            description=f"Ingest source {src.name!r} ({src.kind}, {src.path})",
            tags=["tessera", "ingest"])
        for src in settings.sources
    ]
    deployments.append(nightly_flow.to_deployment(
        name="nightly", parameters={"config": config},
        schedules=[Cron(NIGHTLY_CRON, timezone=settings.timezone)],
        description="Prune, refresh models, score quality sets, rebuild marts",
        tags=["tessera", "nightly"]))
    return deployments


def _default_config() -> str | None:
    path = default_config_path()
    return str(path.resolve()) if path else None


def serve_all(settings: Settings, config: str | None = None) -> None:
    """Serve every deployment from this process until stopped (stopping pauses their schedules)."""
    from prefect import serve

    deployments = build_deployments(settings, config)
    if not deployments:
        raise PipelineError("nothing to serve")
    serve(*deployments)
