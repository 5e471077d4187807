"""The machine as a user has it: `tessera` in a child process, a small real disk to fill, and a
config whose home sits on that disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.paths import REPO


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`tessera ARGS` in a child process, as a user runs it (no Prefect server configured)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    full.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run([sys.executable, "-m", "tessera.cli.main", *args], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """A small tmpfs at `path` (needs root: the case is a full disk, so a real one)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root; CI runs as root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave_mb: int) -> Path:
    """Take all but `leave_mb` of the disk's free space."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler.bin"
    with open(filler, "wb") as fh:
        fh.truncate(0)
        os.posix_fallocate(fh.fileno(), 0, max(free - leave_mb * 1024 * 1024, 0))
    return filler


def home_config(make_config: Callable[..., Path], home: Path, corpus: Path) -> Path:
    """A config (conftest's `make_config`) over `corpus` with its home at `home`."""
    path = make_config(sources=[{"name": "docs", "path": str(corpus)}])
    text = path.read_text().replace(f'home = "{path.parent / "home"}"', f'home = "{home}"')
    path.write_text(text)
    return path


def kill_when_marked(code: str, args: list[str], marker: Path, env: dict[str, str], what: str,
                     timeout: float = 240) -> None:
    """Run `python -c code *args` until it writes `marker`, then SIGKILL it: a crash mid-step.
    Fails with the child's stderr if it exits first, or with `what` if the marker never comes."""
    child = subprocess.Popen([sys.executable, "-c", code, *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, f"child never {what}"
            time.sleep(0.2)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stderr.close()


def crash_on_third_upsert(counts: str = "True") -> str:
    """Code for a child process: the real EdgeStore.upsert runs, but the third call that
    `counts` (a Python expression over `self` and `name`) lets through writes only half its
    points, writes the marker (argv[2]) and sleeps, so the parent can SIGKILL it mid-upsert.
    Append the job to run."""
    return f"""
import os, sys, time
from pathlib import Path
from tessera.store.edge import EdgeStore
marker = Path(sys.argv[2])
real = EdgeStore.upsert
calls = []
def upsert(self, name, points):
    if {counts}:
        calls.append(len(points))
        if len(calls) == 3:
            real(self, name, points[: len(points) // 2])
            marker.write_text(str(os.getpid()))
            time.sleep(600)
    real(self, name, points)
EdgeStore.upsert = upsert
"""
