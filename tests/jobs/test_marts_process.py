"""dbt runs in a child process: its crash, hang or full disk fails the build, never ours, and no
Tessera process imports dbt (in-process dbt once segfaulted a whole test run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tessera.core.errors import MartsError
from tessera.core.settings import MartsConfig, Settings
from tessera.jobs.marts import MartsTimeoutError, build_marts
from tests.support.events import write_two_runs
from tests.support.machine import fill, home_config, run_cli, tmpfs
from tests.support.paths import REPO


def _settings(home: Path, **marts: float) -> Settings:
    return Settings(home=home, marts=MartsConfig(**marts))


def _processes_naming(path: Path) -> list[str]:
    """Command lines of live processes that mention `path` (dbt's args name the home)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(cmdline)
    return found


def test_no_tessera_process_imports_dbt(tmp_path: Path) -> None:
    """The modules of every long-lived process (API, MCP, worker flows, the CLI), then a marts
    build: dbt built the warehouse, yet no `dbt` module was ever loaded here."""
    code = textwrap.dedent(f"""
        import sys
        import tessera.service.app, tessera.service.mcp_server, flows.nightly, flows.deployments, tessera.cli.main
        from tessera.jobs.marts import build_marts
        from tessera.core.settings import Settings
        summary = build_marts(Settings(home={str(tmp_path / "home")!r}))
        loaded = sorted(m for m in sys.modules if m == "dbt" or m.startswith("dbt."))
        print(summary["status"], summary["models"], len(loaded), loaded[:3])
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    status, models, loaded, *_ = done.stdout.split()
    assert status == "success" and int(models) >= 8 and loaded == "0", done.stdout
    assert (tmp_path / "home" / "warehouse.duckdb").exists()


def test_a_dbt_that_crashes_fails_the_build_and_leaves_the_warehouse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dbt dying of SIGSEGV (as it did in-process) is a MartsError naming the signal; we live on."""
    settings = _settings(tmp_path / "home")
    write_two_runs(settings.events_dir)
    assert build_marts(settings)["status"] == "success"
    before = settings.warehouse_path.stat().st_ino
    crasher = tmp_path / "python-that-segfaults"
    crasher.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crasher.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(crasher))  # dbt is started as `python -m dbt...`
    with pytest.raises(MartsError, match="dbt died with signal SIGSEGV.*left as it was"):
        build_marts(settings)
    assert settings.warehouse_path.stat().st_ino == before


def test_a_dbt_past_its_timeout_is_stopped_with_everything_it_started(tmp_path: Path) -> None:
    """The real dbt, given less time than it needs: stopped, no process of its left, no warehouse."""
    settings = _settings(tmp_path / "home", timeout_seconds=0.5)
    with pytest.raises(MartsTimeoutError, match="marts.timeout_seconds = 0.5 s"):
        build_marts(settings)
    assert _processes_naming(settings.home) == []
    assert not settings.warehouse_path.exists()


@pytest.mark.slow
def test_tessera_marts_on_a_full_disk_says_so_in_one_line(
        make_config: Callable[..., Path], corpus: Path, tmp_path: Path) -> None:
    """dbt cannot write its artifacts: one JSON error and one line on stderr, exit 2, the
    warehouse as it was (in-process dbt printed 187 '--- Logging error ---' tracebacks)."""
    with tmpfs(tmp_path / "disk", 64) as disk:
        config = home_config(make_config, disk / "home", corpus)
        write_two_runs(disk / "home" / "events")
        first = run_cli("marts", "--config", str(config), "--json")
        assert first.returncode == 0, first.stderr[-2000:]
        warehouse = disk / "home" / "warehouse.duckdb"
        before = warehouse.read_bytes()
        fill(disk, leave_mb=1)
        full = run_cli("marts", "--config", str(config), "--json")
        assert full.returncode == 2, (full.returncode, full.stderr[-3000:])
        error = json.loads(full.stdout)
        assert error["error"] in ("MartsError", "DiskSpaceError"), error
        assert "Traceback" not in full.stderr and "Logging error" not in full.stderr
        assert len(full.stderr.strip().splitlines()) == 1, full.stderr[-3000:]
        assert warehouse.read_bytes() == before
