"""infra/modal_app.py: the container code, run here through Modal's `.local()` on the CPU.

`Embedder(device="cpu").embed.local(...)` runs the `@modal.enter` setup and the method body as
the container would; its vectors must match the local backend's for the same inputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from models.local import LocalBackend
from models.modal_backend import spec_to_json
from tests.support.images import png_bytes
from tests.support.paths import REPO
from tests.support.tiny_clip import DIMENSION, tiny_clip_spec

pytestmark = [
    pytest.mark.filterwarnings("ignore:The .* function is executing locally:UserWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:transformers.*"),
]



@pytest.fixture(scope="module")
def modal_app() -> Any:
    import infra.modal_app

    return infra.modal_app


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def test_container_embeds_texts_like_the_local_backend(modal_app: Any, minilm: LocalBackend) -> None:
    texts = ["Tessera keeps a vector index fresh.", "GPUs on Modal", "", "naïve café ☕"]

    result = modal_app.Embedder(device="cpu").embed.local(texts)

    assert set(result) == {"vectors", "seconds", "device", "gpu"}
    assert result["vectors"].dtype == np.float32 and result["vectors"].shape == (4, 384)
    assert (result["device"], result["gpu"]) == ("cpu", None) and result["seconds"] > 0
    assert _min_cosine(result["vectors"], minilm.embed_texts(texts)) >= 0.9999


def test_container_embeds_images_and_text_with_a_clip_from_a_path(modal_app: Any,
                                                                  clip_dir: Path) -> None:
    spec = tiny_clip_spec(clip_dir)
    local = LocalBackend(spec, clip_dir, device="cpu")
    images = [png_bytes(seed, size=(40, 30)) for seed in range(3)]
    embedder = modal_app.Embedder(model_spec=spec_to_json(spec), device="cpu")

    from_images = embedder.embed.local(images)["vectors"]
    from_text = embedder.embed.local(["a photo of a cat"])["vectors"]

    assert from_images.shape == (3, DIMENSION) and from_text.shape == (1, DIMENSION)
    assert _min_cosine(from_images, local.embed_images(images)) >= 0.9999
    assert _min_cosine(from_text, local.embed_texts(["a photo of a cat"])) >= 0.9999
    with pytest.raises(TypeError, match="not a mix"):
        embedder.embed.local(["text", images[0]])


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned and " " not in pinned, f"{line!r} is not an exact pin"
            pins[canonicalize_name(name)] = pinned
    return pins


def _closure(roots: list[str]) -> set[str]:
    """Every distribution these packages need here (Linux, this Python), by canonical name."""
    from importlib.metadata import distribution

    seen: set[str] = set()
    todo = [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for req in distribution(name).requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(r.name))
    return seen


def test_the_venv_and_the_image_install_the_lock(modal_app: Any) -> None:
    """One lock: what this venv runs is what the Modal image installs, down to each dependency."""
    lock = _lock()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["dev"]
    needed = _closure([Requirement(r).name for r in declared])
    for name in needed:
        assert name in lock, f"{name} is installed but not pinned in requirements.lock"
        assert Version(version(name)).public == lock[name], f"{name}: venv {version(name)}, lock {lock[name]}"
    assert lock["torch"] == "2.13.0" and "+" not in lock["torch"]  # CPU here, CUDA on Modal
    # The image asks for its packages by name only; the lock, copied in, fixes every version.
    assert set(map(canonicalize_name, modal_app.IMAGE_PACKAGES)) <= set(lock)
    assert modal_app.LOCK == REPO / "requirements.lock"
    assert f"-c {modal_app.REMOTE_LOCK}" in modal_app.PIP_OPTIONS
    # And everything those packages pull in is pinned too (CUDA-only wheels are pinned by torch).
    assert _closure(modal_app.IMAGE_PACKAGES) <= set(lock)


def test_deploy_time_settings_come_from_config(tmp_path: Path) -> None:
    """`TESSERA_EMBEDDING__MODAL__*` (or tessera.toml) reach the decorator when deploying."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESSERA_", "MODAL_"))}
    env |= {"TESSERA_EMBEDDING__MODAL__GPU": "A100", "TESSERA_EMBEDDING__MODAL__VOLUME": "x-cache",
            "PYTHONPATH": str(REPO)}
    code = ("import infra.modal_app as m; s = m.Embedder._get_class_service_function()._spec_; "
            "print(m.CONFIG.gpu, s.gpus, sorted(v.name for v in s.volumes.values()))")

    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)

    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["A100", "A100", "['x-cache']"]


def test_fill_function_reports_bundled_and_unpinned_models(modal_app: Any, clip_dir: Path) -> None:
    from models.registry import BUILTIN

    rows = modal_app.fill_model_cache.local(
        [spec_to_json(BUILTIN["all-minilm-l6-v2"]), spec_to_json(tiny_clip_spec(None))])

    assert [r["status"] for r in rows] == ["ok", "missing"]
    assert "bundled in the image" in rows[0]["message"]
    assert "revision must be a commit hash" in rows[1]["message"]
    assert set(rows[0]) >= {"model_id", "revision", "path", "files_sha256", "probe_cosine",
                            "load_seconds", "status", "message"}


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
def test_api_function_serves_the_search_app_against_a_qdrant_store(
        modal_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`api.local()` builds the ASGI app the container serves; driven here over ASGI against
    qdrant-client's local mode (standing in for the Qdrant server), with a key from the env."""
    import shutil

    import anyio
    import httpx

    from tessera.core.errors import ConfigError
    from tessera.core.settings import load_settings
    from tessera.ingest.run import run_ingest
    from tests.support.config import write_config
    from tests.support.paths import EXAMPLES

    corpus = tmp_path / "corpus"
    shutil.copytree(EXAMPLES, corpus)
    config = write_config(tmp_path / "tessera.toml", {"home": str(tmp_path / "home"),
                                                      "collection": "test"},
                          {"embedding": {"runtime": "torch", "device": "cpu"},
                           "store": {"kind": "qdrant", "path": str(tmp_path / "qdrant")}},
                          [{"name": "docs", "path": str(corpus), "ttl": "7d"}])
    run_ingest(load_settings(config))
    monkeypatch.setenv("TESSERA_CONFIG", str(config))
    monkeypatch.setenv("TESSERA_API__KEYS", "modal-key-1-0123456789")

    app = modal_app.api.local()

    async def drive() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://modal") as client:
            hits = await client.post("/v1/search", json={"query": "volcano eruption", "k": 2},
                                     headers={"Authorization": "Bearer modal-key-1-0123456789"})
            denied = await client.post("/v1/search", json={"query": "volcano"})
            ready = await client.get("/readyz")
            return hits, denied, ready

    hits, denied, ready = anyio.run(drive)
    assert hits.status_code == 200 and len(hits.json()["results"]) == 2
    assert "volcano" in hits.json()["results"][0]["doc_id"]
    assert denied.status_code == 401 and ready.status_code == 200
    assert modal_app.API_PACKAGES[:len(modal_app.IMAGE_PACKAGES)] == modal_app.IMAGE_PACKAGES
    assert _closure(modal_app.API_PACKAGES) <= set(_lock())

    monkeypatch.setenv("TESSERA_STORE__KIND", "edge")  # an embedded shard is refused there
    with pytest.raises(ConfigError, match="Qdrant server"):
        modal_app.api.local()
