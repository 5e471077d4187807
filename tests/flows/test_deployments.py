"""Deployments: infra/prefect.yaml against tessera.toml and `serve`; end to end on a real server."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.deployments import WORK_POOL, build_deployments
from flows.nightly import NIGHTLY_CRON
from tessera.core.env import OFFLINE_DEFAULTS
from tessera.core.settings import load_settings
from tests.support.config import write_config
from tests.support.paths import EXAMPLES, REPO
from tests.support.servers import free_port

pytestmark = pytest.mark.usefixtures("prefect_server")

PREFECT_YAML = REPO / "infra" / "prefect.yaml"
PREFECT = REPO / ".venv" / "bin" / "prefect"


def _declared() -> dict[str, Any]:
    return {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}


def test_prefect_yaml_declares_every_source_and_the_nightly() -> None:
    """One ingest deployment per source on its cron, the nightly at 02:00; timezone on each."""
    settings = load_settings(REPO / "tessera.toml")
    declared = _declared()
    expected = {f"ingest-{s.name}" for s in settings.sources} | {"nightly", "migrate"}
    assert set(declared) == expected
    for src in settings.sources:
        dep = declared[f"ingest-{src.name}"]
        assert dep["entrypoint"] == "flows/ingest.py:ingest_flow"
        assert dep["parameters"] == {"config": "tessera.toml", "sources": [src.name]}
        assert [s["cron"] for s in dep.get("schedules") or []] == ([src.schedule] if src.schedule else [])
    assert [s["cron"] for s in declared["nightly"]["schedules"]] == [NIGHTLY_CRON] == ["0 2 * * *"]
    assert "schedules" not in declared["migrate"]  # manual trigger only
    assert declared["migrate"]["parameters"]["alias"] == settings.collection
    for dep in declared.values():
        assert dep["work_pool"]["name"] == WORK_POOL
        assert all(s["timezone"] == settings.timezone for s in dep.get("schedules") or [])
        path, func = dep["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert hasattr(getattr(module, func), "to_deployment")  # a Prefect flow
    text = PREFECT_YAML.read_text()
    assert "definitions:" in text and "&process_pool" in text and text.count("*process_pool") == len(declared)


def test_served_deployments_match_prefect_yaml() -> None:
    """`tessera serve` serves the same deployments, schedules and parameters as the YAML."""
    settings = load_settings(REPO / "tessera.toml")
    served = {d.name: d for d in build_deployments(settings, str(REPO / "tessera.toml"))}
    declared = _declared()
    assert set(served) == set(declared)
    for name, dep in served.items():
        crons = [(s.schedule.cron, s.schedule.timezone) for s in dep.schedules or []]
        assert crons == [(s["cron"], s["timezone"]) for s in declared[name].get("schedules") or []]
        assert dep.parameters["config"] == str(REPO / "tessera.toml")
        assert {k: v for k, v in dep.parameters.items() if k != "config"} == {
            k: v for k, v in declared[name]["parameters"].items() if k != "config"}


# ---------------------------------------------------------------- end to end on a real server


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"no healthy Prefect server at {url} after {timeout} s")


def _stop(proc: subprocess.Popen[bytes], terms: int, timeout: float = 20.0) -> None:
    """SIGTERM `terms` times (a worker ignores the first), then SIGKILL; by PID and its group."""
    for _ in range(terms):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout / terms)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # Anything it started in its own session (a flow-run child, uvicorn) goes with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def _started(args: list[str], env: dict[str, str], log: Path, terms: int) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            _stop(proc, terms)


def _run_and_wait(url: str, runs: list[tuple[str, dict[str, Any]]], timeout: float) -> list[Any]:
    """Create a flow run of each deployment through the API, one after the other; wait for each."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    finished = []
    with temporary_settings({PREFECT_API_URL: f"{url}"}), get_client(sync_client=True) as client:
        for name, params in runs:
            deployment = client.read_deployment_by_name(name)
            run = client.create_flow_run_from_deployment(deployment.id, parameters=params)
            deadline = time.monotonic() + timeout
            while True:
                run = client.read_flow_run(run.id)
                if run.state is not None and run.state.is_final():
                    break
                assert time.monotonic() < deadline, f"{name} still {run.state} after {timeout} s"
                time.sleep(2)
            finished.append(run)
    return finished


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_deploy_and_run_on_a_prefect_server(tmp_path: Path) -> None:
    """Server + process pool + `prefect deploy --all` + worker; ingest and nightly via the API."""
    from tests.support.datasets import make_slice

    corpus = tmp_path / "corpus"
    shutil.copytree(EXAMPLES, corpus)
    quality = make_slice(tmp_path / "mini-scifact", 4, 8)
    config = write_config(
        tmp_path / "tessera.toml", {"home": str(tmp_path / "home"), "collection": "e2e"},
        {"marts": {"build_after_nightly": True}},
        [{"name": "examples", "path": str(corpus), "ttl": "30d", "schedule": "*/30 * * * *"}])
    config.write_text(config.read_text() + f'\n[[quality.sets]]\npath = "{quality}"\n')
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TESSERA_"))}
    env.update({**OFFLINE_DEFAULTS, "PREFECT_HOME": str(tmp_path / "prefect-home"),
                "PREFECT_API_URL": url})

    server_cmd = [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with _started(server_cmd, env, tmp_path / "server.log", terms=1) as server:
        _wait_healthy(url, server, 180)
        for cmd in (["work-pool", "create", WORK_POOL, "--type", "process"],
                    ["deploy", "--all", "--prefect-file", str(PREFECT_YAML)]):
            done = subprocess.run([str(PREFECT), *cmd], env=env, cwd=REPO, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
        worker_cmd = [str(PREFECT), "worker", "start", "--pool", WORK_POOL]
        with _started(worker_cmd, env, tmp_path / "worker.log", terms=2):
            ingest, nightly = _run_and_wait(url, [
                ("ingest/ingest-examples", {"config": str(config)}),
                ("nightly/nightly", {"config": str(config)}),
            ], timeout=900)
    logs = (tmp_path / "worker.log").read_text(errors="replace")[-4000:]
    assert ingest.state.is_completed(), logs
    assert nightly.state.is_completed(), logs

    settings = load_settings(config)
    from tessera.core.events import read_events
    from tessera.core.types import Match
    from tessera.store import open_store

    store = open_store(settings)
    try:
        assert store.count("e2e", Match(source="examples")) > 0
        from tessera.jobs.quality import quality_collection

        assert quality_collection(settings, quality, None) in store.list_collections()
        live = store.aliases()["e2e"]  # created behind its alias
        assert live.startswith("e2e--all-minilm-l6-v2-")
    finally:
        store.close()
    assert [r["status"] for r in read_events(settings.events_dir, "ingest_runs")][0] == "completed"
    assert {r["collection"] for r in read_events(settings.events_dir, "prune_runs")} >= {live}
    assert [r["status"] for r in read_events(settings.events_dir, "model_cache_events")] == ["ok"]
    scored = read_events(settings.events_dir, "quality_runs")  # one row per search mode
    assert sorted((r["mode"], r["status"]) for r in scored) == [
        ("dense", "passed"), ("hybrid", "passed"), ("sparse", "passed")]

    import duckdb

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        # 4 metrics for each of the 3 search modes, one quality run.
        assert con.execute("select search_mode, count(*) from fct_retrieval_quality group by 1 "
                           "order by 1").fetchall() == [("dense", 4), ("hybrid", 4), ("sparse", 4)]
        assert con.execute("select count(*) from fct_prune_runs").fetchone()[0] >= 1
        assert con.execute("select count(*) from fct_ingest_runs").fetchone()[0] >= 2


# ------------------------------------------- `prefect deploy` and `tessera serve` on one server


def _deploy_like_prefect_deploy(url: str) -> list[str]:
    """What `prefect deploy --all --prefect-file infra/prefect.yaml` registers, through the same
    Prefect calls (prefect/cli/deploy/_core.py): each deployment bound to the `tessera` pool,
    with the YAML's pull steps. Returns their full names."""
    from prefect.cli.deploy._storage import _PullStepStorage
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments.runner import RunnerDeployment
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.flows import load_flow_from_entrypoint
    from prefect.settings import PREFECT_API_URL, temporary_settings

    names = []
    with temporary_settings({PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
        for decl in _declared().values():
            flow = load_flow_from_entrypoint(str(REPO / decl["entrypoint"]))
            deployment = RunnerDeployment(
                name=decl["name"], flow_name=flow.name, entrypoint=decl["entrypoint"],
                work_pool_name=decl["work_pool"]["name"],
                work_queue_name=decl["work_pool"]["work_queue_name"],
                parameters=decl["parameters"], description=decl["description"],
                tags=decl["tags"], storage=_PullStepStorage([{
                    "prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]))
            deployment._set_defaults_from_flow(flow)
            deployment.apply()
            names.append(f"{flow.name}/{decl['name']}")
    return names


def _delete_deployments(url: str, names: list[str]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        for name in names:
            with contextlib.suppress(ObjectNotFound):
                client.delete_deployment(client.read_deployment_by_name(name).id)


def test_serve_refuses_deployments_that_prefect_deploy_bound_to_a_work_pool(
        tmp_path: Path) -> None:
    """`prefect deploy --all`, then `tessera serve` on the same server: serve would take over
    deployments still bound to the pool (their runs crash); it exits 2 with one line naming them
    and what to do. Once they are deleted, as it says, serve's own deployments pass the check."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.support.prefect import TESSERA, api_url

    config = write_config(tmp_path / "tessera.toml", {"home": str(tmp_path / "home")}, {},
                          [{"name": "examples", "path": str(EXAMPLES), "schedule": "*/30 * * * *"}])
    url = api_url()
    names = _deploy_like_prefect_deploy(url)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TESSERA_"))}
        env.update({**OFFLINE_DEFAULTS, "PREFECT_API_URL": url,
                    "PREFECT_HOME": str(tmp_path / "prefect-home")})
        serve = subprocess.Popen([str(TESSERA), "serve", "--config", str(config)], env=env,
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)
        try:
            out, err = serve.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            _stop(serve, terms=2)  # type: ignore[arg-type]
            serve.communicate()
            pytest.fail("`tessera serve` served the work pool's deployments instead of refusing")
        assert serve.returncode == 2, err[-3000:]
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
        assert all(name in lines[0] for name in names)
        assert f"prefect worker start --pool {WORK_POOL}" in lines[0]
        assert "prefect deployment delete" in lines[0]

        _delete_deployments(url, names)
        from flows.deployments import refuse_pool_bound

        with temporary_settings({PREFECT_API_URL: url}):
            served = build_deployments(load_settings(config), str(config))
            for deployment in served:
                deployment.apply()  # what serve registers: no work pool
            refuse_pool_bound(served)  # a second `tessera serve` is not refused
    finally:
        _delete_deployments(url, names)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_stops_cleanly_and_pauses_its_schedules(tmp_path: Path, stop: int) -> None:
    """`tessera serve` until Ctrl-C or a SIGTERM (systemd, docker stop): exit 0, no warning or
    traceback on stderr, and the schedules of the deployments it served are paused."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.support.prefect import TESSERA, api_url

    config = write_config(tmp_path / "tessera.toml", {"home": str(tmp_path / "home")}, {},
                          [{"name": "examples", "path": str(EXAMPLES), "schedule": "*/30 * * * *"}])
    url = api_url()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TESSERA_"))}
    env.update({**OFFLINE_DEFAULTS, "PREFECT_API_URL": url,
                "PREFECT_HOME": str(tmp_path / "prefect-home")})
    serve = subprocess.Popen([str(TESSERA), "serve", "--config", str(config)], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    names = [d.full_name for d in build_deployments(load_settings(config), str(config))]
    try:
        assert serve.stderr is not None
        banner = next((line for line in serve.stderr if line.startswith("serving ")), "")
        assert all(name in banner for name in names), banner
        time.sleep(2)  # past start-up: the runner polls
        os.kill(serve.pid, stop)
        out, err = serve.communicate(timeout=60)
    finally:
        _stop(serve, terms=1)  # type: ignore[arg-type]
    assert serve.returncode == 0, err[-3000:]
    assert "never awaited" not in err and "Traceback" not in err and "Warning" not in err, err
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        for name in names:
            assert client.read_deployment_by_name(name).paused, name
