"""Shared fixtures: one Prefect test server (opt-in), the bundled model loaded at most once, a
tiny CLIP built once, and config files in tmp dirs. Helpers shared by test modules live in
tests/support/."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tessera.core.env import apply_offline_defaults
from tests.support.config import write_config
from tests.support.paths import EXAMPLES

# Before Prefect or Hugging Face import: offline, quiet, state in a per-session temp dir.
apply_offline_defaults(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
                       PREFECT_LOGGING_LEVEL="WARNING")
for _key in [k for k in os.environ if k.startswith("TESSERA_")]:
    del os.environ[_key]  # a developer's own TESSERA_* must not leak into tests
# Test modules import Prefect at collection, and Prefect reads its home at import: set it now.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="tessera-tests-prefect-")


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


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP saved in the Hub repo's layout, built once per session (read only)."""
    from tests.support.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A writable copy of the sample corpus."""
    target = tmp_path / "corpus"
    shutil.copytree(EXAMPLES, target)
    return target


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
