"""OpenVINO backend: the same model, exported once into the model cache, run by OpenVINO's CPU plugin.

The export is an OpenVINO IR (fp32 weights) of the transformer plus mean pooling and L2
normalisation, made locally from the model's own files. It lives in
`<model cache>/derived/<model>/openvino/` beside a `meta.json` that records what it was made
from (the sha256 of the source weights and config, the OpenVINO version, this module's export
format) and the probe cosine to torch measured when it was made. Any change to those inputs makes
the next load export again; a half-written export is never used (temp directory, then rename).

`precision` is a compile-time hint, not a second export: "f32" computes in fp32 (cosine 1.0000 to
torch), "bf16" runs the matrix products in bfloat16 on CPUs that have AVX512-BF16 or AMX (measured
in benchmarks/REPORT.md; elsewhere OpenVINO emulates or falls back to fp32).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.base import EmbedStats, require_images
from models.registry import ModelSpec
from tessera.core.errors import EmbeddingError
from tessera.core.fs import MIB, file_sha256, free_bytes, locked, replace_dir

logger = logging.getLogger(__name__)

Precision = Literal["f32", "bf16"]
EXPORT_FORMAT = 1  # bump when the exported graph changes
PROBE_TEXTS = [
    "Tessera model-cache probe: photosynthesis turns light, water and CO2 into sugar.",
    "Vitamin D deficiency is associated with an increased risk of fractures in older adults.",
    "a",
]
MIN_EXPORT_COSINE = 0.999
EXPORT_LOCK_TIMEOUT = 600.0  # an export takes ~10 s; a holder this slow is stuck
# Exports made and verified in this process, by what they were made from: a second model cache
# (another home) gets linked copies instead of a second export.
_MADE: dict[str, Path] = {}
_HASHES: dict[tuple[str, int, int], str] = {}
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_SOURCE_FILES = ("model.safetensors", "pytorch_model.bin", "config.json", "modules.json",
                 "1_Pooling/config.json")


def export_dir(spec: ModelSpec, cache_dir: Path) -> Path:
    """Where the OpenVINO export of this model lives in the model cache."""
    return Path(cache_dir) / "derived" / spec.vector_name / "openvino"


def source_fingerprint(model_dir: Path) -> dict[str, str]:
    """sha256 of the files the export is computed from (weights, configs, pooling)."""
    out = {}
    for rel in _SOURCE_FILES:
        path = Path(model_dir) / rel
        if path.is_file():
            out[rel] = _sha256(path)
    return out


def _sha256(path: Path) -> str:
    # Hashing the 90 MB of weights costs ~0.5 s: once per process per unchanged file.
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return _HASHES[key]


def _meta_key(model_dir: Path) -> dict[str, Any]:
    import openvino

    return {"format": EXPORT_FORMAT, "openvino": openvino.__version__,
            "source": source_fingerprint(model_dir)}


def _check_mean_pooling(model_dir: Path) -> None:
    pooling = Path(model_dir) / "1_Pooling" / "config.json"
    conf = json.loads(pooling.read_text()) if pooling.is_file() else {}
    if not conf.get("pooling_mode_mean_tokens"):
        raise EmbeddingError(f"runtime 'openvino' supports mean-pooled sentence-transformers models; "
                             f"{model_dir} has no mean pooling config. Use runtime = 'torch'")


def torch_module(model_dir: Path, normalize: bool) -> Any:
    """The transformer with mean pooling (and normalisation) in one graph, keyword inputs."""
    import torch
    from transformers import AutoModel

    class _Pooled(torch.nn.Module):
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled

    bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    return _Pooled(bert).eval()


def _current(folder: Path, key: dict[str, Any]) -> bool:
    """True when `folder` holds a complete export made from exactly these inputs."""
    meta_path = folder / "meta.json"
    if not (meta_path.is_file() and (folder / "model.xml").is_file() and (folder / "model.bin").is_file()):
        return False
    meta = json.loads(meta_path.read_text())
    return {k: meta.get(k) for k in key} == key


def export_openvino(spec: ModelSpec, model_dir: Path, cache_dir: Path) -> Path:
    """Export (or reuse) the OpenVINO IR of the model; returns the export directory.

    Exporters of one cache take turns (a file lock beside the export), so two processes that
    both find it missing make it once, and neither sees the other's half-written files.
    """
    target = export_dir(spec, cache_dir)
    key = _meta_key(model_dir)
    if _current(target, key):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _export_lock(target):
        if _current(target, key):  # made by another process while this one waited
            return target
        if (target / "meta.json").is_file():
            logger.info("OpenVINO export at %s is stale (made from other files); exporting again",
                        target)
        _check_mean_pooling(model_dir)
        made = _MADE.get(json.dumps(key, sort_keys=True))
        if made is not None and made != target and _current(made, key):
            return _link_copy(made, target)
        logger.info("exporting %s to OpenVINO in %s (once per model cache, ~10 s)", spec.name,
                    target)
        _require_room(model_dir, target.parent)
        with _quiet_transformers():
            _export(spec, model_dir, target, key)
    _MADE[json.dumps(key, sort_keys=True)] = target
    return target


def _require_room(model_dir: Path, folder: Path) -> None:
    """Refuse an export the disk cannot hold, before OpenVINO writes: its save and the probe's
    compile of a truncated IR are native code, and a process died of SIGSEGV on a full disk."""
    weights = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    need, free = weights + 64 * MIB, free_bytes(folder)  # an fp32 IR is about the weights' size
    if free < need:
        raise OSError(errno.ENOSPC, f"the OpenVINO export needs about {need // MIB} MiB and "
                      f"{free // MIB} MiB are free", str(folder))


def _export_lock(target: Path) -> Any:
    def busy(holder: str, waited: float) -> EmbeddingError:
        return EmbeddingError(f"another process (pid {holder}) has been exporting the model to "
                              f"{target} for over {waited:.0f} s; let it finish and try again")

    return locked(target.parent / ".openvino.lock", EXPORT_LOCK_TIMEOUT, busy)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bars or config chatter on a CLI user's terminal."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _export(spec: ModelSpec, model_dir: Path, target: Path, key: dict[str, Any]) -> None:
    """Trace, convert, probe and publish one export (temp directory, then rename)."""
    import openvino as ov
    import torch

    start = time.perf_counter()
    module = torch_module(model_dir, spec.normalize)
    example = torch.ones((2, 8), dtype=torch.long)
    # Tracing warns about shape-dependent branches it freezes; the probe below checks the result
    # at several lengths instead (and pytest turns warnings into errors).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ir = ov.convert_model(module, example_input={"input_ids": example, "attention_mask": example,
                                                      "token_type_ids": torch.zeros_like(example)})
    def fill(tmp: Path) -> None:
        # compress_to_fp16 defaults to True and would round the weights: keep them fp32.
        ov.save_model(ir, str(tmp / "model.xml"), compress_to_fp16=False)
        cos = _probe_cosine(spec, model_dir, tmp)
        if cos < MIN_EXPORT_COSINE:
            raise EmbeddingError(f"the OpenVINO export of {spec.name} embeds the probe texts at "
                                 f"cosine {cos:.4f} to torch (needs >= {MIN_EXPORT_COSINE}); "
                                 "use runtime = 'torch' and report the openvino version")
        meta = {**key, "model_id": spec.id, "revision": spec.revision, "probe_cosine": round(cos, 6),
                "export_seconds": round(time.perf_counter() - start, 3)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")

    replace_dir(fill, target)


def _link_copy(source: Path, target: Path) -> Path:
    """Put an export verified earlier in this process into another cache (hard links if possible)."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    return replace_dir(lambda tmp: shutil.copytree(source, tmp, copy_function=link,
                                                   dirs_exist_ok=True), target)


def _probe_cosine(spec: ModelSpec, model_dir: Path, ir_dir: Path) -> float:
    """Worst cosine, over the probe texts, of the fp32 export to sentence-transformers on torch."""
    from models.local import load_sentence_transformer

    reference = load_sentence_transformer(model_dir, "cpu").encode(
        PROBE_TEXTS, normalize_embeddings=True, convert_to_numpy=True,
        show_progress_bar=False)  # -v would draw tqdm's bar into the logs
    runner = _Runner(spec, model_dir, ir_dir, "f32", batch_size=8)
    got = runner.embed(PROBE_TEXTS)
    got = got / np.linalg.norm(got, axis=1, keepdims=True)
    return float(np.min(np.sum(got * reference, axis=1)))


Infer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# Batches are padded to a multiple of this many tokens. Each new input shape costs OpenVINO a
# re-plan: one query at a time, with SciFact's query lengths, 4.2 ms a query with exact widths
# against 3.1 ms when the shape repeats (AMD EPYC, bf16, one thread). Padding is masked out of
# the pooling, so the vectors do not change.
PAD_MULTIPLE = 8


def padded_width(width: int, max_length: int) -> int:
    """`width` rounded up to a multiple of PAD_MULTIPLE, but not past the model's window."""
    return max(width, min(-(-width // PAD_MULTIPLE) * PAD_MULTIPLE, max_length))


class Batcher:
    """Tokenize, sort by length, pad each batch to its longest text, infer, restore order."""

    def __init__(self, spec: ModelSpec, model_dir: Path, batch_size: int) -> None:
        from tokenizers import Tokenizer

        self.batch_size = batch_size
        self.dimension = spec.dimension
        self.max_length = spec.max_length
        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        # tokenizer.json ships truncation/padding at 128; the model's window is spec.max_length.
        self.tokenizer.enable_truncation(spec.max_length)
        self.tokenizer.no_padding()
        # The special tokens the tokenizer puts around a text, learnt from a one-word probe.
        plain = self.tokenizer.encode("a", add_special_tokens=False).ids
        full = self.tokenizer.encode("a").ids
        at = next(i for i in range(len(full)) if full[i:i + len(plain)] == plain)
        self._prefix, self._suffix = full[:at], full[at + len(plain):]

    def embed(self, texts: list[str], infer: Infer) -> np.ndarray:
        """Vectors for `texts`, in input order, computed `batch_size` texts at a time."""
        return self.embed_ids([e.ids for e in self.tokenizer.encode_batch(texts)], infer)

    def with_special_tokens(self, ids: Sequence[Sequence[int]]) -> list[list[int]]:
        """Wrap windows of plain token ids the way the tokenizer would ([CLS] ... [SEP])."""
        room = self.max_length - len(self._prefix) - len(self._suffix)
        return [[*self._prefix, *window[:room], *self._suffix] for window in ids]

    def embed_ids(self, ids: Sequence[Sequence[int]], infer: Infer) -> np.ndarray:
        """Vectors for sequences of token ids (special tokens included), in input order."""
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = padded_width(int(lengths[idx[0]]), self.max_length)
            batch = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = int(lengths[i])
                batch[row, :n] = ids[i]
                mask[row, :n] = 1
            out[idx] = infer(batch, mask, np.zeros_like(batch))
        return out


class _Runner:
    """The compiled OpenVINO model behind a Batcher."""

    def __init__(self, spec: ModelSpec, model_dir: Path, ir_dir: Path, precision: Precision,
                 batch_size: int, threads: int | None = None) -> None:
        import openvino as ov

        self.batcher = Batcher(spec, model_dir, batch_size)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = ov.Core().compile_model(str(ir_dir / "model.xml"), "CPU", config)
        self.request = compiled.create_infer_request()

    def _infer(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        try:
            result = self.request.infer({"input_ids": ids, "attention_mask": mask,
                                         "token_type_ids": types})
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError for bad inputs
            raise EmbeddingError(f"OpenVINO inference failed on a batch of shape {ids.shape} "
                                 f"({type(exc).__name__}: {exc})") from exc
        return np.asarray(result[0])

    def embed(self, texts: list[str]) -> np.ndarray:
        """Vectors for `texts`, in input order."""
        return self.batcher.embed(texts, self._infer)

    def embed_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Vectors for windows of token ids without special tokens, in input order."""
        return self.batcher.embed_ids(self.batcher.with_special_tokens(ids), self._infer)


class OpenVINOBackend:
    """Text embeddings through the OpenVINO export of a mean-pooled sentence-transformers model."""

    def __init__(self, spec: ModelSpec, path: Path, cache_dir: Path, precision: Precision = "f32",
                 batch_size: int = 32, threads: int | None = None,
                 query_ir: Callable[[], Path] | None = None) -> None:
        """`query_ir`: embed queries with another export of the model, the folder this returns
        on first use (models.quantized.int8_query_ir: the int8 copy)."""
        if spec.kind != "sentence-transformers":
            raise EmbeddingError(f"runtime 'openvino' runs text models only; {spec.name!r} is "
                                 f"{spec.kind}. Use runtime = 'torch'")
        self.spec = spec
        self.path = path
        self.cache_dir = Path(cache_dir)
        self.precision = precision
        self.batch_size = batch_size
        self.threads = threads
        self.stats = EmbedStats(backend="local", device="cpu")
        self._runner: _Runner | None = None
        self.query_ir = query_ir
        self._query_runner: _Runner | None = None

    @property
    def runner(self) -> _Runner:
        """The compiled model; the first access exports (once per cache) and compiles."""
        if self._runner is None:
            try:
                ir_dir = export_openvino(self.spec, self.path, self.cache_dir)
                self._runner = _Runner(self.spec, self.path, ir_dir, self.precision,
                                       self.batch_size, self.threads)
            except ImportError as exc:
                raise EmbeddingError("runtime 'openvino' needs the openvino package: "
                                     "pip install openvino, or set runtime = 'torch'") from exc
            except EmbeddingError:
                raise
            except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own
                raise EmbeddingError(
                    f"OpenVINO could not export or compile {self.spec.name} from {self.path} "
                    f"({type(exc).__name__}: {exc}); set embedding.runtime = 'torch' to embed "
                    "without it, and report the openvino version") from exc
        return self._runner

    def _encode(self, items: Sequence[Any], embed: Callable[[], np.ndarray]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.spec.dimension), dtype=np.float32)
        vectors = embed()
        self.stats.items += len(items)
        self.stats.batches += 1
        return vectors

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embed document chunks."""
        texts = list(texts)
        return self._encode(texts, lambda: self.runner.embed(texts))

    def embed_token_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Embed document chunks from their token ids (tokenized with this model's tokenizer.json,
        no special tokens): what the chunker already computed."""
        return self._encode(ids, lambda: self.runner.embed_ids(ids))

    @property
    def query_runner(self) -> _Runner:
        """The model queries go through: `query_ir`'s export where given, else the model."""
        if self.query_ir is None:
            return self.runner
        if self._query_runner is None:
            self._query_runner = _Runner(self.spec, self.path, self.query_ir(), self.precision,
                                         self.batch_size, self.threads)
        return self._query_runner

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Embed queries (this model family uses no query prefix)."""
        texts = list(texts)
        return self._encode(texts, lambda: self.query_runner.embed(texts))

    def embed_images(self, images: list[bytes]) -> np.ndarray:
        """Refused: this runtime runs text models only, and a text model embeds no images on
        any runtime (CLIP-style models run on torch)."""
        require_images(self.spec)
        raise EmbeddingError(f"runtime 'openvino' embeds text only; set runtime = 'torch' for "
                             f"{self.spec.name!r} images")

    def close(self) -> None:
        """Drop the compiled models."""
        self._runner = self._query_runner = None


def openvino_loader(cache_dir: Path, precision: Precision = "f32") -> Callable[
        [ModelSpec, Path], tuple[Callable[[list[str]], np.ndarray], float]]:
    """A `models.cache.Loader` that probes through the OpenVINO export (making it if missing)."""
    def load(spec: ModelSpec, path: Path) -> tuple[Callable[[list[str]], np.ndarray], float]:
        backend = OpenVINOBackend(spec, path, cache_dir, precision, batch_size=8)
        start = time.perf_counter()
        backend.runner  # noqa: B018 - the first access exports/compiles
        return backend.embed_texts, time.perf_counter() - start
    return load
