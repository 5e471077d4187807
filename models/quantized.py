"""Int8 query embedding: the OpenVINO export quantized by NNCF, calibrated on indexed text.

A serving process may embed queries with an int8 copy of the collection's model
(`api.query_precision = "int8"`) while documents stay embedded as they were: both are the same
network, so query and document vectors stay in one space, and the int8 copy's vectors are
measured against the full-precision ones (benchmarks/REPORT.md, Int8 queries).

The copy is NNCF post-training quantization (`nncf.quantize`, transformer preset: SmoothQuant and
8-bit weights and activations) of the fp32 export (`models.optimized.export_openvino`),
calibrated on up to CALIBRATION_TEXTS texts the model embedded as documents (a sample of the
collection's chunks, never queries). It is made once per model cache, beside the fp32 export, in
`<model cache>/derived/<model>/openvino-int8/`, with a `meta.json` that records the fp32 export it
came from, the NNCF version, how many texts calibrated it and their hash, and the worst cosine of
its vectors to the fp32 export's on those texts. A new fp32 export or NNCF version makes it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.optimized import Batcher, _current, _export_lock, _Runner, export_openvino
from models.registry import ModelSpec
from tessera.core.errors import EmbeddingError
from tessera.core.fs import replace_dir

logger = logging.getLogger(__name__)

CALIBRATION_TEXTS = 300
MIN_CALIBRATION_TEXTS = 20
# The int8 copy is refused when a calibration text's vector falls below this cosine to fp32's.
MIN_INT8_COSINE = 0.98
QUANTIZE_FORMAT = 1  # bump when the quantization recipe changes


def int8_dir(fp32_dir: Path) -> Path:
    """Where the int8 copy of the export in `fp32_dir` lives."""
    return fp32_dir.parent / "openvino-int8"


def _key(fp32_dir: Path) -> dict[str, Any]:
    from importlib.metadata import version

    made = json.loads((fp32_dir / "meta.json").read_text())
    return {"fp32_export": {k: made.get(k) for k in ("format", "openvino", "source")},
            "nncf": version("nncf"), "quantize_format": QUANTIZE_FORMAT}


def export_int8(spec: ModelSpec, model_dir: Path, cache_dir: Path,
                calibration: Callable[[], list[str]]) -> Path:
    """The int8 copy of the model's OpenVINO export (made on first use from `calibration()`'s
    texts); returns its folder."""
    fp32 = export_openvino(spec, model_dir, cache_dir)
    target, key = int8_dir(fp32), _key(fp32)
    if _current(target, key):
        return target
    with _export_lock(target):
        if _current(target, key):
            return target
        texts = [t for t in calibration() if t and t.strip()][:CALIBRATION_TEXTS]
        if len(texts) < MIN_CALIBRATION_TEXTS:
            raise EmbeddingError(
                f"the int8 query model of {spec.name} is calibrated on indexed text, and the "
                f"collection gave {len(texts)} texts (needs {MIN_CALIBRATION_TEXTS}); ingest "
                "more, or set api.query_precision = 'same'")
        logger.info("quantizing %s to int8 for queries on %d indexed texts (once per model "
                    "cache)", spec.name, len(texts))
        replace_dir(lambda tmp: _quantize(spec, model_dir, fp32, tmp, texts, key), target)
    return target


def int8_query_ir(spec: ModelSpec, model_dir: Path, cache_dir: Path,
                  calibration: Callable[[], list[str]]) -> Callable[[], Path]:
    """For `OpenVINOBackend(query_ir=...)`: the int8 copy's folder, made on first use."""
    return lambda: export_int8(spec, model_dir, cache_dir, calibration)


def _quantize(spec: ModelSpec, model_dir: Path, fp32: Path, tmp: Path, texts: list[str],
              key: dict[str, Any]) -> None:
    import nncf
    import openvino as ov

    started = time.perf_counter()
    batcher = Batcher(spec, model_dir, batch_size=1)
    samples: list[dict[str, np.ndarray]] = []

    def keep(ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        """Collect each tokenized text as one calibration input (nothing is inferred)."""
        samples.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        return np.zeros((len(ids), spec.dimension), dtype=np.float32)

    batcher.embed(texts, keep)
    model = ov.Core().read_model(str(fp32 / "model.xml"))
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF draws progress bars on stdout
        quantized = nncf.quantize(model, nncf.Dataset(samples),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples))
    ov.save_model(quantized, str(tmp / "model.xml"), compress_to_fp16=False)
    worst = _worst_cosine(spec, model_dir, fp32, tmp, texts[:64])
    if worst < MIN_INT8_COSINE:
        raise EmbeddingError(f"the int8 copy of {spec.name} embeds a calibration text at cosine "
                             f"{worst:.4f} to fp32 (needs >= {MIN_INT8_COSINE}); set "
                             "api.query_precision = 'same'")
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    meta = {**key, "model_id": spec.id, "calibration_texts": len(texts),
            "calibration_sha256": digest, "worst_cosine_to_fp32": round(worst, 6),
            "quantize_seconds": round(time.perf_counter() - started, 3)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def _worst_cosine(spec: ModelSpec, model_dir: Path, fp32: Path, int8: Path,
                  texts: list[str]) -> float:
    a = _Runner(spec, model_dir, fp32, "f32", batch_size=8).embed(texts)
    b = _Runner(spec, model_dir, int8, "f32", batch_size=8).embed(texts)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))
