"""Deployments: what `infra/prefect.yaml` declares, built in-process for `tessera serve`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from flows.ingest import ingest_flow
from flows.migrate import migrate_flow
from flows.nightly import NIGHTLY_CRON, nightly_flow
from tessera.core.errors import PipelineError, UsageError
from tessera.core.settings import Settings, default_config_path

WORK_POOL = "tessera"


def build_deployments(settings: Settings, config: str | None) -> list[Any]:
    """The deployments `infra/prefect.yaml` declares, as in-process (served) deployments."""
    from prefect.schedules import Cron

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
    # Manual only: run it from the UI or `prefect deployment run migrate/migrate -p model=...`.
    deployments.append(migrate_flow.to_deployment(
        name="migrate", parameters={"config": config, "alias": settings.collection, "model": None,
                                      "set": [], "dry_run": False, "rollback": False},
        description="Blue/green migration of an alias: build, gate on quality, switch (or roll back)",
        tags=["tessera", "migrate"]))
    return deployments


def _default_config() -> str | None:
    path = default_config_path()
    return str(path.resolve()) if path else None


def serve_all(settings: Settings, config: str | None = None) -> None:
    """Serve every deployment from this process until Ctrl-C or SIGTERM, which stop the runner
    and pause the deployments' schedules."""
    import asyncio

    deployments = build_deployments(settings, config)
    if not deployments:
        raise PipelineError("nothing to serve")
    refuse_pool_bound(deployments)
    asyncio.run(_serve(deployments))


async def _serve(deployments: list[Any]) -> None:
    """Prefect's Runner until a stop signal, then its own async stop. (prefect.serve stops from
    a signal handler that calls the sync `stop` inside the running loop: the coroutine it makes
    is never awaited, and Python warns on the way out.) A signal that comes while the
    deployments register is held until the runner has started, so stopping still pauses their
    schedules."""
    import asyncio
    import signal

    from prefect.runner import Runner

    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()

    def ours() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopped.set)

    ours()
    runner = Runner(pause_on_shutdown=True)
    for deployment in deployments:
        await runner.aadd_deployment(deployment)  # registers it (and its schedules) now
    running = asyncio.create_task(runner.start())
    await asyncio.sleep(0)  # start() sets its own SIGTERM handler first; ours replaces it
    ours()
    print(f"serving {len(deployments)} deployments from this process: "
          f"{', '.join(d.full_name for d in deployments)} (Ctrl-C stops them and pauses their "
          "schedules)", file=sys.stderr, flush=True)
    waiting = asyncio.create_task(stopped.wait())
    await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
    while stopped.is_set() and not runner.started and not running.done():
        await asyncio.sleep(0.05)  # stopped while starting: stop once it has started
    if stopped.is_set() and runner.started:
        await runner.astop()
    waiting.cancel()
    await running


def refuse_pool_bound(deployments: list[Any]) -> None:
    """Refuse to serve deployments that `prefect deploy` registered on this server for a work pool.

    Prefect's `serve` updates a deployment of the same name in place, keeping its work pool and
    the empty code path `prefect deploy` recorded, so the runs it picks up crash looking for their
    code in `<cwd>/None`.
    The two ways to run the deployments exclude each other: a worker, or this process."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    bound: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for deployment in deployments:
            try:
                found = client.read_deployment_by_name(deployment.full_name)
            except ObjectNotFound:
                continue
            if found.work_pool_name:
                bound[deployment.full_name] = found.work_pool_name
    if bound:
        pools = sorted(set(bound.values()))
        raise UsageError(
            f"deployments {', '.join(bound)} on this Prefect server run on work pool "
            f"{', '.join(pools)} (made by `prefect deploy`), so `tessera serve` cannot serve them: "
            f"run them with `prefect worker start --pool {pools[0]}` instead, or delete them "
            f"(`prefect deployment delete {next(iter(bound))}`, and so on) and serve again")
