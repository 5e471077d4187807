"""Modal backend: the client side of the GPU embedder deployed from `infra/modal_app.py`.

It looks the deployed `Embedder` class up by name, cuts the inputs into batches, fans them out
with `.map` a window at a time (results in input order), retries failed batches with back-off,
and adds up the GPU-seconds the containers report, for `fct_embedding_cost`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import numpy as np

from models.base import EmbedStats, require_images
from models.registry import ModelSpec
from tessera.core import telemetry
from tessera.core.errors import EmbeddingError, EmbeddingUnavailableError
from tessera.core.retry import DELAYS, RetryPolicy, retry_failed

if TYPE_CHECKING:
    from tessera.core.settings import ModalConfig

# Modal uploads big inputs as blobs; keeping one image batch under this keeps each input quick
# to ship and retry, whatever `batch_size` says.
MAX_IMAGE_BATCH_BYTES = 32 * 1024 * 1024
FILL_FUNCTION = "fill_model_cache"


class EmbedResult(TypedDict):
    """What `Embedder.embed` returns for one batch."""

    vectors: np.ndarray  # (n, dimension) float32, in input order
    seconds: float  # time spent encoding inside the container
    device: str  # "cuda" or "cpu"
    gpu: str | None  # torch.cuda.get_device_name(), None on CPU


def spec_to_json(spec: ModelSpec) -> str:
    """The spec as the `model_spec` parameter of the deployed class (a string Modal can key on)."""
    data = asdict(spec)
    data["path"] = str(spec.path) if spec.path is not None else None
    data["modalities"] = list(spec.modalities)
    return json.dumps(data, sort_keys=True)


def spec_from_json(text: str) -> ModelSpec:
    """Inverse of `spec_to_json`."""
    data = json.loads(text)
    data["path"] = Path(data["path"]) if data.get("path") else None
    data["modalities"] = tuple(data.get("modalities", ("text",)))
    return ModelSpec(**data)


class RemoteMethod(Protocol):
    """A deployed method: `.map` and the `Lookup` are the only calls that cross the network."""

    def map(self, *input_iterators: Iterable[Any], kwargs: dict[str, Any] | None = None,
            order_outputs: bool = True, return_exceptions: bool = False) -> Iterable[Any]:
        """Run the method once per input, remotely (`kwargs`: passed to every call)."""
        ...


# Given (app name, class name): the deployed class, hydrated; raises Modal's own exceptions.
Lookup = Callable[[str, str], Any]


def modal_lookup(app_name: str, class_name: str) -> Any:
    """Look the deployed class up (this is where a missing token or app shows up)."""
    import modal

    cls = modal.Cls.from_name(app_name, class_name)
    cls.hydrate()
    return cls


def explain_modal_error(exc: BaseException, app_name: str, class_name: str) -> str | None:
    """A message that tells the user what to do, for the Modal failures that no retry fixes."""
    import modal.exception

    text = str(exc).strip()
    if isinstance(exc, modal.exception.AuthError):
        return (f"Modal has no credentials on this machine ({text}). Run `modal token new` (or "
                "set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET), then `modal deploy "
                "infra/modal_app.py`; or set embedding.backend = \"local\" in tessera.toml.")
    if isinstance(exc, modal.exception.NotFoundError):
        return (f"the Modal app {app_name!r} with {class_name!r} is not deployed in this Modal "
                f"environment ({text}). Run `modal deploy infra/modal_app.py`; or set "
                "embedding.backend = \"local\" in tessera.toml.")
    if isinstance(exc, modal.exception.PermissionDeniedError | modal.exception.InvalidError):
        return f"Modal refused the call ({type(exc).__name__}: {text}); check the token's workspace"
    if isinstance(exc, EmbeddingError):  # raised by our own code inside the container
        return f"the Modal container could not embed: {text}"
    return None


class ModalBackend:
    """Embeds on the deployed Modal GPU class; same protocol as the local backend."""

    def __init__(self, spec: ModelSpec, config: ModalConfig, *, device: str = "cuda",
                 lookup: Lookup | None = None, sleep: Callable[[float], None] = time.sleep,
                 backoff: Sequence[float] = DELAYS) -> None:
        self.spec = spec
        self.config = config
        self.device = device
        self.stats = EmbedStats(backend="modal", device=device, gpu_type=config.gpu)
        self.gpu_names: set[str] = set()
        self._lookup = lookup or modal_lookup
        self._policy = RetryPolicy(tuple(backoff), config.retries, self._retryable, sleep)
        self._method: RemoteMethod | None = None

    def _remote(self) -> RemoteMethod:
        """The bound `embed` method of `Embedder(model_spec=..., device=...)`; looked up once."""
        if self._method is None:
            app, cls_name = self.config.app_name, self.config.class_name
            try:
                cls = self._lookup(app, cls_name)
            except Exception as exc:  # noqa: BLE001 - Modal's errors become one clear error
                raise EmbeddingError(
                    explain_modal_error(exc, app, cls_name)
                    or f"could not reach the Modal app {app!r}: {exc}"
                ) from exc
            # The container cannot see this machine's paths: it loads from the Volume or the image.
            params = {"model_spec": spec_to_json(replace(self.spec, path=None)),
                      "device": self.device}
            self._method = cls(**params).embed
        return self._method

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embed document chunks on Modal."""
        batches = _split(list(texts), self.config.batch_size)
        return self._run(batches)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Embed queries (no query prefix for the models in the registry)."""
        return self.embed_texts(texts)

    def embed_images(self, images: list[bytes]) -> np.ndarray:
        """Embed encoded images on Modal (the container decodes them, EXIF and all)."""
        require_images(self.spec)
        batches = _split(list(images), self.config.batch_size, MAX_IMAGE_BATCH_BYTES)
        return self._run(batches)

    def close(self) -> None:
        """Forget the remote handle (containers scale down on their own)."""
        self._method = None

    def _run(self, batches: list[list[Any]]) -> np.ndarray:
        """Embed every batch, `max_concurrency` at a time, retrying failures; input order."""
        if not batches:
            return np.zeros((0, self.spec.dimension), dtype=np.float32)
        method = self._remote()

        def attempt(window: list[int]) -> list[Any]:
            outputs = self._map(method, [batches[i] for i in window])
            return [out if isinstance(out, BaseException)
                    else self._accept(out, len(batches[i]), i)
                    for i, out in zip(window, outputs, strict=True)]

        results = retry_failed(len(batches), attempt, self._policy, give_up=self._give_up,
                               window=self.config.max_concurrency, what="Modal batch(es)",
                               on_retry=self._count_retries)
        return np.concatenate(results, axis=0)

    def _map(self, method: RemoteMethod, window: list[list[Any]]) -> list[Any]:
        """One `.map` call; if the whole call fails, every batch in the window failed."""
        try:
            # The trace context goes with every call: the containers' spans join this trace.
            outputs = list(method.map(window, kwargs={"trace": telemetry.traceparent()},
                                      order_outputs=True, return_exceptions=True))
        except Exception as exc:  # noqa: BLE001 - decided below: fatal, or retry the window
            message = explain_modal_error(exc, self.config.app_name, self.config.class_name)
            if message is not None:
                raise EmbeddingError(message) from exc
            return [exc] * len(window)
        if len(outputs) != len(window):
            raise EmbeddingError(f"Modal returned {len(outputs)} results for {len(window)} batches")
        return outputs

    def _retryable(self, error: BaseException) -> bool:
        """A failure Modal explains (no token, not deployed) fails the same way on a retry."""
        return explain_modal_error(error, self.config.app_name, self.config.class_name) is None

    def _give_up(self, index: int, error: BaseException, tries: int) -> EmbeddingError:
        message = explain_modal_error(error, self.config.app_name, self.config.class_name)
        return EmbeddingError(
            message or f"batch {index} failed on Modal {tries} time(s), the last "
            f"with {type(error).__name__}: {error}; see the app's logs with "
            f"`modal app logs {self.config.app_name}` or raise embedding.modal.retries")

    def _count_retries(self, failed: int) -> None:
        self.stats.retries += failed

    def _accept(self, output: EmbedResult, expected: int, index: int) -> np.ndarray:
        """Check one batch's result and add its cost to the run's stats."""
        vectors = np.asarray(output["vectors"], dtype=np.float32)
        if vectors.shape != (expected, self.spec.dimension):
            raise EmbeddingError(
                f"batch {index}: Modal returned vectors of shape {vectors.shape}, expected "
                f"({expected}, {self.spec.dimension}); redeploy `infra/modal_app.py` and check "
                f"that the Volume holds {self.spec.id} (`tessera refresh-models`)"
            )
        gpu = output.get("gpu")
        self.stats.device = output.get("device", self.stats.device)
        if gpu:
            self.gpu_names.add(gpu)
            self.stats.gpu_seconds += float(output["seconds"])
        else:
            self.stats.gpu_type = None
        self.stats.items += expected
        self.stats.batches += 1
        return vectors


def _split(items: list[Any], size: int, max_bytes: int | None = None) -> list[list[Any]]:
    """Consecutive batches of at most `size` items (and `max_bytes` bytes, for images)."""
    batches: list[list[Any]] = []
    current: list[Any] = []
    current_bytes = 0
    for item in items:
        weight = len(item) if max_bytes is not None else 0
        if current and (len(current) >= size or
                        (max_bytes is not None and current_bytes + weight > max_bytes)):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += weight
    if current:
        batches.append(current)
    return batches


def fill_remote_cache(specs: list[ModelSpec], config: ModalConfig,
                      lookup_function: Callable[[str, str], Any] | None = None,
                      ) -> list[dict[str, Any]]:
    """Have the deployed app download these models into its Volume; one report row per model.

    `tessera refresh-models` calls this when `embedding.backend` is "modal" (or "auto").
    """
    def _default(app: str, name: str) -> Any:
        import modal

        function = modal.Function.from_name(app, name)
        function.hydrate()
        return function

    lookup = lookup_function or _default
    try:
        function = lookup(config.app_name, FILL_FUNCTION)
        rows: list[dict[str, Any]] = function.remote(
            [spec_to_json(replace(s, path=None)) for s in specs])
    except Exception as exc:  # noqa: BLE001 - Modal's errors become one clear error
        message = explain_modal_error(exc, config.app_name, FILL_FUNCTION)
        if message is not None:  # no token, no deployed app: a retry cannot help
            raise EmbeddingError(message) from exc
        raise EmbeddingUnavailableError(
            f"filling the Modal Volume {config.volume!r} failed: {exc}") from exc
    return rows
