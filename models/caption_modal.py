"""Modal captioner: the client side of the `Captioner` class deployed from `infra/modal_app.py`.

Batches fan out with `.map` (results in input order); a batch that fails for a passing reason
is retried with back-off; one that fails because of an image (a `CaptionError` raised in the
container) is raised as such, so the caller halves it to find the image. GPU-seconds are what
the containers report, for `fct_caption_cost`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypedDict

from models.base import EmbedStats
from models.captioning import CaptionError, Generation
from models.modal_backend import Lookup, explain_modal_error, modal_lookup, spec_to_json
from models.registry import ModelSpec
from tessera.core import telemetry
from tessera.core.errors import EmbeddingError
from tessera.core.retry import DELAYS, RetryPolicy, retry_failed

if TYPE_CHECKING:
    from tessera.core.settings import ModalConfig


class CaptionBatch(TypedDict):
    """What `Captioner.caption` returns for one batch."""

    captions: list[str]  # one per image, in input order
    seconds: float  # time spent captioning inside the container
    device: str  # "cuda" or "cpu"
    gpu: str | None  # torch.cuda.get_device_name(), None on CPU


class ModalCaptioner:
    """Captions on the deployed Modal class; same protocol as `LocalCaptioner`."""

    def __init__(self, spec: ModelSpec, generation: Generation, config: ModalConfig,
                 class_name: str = "Captioner", batch_size: int = 16, *, device: str = "cuda",
                 lookup: Lookup | None = None, sleep: Callable[[float], None] = time.sleep,
                 backoff: Sequence[float] = DELAYS) -> None:
        self.spec = spec
        self.generation = generation
        self.config = config
        self.class_name = class_name
        self.batch_size = batch_size
        self.device = device
        self.stats = EmbedStats(backend="modal", device=device, gpu_type=config.gpu)
        self._lookup = lookup or modal_lookup
        self._policy = RetryPolicy(tuple(backoff), config.retries, self._retryable, sleep)
        self._method: Any = None

    def _remote(self) -> Any:
        """The bound `caption` method of `Captioner(model_spec=..., generation=..., device=...)`."""
        if self._method is None:
            app = self.config.app_name
            try:
                cls = self._lookup(app, self.class_name)
            except Exception as exc:  # noqa: BLE001 - Modal's errors become one clear error
                raise EmbeddingError(
                    explain_modal_error(exc, app, self.class_name)
                    or f"could not reach the Modal app {app!r}: {exc}") from exc
            # The container cannot see this machine's paths: it loads from the Volume.
            self._method = cls(model_spec=spec_to_json(replace(self.spec, path=None)),
                               generation=self.generation.key(), device=self.device).caption
        return self._method

    def caption(self, images: list[bytes]) -> list[str]:
        """Caption the images on Modal, `batch_size` per container call."""
        if not images:
            return []
        batches = [images[i:i + self.batch_size] for i in range(0, len(images), self.batch_size)]
        method = self._remote()

        def attempt(pending: list[int]) -> list[Any]:
            outputs = self._map(method, [batches[i] for i in pending])
            return [out if isinstance(out, BaseException) else self._accept(out, len(batches[i]))
                    for i, out in zip(pending, outputs, strict=True)]

        results = retry_failed(len(batches), attempt, self._policy, give_up=self._give_up,
                               what="Modal caption batch(es)", on_retry=self._count_retries)
        return [text for batch in results for text in batch]

    def _retryable(self, error: BaseException) -> bool:
        """An image's fault (the caller bisects), or one Modal explains, fails again on a retry."""
        return not isinstance(error, CaptionError) and explain_modal_error(
            error, self.config.app_name, self.class_name) is None

    def _give_up(self, index: int, error: BaseException, tries: int) -> Exception:
        if isinstance(error, CaptionError):
            return CaptionError(str(error))
        message = explain_modal_error(error, self.config.app_name, self.class_name)
        if message is not None:  # no token, not deployed, no weights: no retry helps
            return EmbeddingError(message)
        return CaptionError(f"batch {index} failed on Modal {tries} time(s), the last "
                            f"with {type(error).__name__}: {error}")

    def _count_retries(self, failed: int) -> None:
        self.stats.retries += failed

    def _map(self, method: Any, batches: list[list[bytes]]) -> list[Any]:
        try:
            outputs = list(method.map(batches, kwargs={"trace": telemetry.traceparent()},
                                      order_outputs=True, return_exceptions=True))
        except Exception as exc:  # noqa: BLE001 - decided below: fatal, or retry them all
            message = explain_modal_error(exc, self.config.app_name, self.class_name)
            if message is not None:
                raise EmbeddingError(message) from exc
            return [exc] * len(batches)
        if len(outputs) != len(batches):
            raise EmbeddingError(f"Modal returned {len(outputs)} results for {len(batches)} "
                                 "caption batches")
        return outputs

    def _accept(self, output: CaptionBatch, expected: int) -> list[str]:
        captions = [str(c) for c in output["captions"]]
        if len(captions) != expected:
            raise CaptionError(f"Modal returned {len(captions)} captions for {expected} images")
        self.stats.device = output.get("device", self.stats.device)
        if output.get("gpu"):
            self.stats.gpu_type = output["gpu"]
            self.stats.gpu_seconds += float(output["seconds"])
        else:
            self.stats.gpu_type = None
        self.stats.items += expected
        self.stats.batches += 1
        return captions

    def close(self) -> None:
        """Forget the remote handle (containers scale down on their own)."""
        self._method = None
