"""The model-cache job: verify every configured model against its manifest and probe, and fill
the Modal Volume when the Modal backend is configured."""

from __future__ import annotations

import logging
import time
from typing import Any

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
from tessera.core import telemetry
from tessera.core.errors import EmbeddingError, PipelineError
from tessera.core.events import EventLog, new_run_id, utcnow
from tessera.core.settings import Settings
from tessera.core.steps import PlainSteps, Steps

logger = logging.getLogger(__name__)


def configured_models(settings: Settings) -> list[str]:
    """The model the pipeline embeds with, every model declared under [models], and the
    captioners image sources caption with."""
    captioners = [s.options.captioner for s in settings.sources
                  if s.kind == "images" and s.options.caption in ("model", "both")]
    return list(dict.fromkeys([settings.model, *settings.models, *captioners]))


def refresh_model(settings: Settings, name: str) -> CacheReport:
    """Verify one model's files and probe vector; download it first where a source is reachable."""
    spec = get_spec(settings, name)
    fetch = hub_fetcher if hub_reachable() else None
    emb = settings.embedding
    loader = local_loader(emb.device)
    if spec.kind == "captioner":
        from models.captioning import captioner_loader

        loader = captioner_loader("cpu" if emb.device == "auto" else emb.device)
    elif emb.runtime == "openvino" and spec.kind == "sentence-transformers":
        # Probe through the derived export, so a stale or broken export fails the check too.
        from models.optimized import openvino_loader

        loader = openvino_loader(settings.model_cache_dir, emb.precision)
    return refresh_one(spec, settings.model_cache_dir, fetch=fetch, loader=loader)


def fill_volume(settings: Settings, names: list[str]) -> list[CacheReport]:
    """Have the deployed Modal app download the models into its Volume."""
    return fill_modal_volume([get_spec(settings, n) for n in names], settings.embedding.modal)


@telemetry.traced("refresh models")
def run_refresh_models(settings: Settings, steps: Steps | None = None) -> dict[str, Any]:
    """Check every configured model (and the Modal Volume); events; an error if one failed."""
    steps = steps or PlainSteps()
    started, events = time.perf_counter(), EventLog(settings.events_dir, new_run_id())
    names = configured_models(settings)
    local = [steps.run(f"refresh-{name}", refresh_model, settings, name) for name in names]
    remote: list[CacheReport] = []
    if settings.embedding.backend in ("modal", "auto"):
        try:
            remote = steps.run("fill-volume", fill_volume, settings, names, io=True)
        except PipelineError as exc:
            remote = unreachable([get_spec(settings, n) for n in names],
                                 f"Modal Volume {settings.embedding.modal.volume!r}", str(exc))
    reports = local + remote
    now = utcnow()
    for report in reports:
        events.add("model_cache_events", recorded_at=now, **report.event())
    events.flush()
    for report in reports:
        logger.info("model %s: %s - %s", report.model, report.status, report.message)
    # With backend "auto" the Volume serves only large backlogs and local embedding still works,
    # so an unreachable Volume is recorded (status missing) without failing the run.
    failed = [r for r in (reports if settings.embedding.backend == "modal" else local) if r.failed]
    if failed:
        raise EmbeddingError("model cache check failed: " + " | ".join(
            f"{r.model} ({r.status}): {r.message}" for r in failed))
    return {"run_id": events.run_id, "models": [r.summary() for r in reports],
            "seconds": round(time.perf_counter() - started, 3)}
