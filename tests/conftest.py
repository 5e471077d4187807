"""Shared fixtures: one Prefect test server (opt-in), the bundled model loaded at most once, and
config files in tmp dirs."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tessera.core.env import apply_offline_defaults

# Before Prefect or Hugging Face import: offline, quiet, state in a per-session temp dir.
apply_offline_defaults(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
                       PREFECT_LOGGING_LEVEL="WARNING")
for _key in [k for k in os.environ if k.startswith("TESSERA_")]:
    del os.environ[_key]  # a developer's own TESSERA_* must not leak into tests
# Test modules import Prefect at collection, and Prefect reads its home at import: set it now.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="tessera-tests-prefect-")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "corpus"
# BEIR SciFact kept in the repo (xz-compressed; see its README): a clone needs nothing beside it.
SCIFACT_PACKED = REPO / "tests" / "data" / "scifact"


@cache
def scifact_dir() -> Path:
    """The SciFact set as a plain BEIR folder, unpacked once per session into a temp dir."""
    from tessera.core.beir import unpack

    dest = Path(tempfile.mkdtemp(prefix="tessera-tests-scifact-"))
    atexit.register(shutil.rmtree, dest, True)
    return unpack(SCIFACT_PACKED, dest)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One Prefect test server for the whole session (starting one costs 15-20 s). Opt-in: a
    module that runs flows says `pytestmark = pytest.mark.usefixtures("prefect_server")`."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def minilm() -> Any:
    """The bundled all-MiniLM-L6-v2 through our local backend, loaded once per session."""
    from models.local import LocalBackend
    from models.registry import BUILTIN, resolve_model_path

    spec = BUILTIN["all-minilm-l6-v2"]
    backend = LocalBackend(spec, resolve_model_path(spec), device="cpu", batch_size=32)
    backend.model  # noqa: B018 - load now, once
    _LOADED[Path(backend.path)] = backend.model
    return backend


# The bundled model once loaded in this session (other models, tiny test ones, load as usual).
_LOADED: dict[Path, Any] = {}


@cache
def _bundled_path() -> Path:
    from models.registry import BUILTIN, resolve_model_path

    return Path(resolve_model_path(BUILTIN["all-minilm-l6-v2"]))


@pytest.fixture(autouse=True)
def _share_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run in the session reuses a model once loaded instead of reloading it (8 s).

    This swaps no component: the real LocalBackend runs; only the load is shared. Nothing loads
    until a test embeds, so a test that never does pays nothing for it.
    """
    from models import local

    original = local.load_sentence_transformer

    def cached(path: Path, device: str) -> Any:
        if Path(path) != _bundled_path():
            return original(path, device)
        if Path(path) not in _LOADED:
            _LOADED[Path(path)] = original(path, "cpu")
        return _LOADED[Path(path)]

    monkeypatch.setattr(local, "load_sentence_transformer", cached)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A writable copy of the sample corpus."""
    target = tmp_path / "corpus"
    shutil.copytree(EXAMPLES, target)
    return target


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, top: dict[str, Any], sections: dict[str, dict[str, Any]],
                 sources: list[dict[str, Any]]) -> Path:
    """Write a tessera.toml from plain dicts."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for name, values in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    for src in sources:
        lines.append("\n[[sources]]")
        opts = src.pop("options", None)
        lines += [f"{k} = {_toml_value(v)}" for k, v in src.items()]
        if opts:
            lines.append("[sources.options]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in opts.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """Build a tessera.toml under tmp_path: make_config(sources=[...], store={...}, ...)."""
    def make(sources: list[dict[str, Any]] | None = None, name: str = "tessera.toml",
             **sections: Any) -> Path:
        top = {"home": str(tmp_path / "home"), "collection": "test"}
        top.update({k: v for k, v in sections.items() if not isinstance(v, dict)})
        tables = {k: v for k, v in sections.items() if isinstance(v, dict)}
        return write_config(tmp_path / name, top, tables, [dict(s) for s in (sources or [])])
    return make


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
