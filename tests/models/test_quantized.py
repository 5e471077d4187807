"""Int8 queries: an NNCF copy of the OpenVINO export, calibrated on indexed text, made once per
model cache; queries go through it, documents do not, and both stay in one space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nncf", reason="api.query_precision = 'int8' needs nncf")

from models.optimized import OpenVINOBackend, export_openvino  # noqa: E402
from models.quantized import (  # noqa: E402
    MIN_CALIBRATION_TEXTS,
    export_int8,
    int8_dir,
    int8_query_ir,
)
from models.registry import BUILTIN, resolve_model_path  # noqa: E402
from tessera.core import beir  # noqa: E402
from tessera.core.errors import EmbeddingError  # noqa: E402
from tests.support.paths import scifact_dir  # noqa: E402

SPEC = BUILTIN["all-minilm-l6-v2"]
QUERIES = ["how do tides form", "what does aspirin inhibit", "maternal inheritance of mitochondria",
           "a"]


def _documents() -> list[str]:
    """Indexed text: SciFact abstracts, as a collection's chunks hold them."""
    corpus = beir.read_corpus(scifact_dir())
    return [f"{rec.get('title', '')} {rec['text']}" for _, (_, rec) in zip(range(40), corpus,
                                                                           strict=False)]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the module: the fp32 export and its int8 copy are made once here."""
    cache = tmp_path_factory.mktemp("model-cache")
    docs = _documents()
    assert len(docs) >= MIN_CALIBRATION_TEXTS
    export_int8(SPEC, resolve_model_path(SPEC), cache, lambda: docs[:MIN_CALIBRATION_TEXTS])
    return cache


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_queries_go_through_int8_and_documents_do_not(cache_dir: Path) -> None:
    path = resolve_model_path(SPEC)
    plain = OpenVINOBackend(SPEC, path, cache_dir, "bf16")
    int8 = OpenVINOBackend(SPEC, path, cache_dir, "bf16",
                           query_ir=int8_query_ir(SPEC, path, cache_dir, lambda: []))  # made
    queries = int8.embed_queries(QUERIES)
    full = plain.embed_queries(QUERIES)
    assert not np.allclose(queries, full, atol=1e-4)  # another network ran
    # ... in the same space (calibrated on only 20 texts here; 300 on SciFact gave a mean of
    # 0.998 and a minimum of 0.995: benchmarks/REPORT.md, Int8 queries).
    cosines = _cosines(queries, full)
    assert cosines.min() >= 0.97 and cosines.mean() >= 0.985
    np.testing.assert_allclose(int8.embed_texts(QUERIES), full, atol=1e-6)  # documents as before
    assert int8._runner is not None and int8._query_runner is not None


def test_the_copy_is_made_once_and_says_what_it_was_made_from(cache_dir: Path) -> None:
    folder = int8_dir(export_openvino(SPEC, resolve_model_path(SPEC), cache_dir))
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["calibration_texts"] == MIN_CALIBRATION_TEXTS and meta["nncf"]
    assert meta["worst_cosine_to_fp32"] >= 0.98
    xml = (folder / "model.xml").stat().st_mtime_ns

    def never() -> list[str]:
        raise AssertionError("calibrated again")

    assert export_int8(SPEC, resolve_model_path(SPEC), cache_dir, never) == folder
    assert (folder / "model.xml").stat().st_mtime_ns == xml
    assert "FakeQuantize" in (folder / "model.xml").read_text() or \
        "u8" in (folder / "model.xml").read_text()


def test_too_little_indexed_text_is_refused_with_the_way_out(tmp_path: Path) -> None:
    path = resolve_model_path(SPEC)
    backend = OpenVINOBackend(SPEC, path, tmp_path, "bf16", query_ir=int8_query_ir(
        SPEC, path, tmp_path, lambda: ["one text", "", "  "]))
    with pytest.raises(EmbeddingError, match=r"gave 1 texts.*api.query_precision = 'same'"):
        backend.embed_queries(["q"])
    assert not int8_dir(export_openvino(SPEC, resolve_model_path(SPEC), tmp_path)).exists()
