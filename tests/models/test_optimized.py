"""The OpenVINO runtime: same vectors as torch, export made once into the model cache and reused.

Correctness only; speeds live in benchmarks/REPORT.md.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openvino", reason="runtime 'openvino' needs the openvino package")

from flows.ingest import ingest_flow  # noqa: E402
from models import make_backend  # noqa: E402
from models.local import LocalBackend  # noqa: E402
from models.optimized import OpenVINOBackend, export_dir, export_openvino  # noqa: E402
from models.registry import BUILTIN, resolve_model_path  # noqa: E402
from tessera.core.settings import load_settings  # noqa: E402
from tessera.ingest.context import Tick  # noqa: E402
from tessera.store import open_store  # noqa: E402

pytestmark = pytest.mark.usefixtures("prefect_server")

SPEC = BUILTIN["all-minilm-l6-v2"]
TEXTS = [
    "Aspirin irreversibly inhibits cyclooxygenase and so reduces thromboxane synthesis.",
    "short",
    "The mitochondrial genome is inherited maternally in most animals. " * 30,  # > 256 tokens
    "Qdrant Edge keeps the index in-process; a write-ahead log makes acknowledged points durable.",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the module: the export is made once here."""
    cache = tmp_path_factory.mktemp("model-cache")
    export_openvino(SPEC, resolve_model_path(SPEC), cache)
    return cache


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize(("precision", "floor"), [("f32", 0.9999), ("bf16", 0.999)])
def test_vectors_match_torch(cache_dir: Path, minilm: LocalBackend, precision: str,
                             floor: float) -> None:
    backend = OpenVINOBackend(SPEC, resolve_model_path(SPEC), cache_dir, precision,  # type: ignore[arg-type]
                              batch_size=2)
    got = backend.embed_texts(TEXTS)
    want = minilm.embed_texts(TEXTS)
    assert got.shape == (len(TEXTS), SPEC.dimension) and got.dtype == np.float32
    assert _cosines(got, want).min() >= floor
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
    # Queries take the same path; order is kept whatever the lengths.
    assert np.allclose(backend.embed_queries(TEXTS[::-1]), got[::-1], atol=1e-5)
    assert backend.embed_texts([]).shape == (0, SPEC.dimension)


def test_export_is_made_once_and_reused(cache_dir: Path) -> None:
    folder = export_dir(SPEC, cache_dir)
    assert {"model.xml", "model.bin", "meta.json"} <= {p.name for p in folder.iterdir()}
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["model_id"] == SPEC.id and meta["probe_cosine"] >= 0.999
    assert meta["source"]["model.safetensors"]  # what it was made from, by sha256
    before = (folder / "model.bin").stat().st_mtime_ns
    assert export_openvino(SPEC, resolve_model_path(SPEC), cache_dir) == folder
    assert (folder / "model.bin").stat().st_mtime_ns == before


def test_stale_export_is_made_again(cache_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "cache"
    folder = export_openvino(SPEC, resolve_model_path(SPEC), other)
    meta = json.loads((folder / "meta.json").read_text())
    meta["source"]["model.safetensors"] = "0" * 64  # as if the weights had changed
    (folder / "meta.json").write_text(json.dumps(meta))
    export_openvino(SPEC, resolve_model_path(SPEC), other)
    fresh = json.loads((folder / "meta.json").read_text())
    assert fresh["source"]["model.safetensors"] != "0" * 64
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp")]


def test_an_export_the_disk_cannot_hold_is_refused_before_openvino_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64 MiB disk cannot hold the ~90 MB IR: ENOSPC naming the folder, nothing written (a
    native save or compile of a truncated IR once took a process down with SIGSEGV)."""
    import errno

    from models import optimized
    from tests.support.machine import tmpfs

    monkeypatch.setattr(optimized, "_MADE", {})  # no in-process copy of an earlier export
    with tmpfs(tmp_path / "disk", 64) as disk:
        with pytest.raises(OSError, match="OpenVINO export needs about") as refused:
            export_openvino(SPEC, resolve_model_path(SPEC), disk / "cache")
        assert refused.value.errno == errno.ENOSPC
        assert refused.value.filename == str(export_dir(SPEC, disk / "cache").parent)
        assert not export_dir(SPEC, disk / "cache").exists()


def test_embedding_from_the_chunkers_ids_equals_embedding_the_text(cache_dir: Path) -> None:
    from tessera.core.types import Document
    from tessera.ingest.chunking import Chunker

    backend = OpenVINOBackend(SPEC, resolve_model_path(SPEC), cache_dir, "f32", batch_size=2)
    chunker = Chunker(resolve_model_path(SPEC), SPEC.max_length)
    docs = [Document(doc_id=str(i), source="s", uri="u", modality="text", text=t)
            for i, t in enumerate(TEXTS)]
    chunks = [c for cs in chunker.chunk(docs).values() for c in cs]
    assert len(chunks) > len(TEXTS)  # the long text became several windows

    from_ids = backend.embed_token_ids([c.ids for c in chunks])
    from_text = backend.embed_texts([c.text for c in chunks])
    assert from_ids.shape == (len(chunks), SPEC.dimension)
    assert _cosines(from_ids, from_text).min() >= 0.99999
    assert backend.stats.items == 2 * len(chunks)


def test_ingest_hands_ids_only_to_a_backend_with_the_chunkers_tokenizer(
        make_config: Callable[..., Path]) -> None:
    from tessera.core.steps import PlainSteps
    from tessera.core.types import Chunk
    from tessera.ingest.batch import token_ids
    from tessera.ingest.context import IngestRun

    def run(**embedding: str) -> tuple[IngestRun, Any]:
        ingest = IngestRun(load_settings(make_config(embedding=embedding)), PlainSteps(), None,
                           "ingest", None)
        return ingest, ingest.backend(SPEC, 0)

    chunks = [Chunk("d", 0, 1, "a note", 2, (1037, 3602))]
    ov, ov_backend = run(runtime="openvino", device="cpu")
    assert token_ids(ov, ov_backend, SPEC, chunks) == [(1037, 3602)]
    no_ids = [dataclasses.replace(chunks[0], ids=())]  # e.g. a caption
    assert token_ids(ov, ov_backend, SPEC, no_ids) is None
    torch, torch_backend = run(runtime="torch")
    assert token_ids(torch, torch_backend, SPEC, chunks) is None  # s-t tokenizes the texts


def test_a_text_model_on_openvino_embeds_no_images_and_says_why(tmp_path: Path) -> None:
    """Not "set runtime = 'torch'": MiniLM embeds no images on any runtime."""
    from tessera.core.errors import EmbeddingError

    backend = OpenVINOBackend(SPEC, resolve_model_path(SPEC), tmp_path)  # nothing compiled
    with pytest.raises(EmbeddingError, match="embeds text only; images need a CLIP-style model"
                       ) as err:
        backend.embed_images([b"x"])
    assert "torch" not in str(err.value)


def test_runtime_option_picks_the_backend(make_config: Callable[..., Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ov = load_settings(make_config(embedding={"runtime": "openvino", "precision": "bf16",
                                              "device": "cpu"}))
    backend = make_backend(ov)
    assert isinstance(backend, OpenVINOBackend) and backend.precision == "bf16"
    assert isinstance(make_backend(load_settings(make_config(embedding={"runtime": "torch"}))),
                      LocalBackend)
    # CLIP (images) stays on torch whatever the runtime says.
    clip = dataclasses.replace(BUILTIN["clip-vit-base-patch32"], path=resolve_model_path(SPEC))
    assert isinstance(make_backend(ov, clip), LocalBackend)

    import models

    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
    assert isinstance(make_backend(ov), LocalBackend)  # not installed: torch, with a warning


def test_ingest_and_search_on_openvino(make_config: Callable[..., Path], corpus: Path,
                                       cache_dir: Path, minilm: LocalBackend) -> None:
    config = make_config(sources=[{"name": "docs", "path": str(corpus)}],
                         embedding={"runtime": "openvino", "device": "cpu"})
    settings = load_settings(config)
    summary = ingest_flow(config=str(config))
    assert summary["indexed"] == 9 and summary["points_upserted"] == summary["chunks_embedded"]
    store = open_store(settings)
    try:
        query = minilm.embed_queries(["photosynthesis"])[0]  # a torch query finds OpenVINO points
        hits: list[Any] = store.search(settings.collection, query, 3)
    finally:
        store.close()
    assert hits and hits[0].score > 0.3


def test_embedding_a_batch_in_slices_keeps_order_and_vectors(cache_dir: Path) -> None:
    """The token-id path embeds PROGRESS_CHUNKS at a time, longest first: the vectors are those
    of one call over the batch, in input order, and progress is heard after every slice."""
    from tessera.ingest.batch import PROGRESS_CHUNKS, _embed_ids

    backend = OpenVINOBackend(SPEC, resolve_model_path(SPEC), cache_dir, "f32", batch_size=32)
    rng = np.random.default_rng(3)
    ids = [tuple(int(t) for t in rng.integers(1000, 20000, size=int(n)))
           for n in rng.integers(1, 120, size=150)]
    ticks: list[int] = []
    sliced = _embed_ids(backend, ids, ticks.append)
    whole = backend.embed_token_ids(ids)
    assert sliced.shape == whole.shape == (150, SPEC.dimension)
    assert np.allclose(sliced, whole, atol=1e-5)
    assert ticks == [PROGRESS_CHUNKS, 2 * PROGRESS_CHUNKS, 150]
    assert _embed_ids(backend, [], ticks.append).shape == (0, SPEC.dimension)


def test_ingest_progress_moves_at_least_every_64_documents(
        make_config: Callable[..., Path], cache_dir: Path, tmp_path: Path) -> None:
    """One 1,024-record batch of 300 documents: the progress callback hears the run inside the
    embed step, never more than 64 documents apart, with chunks counted exactly."""
    from tessera.ingest.run import run_ingest

    src = tmp_path / "notes"
    src.mkdir()
    for i in range(300):  # every seventh note is long enough for several chunks
        body = f"Note {i} about the harbor lantern and the orchard at hour {i % 24}. "
        (src / f"n{i:03d}.txt").write_text(body * (60 if i % 7 == 0 else 1))
    settings = load_settings(make_config(sources=[{"name": "notes", "path": str(src)}],
                                         embedding={"runtime": "openvino", "device": "cpu"}))
    heard: list[Tick] = []
    summary = run_ingest(settings, progress=heard.append)
    done = [t.documents for t in heard]
    chunks = [t.chunks for t in heard]
    files = [t.files_done for t in heard]
    assert summary["indexed"] == 300 and summary["chunks_embedded"] > 300
    assert done == sorted(done) and chunks == sorted(chunks) and files == sorted(files)
    assert max(b - a for a, b in zip([0, *done], done, strict=False)) <= 64
    # The total is every listed file from the first tick on: it never moves.
    assert {t.files_total for t in heard if t.phase != "listing files"} == {300}
    assert (heard[-1].files_done, heard[-1].documents, heard[-1].chunks) == (
        300, 300, summary["chunks_embedded"])
    assert len({c for c in chunks if 0 < c < summary["chunks_embedded"]}) >= 4  # mid-embed
    assert any(0 < f < 300 for f in files)  # files move inside the one batch
    # The bar names each phase, the model's load before the first embedding.
    phases = list(dict.fromkeys(t.phase for t in heard))
    assert phases[0] == "listing files" and "reading" in phases and "writing" in phases
    assert phases.index("loading model") < phases.index("embedding")


def test_the_ingest_bar_shows_documents_chunks_rate_and_eta() -> None:
    import io
    import time

    from rich.console import Console

    from tessera.cli.support import bar_callback, ingest_bar

    out = io.StringIO()
    with ingest_bar(Console(file=out, force_terminal=True, width=140)) as bar:
        job = bar.add_task("starting", total=None, documents=0, chunks=0)
        update = bar_callback(bar, job)
        update(Tick("loading model", 0, 300, 0, 0))
        bar.refresh()
        update(Tick("embedding", 64.0, 300, 64, 90))
        time.sleep(0.2)
        update(Tick("embedding", 128.5, 300, 1280, 200))
        bar.refresh()
    text = out.getvalue()
    assert "loading model" in text  # the phase while nothing moves
    assert "128/300 files" in text and "1,280 docs" in text and "200 chunks" in text
    assert "docs/s" in text and "ETA" in text


def test_padding_batches_to_a_multiple_of_eight_tokens_leaves_the_vectors_as_they_were(
        cache_dir: Path) -> None:
    """Widths are rounded up (fewer shapes for OpenVINO to plan), never past the model's window;
    the padding is masked out, so each vector equals the one from its exact-width input."""
    from models.optimized import padded_width

    assert [padded_width(w, 256) for w in (1, 8, 9, 17, 250, 256)] == [8, 8, 16, 24, 256, 256]
    assert padded_width(13, 13) == 13 and padded_width(300, 256) == 300

    backend = OpenVINOBackend(SPEC, resolve_model_path(SPEC), cache_dir, "f32", batch_size=1)
    runner = backend.runner
    for text in TEXTS[:2]:
        ids = np.asarray([runner.batcher.tokenizer.encode(text).ids], dtype=np.int64)
        assert ids.shape[1] % 8  # these texts' own widths are not multiples of 8
        exact = runner._infer(ids, np.ones_like(ids), np.zeros_like(ids))
        assert _cosines(backend.embed_queries([text]), exact).min() >= 0.99999
