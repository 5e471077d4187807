"""Goal 2: every CPU runtime candidate for the default model, same texts, rounds interleaved.

Speed is the ratio to sentence-transformers on torch fp32 measured in the same round (the CPU is
shared, so absolute times drift; a ratio from one round does not). Quality here is the cosine of
each text's vector to torch fp32's; the finalist's nDCG@10 on all of SciFact is in `ndcg.py`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

Embed = Callable[[list[str]], np.ndarray]
_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def _texts(n: int) -> list[str]:
    """The first n SciFact documents as BEIR embeds them: "title text"."""
    return [f"{r['title']} {r['text']}".strip() for r in common.corpus_records(n)]


def _calibration_texts(n: int) -> list[str]:
    """Texts for static quantization, taken after the screened documents (no overlap)."""
    return [f"{r['title']} {r['text']}".strip() for r in common.corpus_records(3000)[-n:]]


def _torch_candidates(batch_size: int) -> dict[str, Embed]:
    import torch
    from sentence_transformers import SentenceTransformer

    from models.optimized import Batcher, torch_module
    from models.registry import BUILTIN

    spec = BUILTIN[common.MODEL]
    st = SentenceTransformer(str(common.model_dir()), device="cpu", local_files_only=True)
    module = torch_module(common.model_dir(), normalize=True)
    batcher = Batcher(spec, common.model_dir(), batch_size)

    def bf16(ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types))
        return out.float().numpy()

    def fp32(ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)).numpy()

    out: dict[str, Embed] = {
        "torch fp32 (sentence-transformers, baseline)": lambda t: st.encode(
            t, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False),
        "torch fp32, own batcher": lambda t: batcher.embed(t, fp32),
        "torch bf16 autocast": lambda t: batcher.embed(t, bf16),
    }
    return out


def _openvino_candidates(batch_size: int, cache_dir: Path) -> dict[str, Embed]:
    from models.optimized import OpenVINOBackend
    from models.registry import BUILTIN

    spec = BUILTIN[common.MODEL]
    out: dict[str, Embed] = {}
    for precision, bs in (("f32", batch_size), ("bf16", batch_size), ("bf16", batch_size * 2)):
        backend = OpenVINOBackend(spec, common.model_dir(), cache_dir, precision,  # type: ignore[arg-type]
                                  bs)
        out[f"OpenVINO {precision}, batch {bs}"] = backend.embed_texts
    return out


def _onnx_candidates(batch_size: int, work: Path) -> dict[str, Embed]:
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from models.optimized import Batcher, torch_module
    from models.registry import BUILTIN

    spec = BUILTIN[common.MODEL]
    batcher = Batcher(spec, common.model_dir(), batch_size)
    fp32 = work / "model.onnx"
    if not fp32.exists():
        work.mkdir(parents=True, exist_ok=True)
        example = torch.ones((2, 8), dtype=torch.long)
        torch.onnx.export(torch_module(common.model_dir(), normalize=True), (), str(fp32),
                          kwargs={"input_ids": example, "attention_mask": example,
                                  "token_type_ids": torch.zeros_like(example)},
                          input_names=list(_NAMES), output_names=["embedding"],
                          dynamic_axes={k: {0: "batch", 1: "seq"} for k in _NAMES},
                          opset_version=17, dynamo=False)
    variants = {"ONNX Runtime fp32": fp32}
    dyn = work / "dynamic-int8.onnx"
    if not dyn.exists():
        quantize_dynamic(str(fp32), str(dyn), per_channel=True, weight_type=QuantType.QInt8)
    variants["ONNX Runtime dynamic int8 (per-channel)"] = dyn
    static = work / "static-int8.onnx"
    if not static.exists():
        calib = _calibration_texts(64)

        feeds: list[dict[str, np.ndarray]] = []

        def collect(i: np.ndarray, m: np.ndarray, t: np.ndarray) -> np.ndarray:
            feeds.append({"input_ids": i, "attention_mask": m, "token_type_ids": t})
            return np.zeros((len(i), spec.dimension), np.float32)

        batcher.embed(calib, collect)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.feeds = iter(feeds)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.feeds, None)

        quantize_static(str(fp32), str(static), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    variants["ONNX Runtime static int8 (QDQ, 64 SciFact calibration texts)"] = static
    out: dict[str, Embed] = {}
    for name, path in variants.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        out[name] = _ort_embed(batcher, session)
    return out


def _ort_embed(batcher: Any, session: Any) -> Embed:
    def infer(i: np.ndarray, m: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {"input_ids": i, "attention_mask": m,
                                             "token_type_ids": t})[0])
    return lambda texts: np.asarray(batcher.embed(texts, infer))


def run(docs: int = 200, rounds: int = 2, batch_size: int = 32,
        skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Screen all candidates on `docs` documents; returns rows for the report."""
    texts = _texts(docs)
    cands: dict[str, Embed] = {}
    errors: dict[str, str] = {}
    makers: dict[str, Callable[[], dict[str, Embed]]] = {
        "torch": lambda: _torch_candidates(batch_size),
        "openvino": lambda: _openvino_candidates(batch_size, common.OUT / "models"),
        "onnx": lambda: _onnx_candidates(batch_size, common.OUT / "onnx"),
    }
    for family, make in makers.items():
        if family in skip:
            continue
        try:
            cands.update(make())
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot load is reported, not fatal
            errors[family] = f"{type(exc).__name__}: {exc}"
    base = next(iter(cands))
    for embed in cands.values():
        embed(texts[:8])  # warm-up: first-shape compilation, allocator
    seconds: dict[str, list[float]] = {n: [] for n in cands}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for name, embed in cands.items():
            start = time.perf_counter()
            vectors[name] = embed(texts)
            seconds[name].append(time.perf_counter() - start)
    ref = vectors[base] / np.linalg.norm(vectors[base], axis=1, keepdims=True)
    rows = []
    for name in cands:
        v = vectors[name] / np.linalg.norm(vectors[name], axis=1, keepdims=True)
        cos = np.sum(v * ref, axis=1)
        ratios = [b / s for b, s in zip(seconds[base], seconds[name], strict=True)]
        rows.append({"candidate": name, "speedup": statistics.median(ratios),
                     "speedups": ratios, "seconds": seconds[name],
                     "docs_per_s": docs / min(seconds[name]),
                     "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())})
    return {"docs": docs, "rounds": rounds, "batch_size": batch_size, "rows": rows,
            "errors": errors, "machine": common.machine()}
