"""The Modal backend's client side, faked at the one network boundary: the deployed class.

`FakeDeployed` stands where `modal.Cls.from_name(...)` would return the deployed class: calling
it gives an object whose `embed.map` runs the real container code (`Embedder.embed.local`) on
the CPU, with failures injected where a test asks. Everything else is the real client.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import modal.exception
import numpy as np
import pytest

from models import choose_backend, make_backend
from models.local import LocalBackend
from models.modal_backend import (
    MAX_IMAGE_BATCH_BYTES,
    EmbedResult,
    ModalBackend,
    fill_remote_cache,
    spec_from_json,
    spec_to_json,
)
from models.optimized import OpenVINOBackend
from models.registry import BUILTIN
from tessera.core.errors import EmbeddingError
from tessera.core.settings import EmbeddingConfig, ModalConfig, Settings
from tests.support.paths import REPO

pytestmark = pytest.mark.filterwarnings(
    "ignore:The .* function is executing locally:UserWarning")

MINILM = BUILTIN["all-minilm-l6-v2"]
TEXTS = [f"document number {i} about {topic}" for i, topic in
         enumerate(["GPUs", "vector search", "cats", "Prefect", "Qdrant", "dbt", "CLIP", "TTL",
                    "quarantine", "Modal"])]


class FakeDeployed:
    """The deployed `Embedder` class, as `modal.Cls.from_name` would hand it back."""

    def __init__(self, fail: dict[str, int] | None = None, crash_calls: int = 0,
                 script: Any = None) -> None:
        self.fail = dict(fail or {})  # first item of a batch -> failures still to inject
        self.crash_calls = crash_calls  # whole `.map` calls that raise before any output
        self.script = script  # (batch) -> EmbedResult, instead of running the container code
        self.params: dict[str, str] = {}
        self.windows: list[int] = []
        self.lookups: list[tuple[str, str]] = []
        self._container: Any = None

    def lookup(self, app_name: str, class_name: str) -> FakeDeployed:
        self.lookups.append((app_name, class_name))
        return self

    def __call__(self, **params: str) -> FakeDeployed:
        self.params = params
        if self.script is None:
            import infra.modal_app

            # The same class the container runs; only the device differs (no GPU here).
            self._container = infra.modal_app.Embedder(**{**params, "device": "cpu"})
        return self

    @property
    def embed(self) -> FakeDeployed:
        return self

    def map(self, batches: Iterable[list[Any]], *, kwargs: dict[str, Any] | None = None,
            order_outputs: bool = True, return_exceptions: bool = False) -> list[Any]:
        assert order_outputs and return_exceptions  # the client relies on both
        self.kwargs = kwargs or {}  # Modal passes these to every call
        batches = list(batches)
        self.windows.append(len(batches))
        if self.crash_calls:
            self.crash_calls -= 1
            raise modal.exception.ConnectionError("Deadline exceeded")
        outputs: list[Any] = []
        for batch in batches:
            key = batch[0] if isinstance(batch[0], str) else str(len(batch[0]))
            if self.fail.get(key, 0) > 0:
                self.fail[key] -= 1
                outputs.append(RuntimeError("container preempted"))
            elif self.script is not None:
                outputs.append(self.script(batch))
            else:
                outputs.append(self._container.embed.local(batch, **self.kwargs))
        return outputs


def _backend(fake: FakeDeployed, spec: Any = MINILM, **config: Any) -> tuple[ModalBackend, list[float]]:
    slept: list[float] = []
    settings = {"batch_size": 3, "max_concurrency": 2, "retries": 2, **config}
    backend = ModalBackend(spec, ModalConfig(**settings), lookup=fake.lookup, sleep=slept.append)
    return backend, slept


def _rowwise_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_batches_fan_out_in_windows_and_come_back_in_order(minilm: LocalBackend) -> None:
    fake = FakeDeployed()
    backend, _ = _backend(fake)

    vectors = backend.embed_texts(TEXTS)

    assert fake.lookups == [("tessera-embedder", "Embedder")]
    assert fake.windows == [2, 2]  # 10 texts / batch_size 3 = 4 batches, max_concurrency 2
    assert vectors.dtype == np.float32 and vectors.shape == (10, 384)
    assert _rowwise_cos(vectors, minilm.embed_texts(TEXTS)).min() >= 0.9999
    sent = spec_from_json(fake.params["model_spec"])
    assert sent == MINILM and fake.params["device"] == "cuda"
    stats = backend.stats
    assert (stats.backend, stats.items, stats.batches, stats.retries) == ("modal", 10, 4, 0)
    assert stats.gpu_seconds == 0.0 and stats.gpu_type is None  # the fake container is a CPU


def test_failed_batches_are_retried_with_backoff(minilm: LocalBackend) -> None:
    fake = FakeDeployed(fail={TEXTS[3]: 2, TEXTS[9]: 1}, crash_calls=1)
    backend, slept = _backend(fake, retries=3)

    vectors = backend.embed_texts(TEXTS)

    assert _rowwise_cos(vectors, minilm.embed_texts(TEXTS)).min() >= 0.9999
    # batch 1 (TEXTS[3]) fails twice, batch 3 (TEXTS[9]) once; the first call crashes whole.
    assert backend.stats.retries == 2 + 2 + 1
    assert backend.stats.batches == 4
    assert slept == [2.0, 5.0, 15.0, 2.0]


def test_a_batch_that_keeps_failing_stops_the_run_with_advice() -> None:
    fake = FakeDeployed(fail={TEXTS[0]: 99})
    backend, slept = _backend(fake, retries=2)

    with pytest.raises(EmbeddingError, match=r"batch 0 failed on Modal 3 time\(s\).*modal app logs"):
        backend.embed_texts(TEXTS)
    assert slept == [2.0, 5.0]


def test_gpu_seconds_and_gpu_type_are_recorded() -> None:
    def on_an_l4(batch: list[str]) -> EmbedResult:
        return EmbedResult(vectors=np.ones((len(batch), 384), np.float32), seconds=0.25,
                           device="cuda", gpu="NVIDIA L4")

    fake = FakeDeployed(script=on_an_l4, fail={TEXTS[6]: 1})
    backend, _ = _backend(fake, gpu="L4")

    backend.embed_texts(TEXTS)
    backend.embed_queries(["one more"])

    stats = backend.stats
    assert (stats.device, stats.gpu_type, stats.batches, stats.items) == ("cuda", "L4", 5, 11)
    assert stats.gpu_seconds == pytest.approx(5 * 0.25)  # a failed try reports no time
    assert backend.gpu_names == {"NVIDIA L4"}


def test_a_wrong_shape_from_the_container_is_refused() -> None:
    fake = FakeDeployed(script=lambda b: EmbedResult(vectors=np.ones((len(b), 512), np.float32),
                                                     seconds=0.1, device="cuda", gpu="NVIDIA L4"))
    backend, _ = _backend(fake)

    with pytest.raises(EmbeddingError, match=r"shape \(3, 512\), expected \(3, 384\)"):
        backend.embed_texts(TEXTS)


def test_image_batches_are_cut_by_bytes_and_need_a_clip_model() -> None:
    clip = BUILTIN["clip-vit-base-patch32"]
    sizes: list[int] = []

    def record(batch: list[bytes]) -> EmbedResult:
        sizes.append(len(batch))
        return EmbedResult(vectors=np.zeros((len(batch), 512), np.float32), seconds=0.1,
                           device="cuda", gpu="NVIDIA L4")

    fake = FakeDeployed(script=record)
    backend, _ = _backend(fake, spec=clip, batch_size=64, max_concurrency=8)
    images = [b"\x89PNG" + bytes(MAX_IMAGE_BATCH_BYTES // 3) for _ in range(7)]

    assert backend.embed_images(images).shape == (7, 512)
    assert sizes == [2, 2, 2, 1]  # three would exceed MAX_IMAGE_BATCH_BYTES
    assert spec_from_json(fake.params["model_spec"]).path is None  # no local paths sent
    with pytest.raises(EmbeddingError, match="embeds text only"):
        _backend(FakeDeployed(script=record))[0].embed_images(images[:1])


def test_not_deployed_tells_the_user_to_deploy() -> None:
    def lookup(app_name: str, class_name: str) -> Any:
        raise modal.exception.NotFoundError(
            f"Lookup failed for Cls '{class_name}' from the '{app_name}' app: App "
            f"'{app_name}' not found in environment 'main'.")

    backend = ModalBackend(MINILM, ModalConfig(), lookup=lookup)

    with pytest.raises(EmbeddingError, match=r"not deployed.*Run `modal deploy infra/modal_app.py`"):
        backend.embed_texts(["x"])
    assert backend.embed_texts([]).shape == (0, 384)  # nothing to do, no lookup


def test_without_a_token_the_real_lookup_says_modal_token_new(tmp_path: Path) -> None:
    """The real `modal.Cls.from_name(...).hydrate()`, with no credentials anywhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "TESSERA_"))}
    env |= {"HOME": str(tmp_path), "MODAL_CONFIG_PATH": str(tmp_path / "none.toml"),
            "PYTHONPATH": str(REPO)}
    code = ("from tessera.core.settings import ModalConfig\nfrom models.modal_backend import ModalBackend\n"
            "from models.registry import BUILTIN\n"
            "try:\n    ModalBackend(BUILTIN['all-minilm-l6-v2'], ModalConfig()).embed_texts(['x'])\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")

    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)

    assert out.stdout.startswith("EmbeddingError Modal has no credentials"), out.stdout + out.stderr
    assert "`modal token new`" in out.stdout and "`modal deploy infra/modal_app.py`" in out.stdout


def test_auth_failure_during_the_run_is_not_retried() -> None:
    class Expired(FakeDeployed):
        def map(self, batches: Iterable[list[Any]], **kwargs: Any) -> list[Any]:
            raise modal.exception.AuthError("Token expired")

    backend, slept = _backend(Expired(script=lambda b: None))

    with pytest.raises(EmbeddingError, match="modal token new"):
        backend.embed_texts(TEXTS)
    assert slept == []


def test_routing_by_backlog_size(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path,
                        embedding=EmbeddingConfig(backend="auto", modal_threshold_chunks=100))

    assert choose_backend(settings, 100) == "local"
    assert choose_backend(settings, 101) == "modal"
    assert isinstance(make_backend(settings, pending_chunks=5000), ModalBackend)  # no network yet
    # Small backlogs stay on this machine's default CPU runtime (OpenVINO; no GPU here).
    assert isinstance(make_backend(settings, pending_chunks=5), OpenVINOBackend)
    forced = Settings(home=tmp_path, embedding=EmbeddingConfig(backend="modal"))
    assert choose_backend(forced, 0) == "modal"


def test_spec_round_trips_through_the_class_parameter() -> None:
    clip = BUILTIN["clip-vit-base-patch32"]
    assert spec_from_json(spec_to_json(clip)) == clip
    assert spec_from_json(spec_to_json(MINILM)) == MINILM


def test_fill_remote_cache_calls_the_deployed_function_and_explains_failures() -> None:
    calls: list[Any] = []

    class Fill:
        def remote(self, specs: list[str]) -> list[dict[str, Any]]:
            calls.append(specs)
            return [{"model_id": spec_from_json(s).id, "status": "downloaded"} for s in specs]

    rows = fill_remote_cache([BUILTIN["clip-vit-base-patch32"]], ModalConfig(),
                             lookup_function=lambda app, name: Fill())

    assert rows == [{"model_id": "openai/clip-vit-base-patch32", "status": "downloaded"}]

    def missing(app: str, name: str) -> Any:
        raise modal.exception.NotFoundError(f"Lookup failed for Function '{name}'")

    with pytest.raises(EmbeddingError, match="modal deploy infra/modal_app.py"):
        fill_remote_cache([MINILM], ModalConfig(), lookup_function=missing)


def test_the_callers_trace_reaches_the_container(minilm: LocalBackend) -> None:
    """The trace context goes with each Modal call: the container's span for each batch (run
    here through `.local()`) is a child of the caller's span, in the same trace."""
    from tessera.core import telemetry
    from tests.support.traces import exporter, named, trace_of

    exporter()
    backend, _ = _backend(FakeDeployed())
    with telemetry.span("caller") as caller:
        backend.embed_texts(TEXTS[:4])  # batch_size 3: two batches
    context = caller.get_span_context()
    spans = named(trace_of(f"{context.trace_id:032x}"), "modal embed")
    assert len(spans) == 2 and sorted(s.attributes["tessera.items"] for s in spans) == [1, 3]
    assert all(s.parent is not None and s.parent.span_id == context.span_id for s in spans)
    assert all(s.attributes["tessera.device"] == "cpu" for s in spans)  # no GPU attributes here
