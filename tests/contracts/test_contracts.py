"""The data-contract suites: each expectation catches what it names, maps failures back to the
documents that broke it, records every result, and stops the run on a fatal failure."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data_contracts import SUITE_NAMES, ContractRunner, engine
from models.registry import BUILTIN, ModelSpec
from tessera.core.errors import ConfigError, ContractViolation
from tessera.core.events import EventLog
from tessera.core.settings import Settings, load_settings
from tessera.core.types import Chunk, Document
from tessera.ingest.points import build_points
from tests.support.images import png_bytes
from tests.support.paths import REPO
from tests.support.tiny_clip import tiny_clip_spec

pytestmark = pytest.mark.usefixtures("prefect_server")

MINILM = BUILTIN["all-minilm-l6-v2"]


def _settings(make_config: Callable[..., Path], **contracts: Any) -> Settings:
    path = make_config(sources=[{"name": "docs", "path": "."}])
    return load_settings(path, contracts=contracts) if contracts else load_settings(path)


class _ForModel:
    """The runner's checks with one model's spec filled in (the ingest passes each source's)."""

    def __init__(self, runner: ContractRunner, spec: ModelSpec) -> None:
        self.runner, self.spec = runner, spec

    def check_documents(self, docs: list[Document]) -> Any:
        return self.runner.check_documents(docs, self.spec)

    def check_chunks(self, docs: list[Document], chunks: Any) -> Any:
        return self.runner.check_chunks(docs, chunks, self.spec)

    def check_embeddings(self, docs: list[Document], vectors: Any, chunks: Any = None) -> Any:
        return self.runner.check_embeddings(docs, vectors, self.spec, chunks)

    def check_payloads(self, docs: list[Document], points: Any) -> Any:
        return self.runner.check_payloads(docs, points, self.spec)


def _runner(settings: Settings, spec: ModelSpec = MINILM) -> tuple[_ForModel, EventLog]:
    events = EventLog(settings.events_dir, "run-1")
    return _ForModel(ContractRunner(settings, events), spec), events


def _doc(doc_id: str, text: str = "A perfectly good document.", **kw: Any) -> Document:
    kw.setdefault("source", "docs")
    kw.setdefault("uri", f"/data/{doc_id}.txt")
    kw.setdefault("modality", "text")
    return Document(doc_id=doc_id, text=text, **kw)


def _reasons(bad: list[Any]) -> dict[str, tuple[str, str]]:
    return {q.doc_id: (q.expectation, q.reason) for q in bad}


# --- the suite files ------------------------------------------------------------------------

def test_suites_are_ge_suite_files_with_a_severity_and_reason_per_expectation() -> None:
    import great_expectations as gx

    for name in SUITE_NAMES:
        doc = json.loads((REPO / "data_contracts" / "suites" / f"{name}.json").read_text())
        assert doc["name"] == name and doc["notes"]
        # The files are GE's own suite format: GE builds every expectation from them as they are.
        assert len(gx.ExpectationSuite(**doc).expectations) == len(doc["expectations"])
        spec = engine.load_spec(name)
        assert all(e.severity in ("error", "fatal") and e.reason for e in spec.expectations)
        assert engine.gx_suite(name) is engine.gx_suite(name)  # built once per process


def test_importing_the_contracts_does_not_import_great_expectations() -> None:
    code = ("import sys, data_contracts, data_contracts.runner; "
            "print('great_expectations' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_severity_overrides_come_from_config(make_config: Callable[..., Path]) -> None:
    strict = _settings(make_config, severity={"documents": {"doc_id_unique": "fatal"}})
    runner, events = _runner(strict)
    with pytest.raises(ContractViolation, match=r"documents/doc_id_unique failed \(2 of 3 rows\).*'a'"):
        runner.check_documents([_doc("a"), _doc("a"), _doc("b")])
    fatal = [r for r in events.rows("contract_results") if r["expectation"] == "doc_id_unique"]
    assert fatal[0]["severity"] == "fatal" and fatal[0]["success"] is False
    with pytest.raises(ConfigError, match="no such expectation.*doc_id_unique"):
        _runner(_settings(make_config, severity={"documents": {"doc_id_uniq": "fatal"}}))


# --- documents --------------------------------------------------------------------------------

def test_documents_suite(make_config: Callable[..., Path]) -> None:
    settings = _settings(make_config, max_text_chars=200)
    runner, events = _runner(settings)
    now = time.time()
    docs = [
        _doc("good"),
        _doc("dup"), _doc("dup", "another text"),
        _doc("empty", "  \n\t "),
        _doc("long", "word " * 100),
        _doc("stranger", source="nobody"),
        _doc("exe", uri="/data/tool.exe"),
        _doc("old", metadata={"modified_at": 0}),
        _doc("future", metadata={"modified_at": now + 10 * 86400}),
        _doc("garbled-date", metadata={"modified_at": "last tuesday"}),
        _doc("dated", metadata={"modified_at": "2024-05-01T10:00:00"}),
        _doc("picture", "a caption", modality="image", uri="/data/p.png", data=png_bytes()),
    ]
    kept, bad = runner.check_documents(docs)

    assert [d.doc_id for d in kept] == ["good", "dated"]
    got = _reasons(bad)
    assert {k: v[0] for k, v in got.items()} == {
        "dup": "doc_id_unique", "empty": "text_not_empty", "long": "text_within_max_length",
        "stranger": "source_declared", "exe": "extension_allowed", "old": "timestamp_sane",
        "future": "timestamp_sane", "garbled-date": "timestamp_sane", "picture": "modality_supported",
    }
    assert len(bad) == 10  # both copies of "dup"
    assert "appears 2 times" in got["dup"][1]
    assert got["long"][1].startswith("the text is 499 characters, over the limit of 200")
    assert "'.exe' is not in contracts.allowed_extensions" in got["exe"][1]
    assert "1970-01-01T00:00:00Z" in got["old"][1]
    assert "modality 'image' is not one the model 'all-minilm-l6-v2' embeds (text)" in got["picture"][1]
    results = {r["expectation"]: r for r in events.rows("contract_results")}
    assert len(results) == len(engine.load_spec("documents").expectations)
    assert (results["timestamp_sane"]["unexpected_count"], results["timestamp_sane"]["element_count"]) == (3, 12)
    assert results["doc_id_present"]["success"] is True


def test_timestamp_field_feeds_timestamp_sane(make_config: Callable[..., Path], tmp_path: Path) -> None:
    """A record source with `options.timestamp_field` hands each record's time to the contract."""
    from tessera.core.settings import SourceConfig
    from tessera.sources import make_source

    settings = _settings(make_config)
    (tmp_path / "news.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "iso", "text": "Dated in ISO form.", "updated": "2024-05-01T10:00:00Z"},
        {"id": "epoch", "text": "Dated in epoch seconds.", "updated": 1_700_000_000},
        {"id": "undated", "text": "No timestamp at all."},
        {"id": "future", "text": "Dated next month.", "updated": time.time() + 30 * 86400},
        {"id": "garbled", "text": "Dated in words.", "updated": "the day after tomorrow"},
    ]) + "\n")
    source = make_source(SourceConfig(name="docs", path=tmp_path,
                                      options={"timestamp_field": "updated"}))  # type: ignore[arg-type]
    docs = [d for d in source.load(source.discover()) if isinstance(d, Document)]
    runner, _ = _runner(settings)

    kept, bad = runner.check_documents(docs)

    assert [d.doc_id.rsplit("#", 1)[1] for d in kept] == ["iso", "epoch", "undated"]
    assert {q.doc_id.rsplit("#", 1)[1]: q.expectation for q in bad} == {
        "future": "timestamp_sane", "garbled": "timestamp_sane"}
    unset = make_source(SourceConfig(name="docs", path=tmp_path))  # type: ignore[arg-type]
    assert all("modified_at" not in d.metadata for d in unset.load(unset.discover())
               if isinstance(d, Document))


def test_documents_suite_checks_images_with_the_image_source_check(make_config: Callable[..., Path]) -> None:
    runner, _ = _runner(_settings(make_config), tiny_clip_spec(None))
    good = png_bytes()
    docs = [
        _doc("ok", "caption", modality="image", uri="/p/ok.png", data=good),
        _doc("truncated", "caption", modality="image", uri="/p/t.png", data=good[: len(good) // 2]),
        _doc("not-an-image", "caption", modality="image", uri="/p/n.png", data=b"just some text"),
        _doc("text"),
    ]
    kept, bad = runner.check_documents(docs)
    assert [d.doc_id for d in kept] == ["ok", "text"]
    got = _reasons(bad)
    assert {k: v[0] for k, v in got.items()} == {"truncated": "image_usable",
                                                 "not-an-image": "image_usable"}
    assert "damaged or truncated" in got["truncated"][1]
    assert "not a readable image" in got["not-an-image"][1]


# --- chunks -----------------------------------------------------------------------------------

def _chunks(doc_id: str, indexes: list[int], tokens: int = 10, count: int | None = None) -> list[Chunk]:
    n = len(indexes) if count is None else count
    return [Chunk(doc_id, i, n, f"chunk {i}", tokens) for i in indexes]


def test_chunks_suite(make_config: Callable[..., Path]) -> None:
    runner, _ = _runner(_settings(make_config))
    docs = [_doc(d) for d in ("good", "gap", "none", "overlong", "miscounted")]
    chunks = {"good": _chunks("good", [0, 1, 2]), "gap": _chunks("gap", [0, 2]), "none": [],
              "overlong": _chunks("overlong", [0], tokens=300),
              "miscounted": _chunks("miscounted", [0, 1], count=5)}
    kept, bad = runner.check_chunks(docs, chunks)
    assert [d.doc_id for d in kept] == ["good"]
    got = _reasons(bad)
    assert {k: v[0] for k, v in got.items()} == {
        "gap": "chunk_index_contiguous", "none": "document_has_tokens",
        "overlong": "chunk_within_model_window", "miscounted": "chunk_count_consistent"}
    assert "chunk 0 is 300 tokens, over the model's window of 254" in got["overlong"][1]
    assert "index 2 at position 1" in got["gap"][1]


# --- embeddings ---------------------------------------------------------------------------------

def _unit(n: int, seed: int, dim: int = 384) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_embeddings_suite_quarantines_bad_vectors(make_config: Callable[..., Path]) -> None:
    runner, events = _runner(_settings(make_config))
    docs = [_doc(d, f"text of {d}") for d in ("good", "nan", "inf", "zero", "long")]
    vectors = {d.doc_id: _unit(2, i) for i, d in enumerate(docs)}
    vectors["nan"][1, 5] = np.nan
    vectors["inf"][0, :3] = np.inf
    vectors["zero"][0] = 0.0
    vectors["long"][1] *= 1.5
    kept, bad = runner.check_embeddings(docs, vectors)
    assert [d.doc_id for d in kept] == ["good"]
    got = {q.doc_id: (q.expectation, q.observed) for q in bad}
    assert got == {"nan": ("values_finite", "1"), "inf": ("values_finite", "3"),
                   "zero": ("not_all_zero", "0"), "long": ("unit_norm", "1.5")}
    assert any(r["expectation"] == "duplicate_vector_rate" and r["success"]
               for r in events.rows("contract_results"))


def test_embeddings_of_a_model_that_does_not_normalize(make_config: Callable[..., Path]) -> None:
    spec = ModelSpec(name="raw", id="raw", kind="sentence-transformers", dimension=384, normalize=False)
    runner, _ = _runner(_settings(make_config), spec)
    kept, bad = runner.check_embeddings([_doc("a")], {"a": _unit(1, 0) * 7})
    assert [d.doc_id for d in kept] == ["a"] and not bad


@pytest.mark.parametrize(("case", "message"), [
    ("dimension", r"model returned 383-dim vectors but the collection expects 384"),
    ("count", r"returned 1 vectors for a document of 2 chunks"),
    ("constant", r"75% of this batch's vectors equal a vector of a document with other content"),
])
def test_fatal_embedding_failures_stop_the_batch(make_config: Callable[..., Path], case: str,
                                                 message: str) -> None:
    runner, _ = _runner(_settings(make_config))
    docs = [_doc(f"d{i}", f"text {i}") for i in range(4)]
    vectors = {d.doc_id: _unit(1, i) for i, d in enumerate(docs)}
    chunks = {d.doc_id: _chunks(d.doc_id, [0]) for d in docs}
    if case == "dimension":
        vectors = {k: v[:, :383] for k, v in vectors.items()}
    elif case == "count":
        chunks["d0"] = _chunks("d0", [0, 1])
    else:
        vectors = {k: vectors["d0"] for k in vectors}
    with pytest.raises(ContractViolation, match=message):
        runner.check_embeddings(docs, vectors, chunks)


# --- payload ------------------------------------------------------------------------------------

def test_payload_suite(make_config: Callable[..., Path]) -> None:
    runner, _ = _runner(_settings(make_config))
    now = int(time.time())
    docs = [_doc(d, f"text of {d}") for d in ("good", "no-expiry", "typed", "expired", "hash")]
    points = {d.doc_id: build_points("c", d, _chunks(d.doc_id, [0, 1]), _unit(2, 0), MINILM.id,
                                     now, now + 3600, "tokens=254;overlap=32") for d in docs}
    del points["no-expiry"][1].payload["expires_at"]
    points["typed"][0].payload["chunk_index"] = "0"
    for p in points["expired"]:
        p.payload["expires_at"] = now - 5
    points["hash"][1].payload["content_hash"] = "not-a-hash"
    kept, bad = runner.check_payloads(docs, points)
    assert [d.doc_id for d in kept] == ["good"]
    got = _reasons(bad)
    assert {k: v[0] for k, v in got.items()} == {
        "no-expiry": "expires_at_present", "typed": "chunk_index_is_int",
        "expired": "expires_after_ingested", "hash": "content_hash_is_sha256"}
    assert "the payload's 'chunk_index' is '0', not a whole number" in got["typed"][1]
    assert "give the source a positive ttl" in got["expired"][1]


# --- in the ingest flow: a fatal failure writes nothing -------------------------------------------

class _TruncatingBackend:
    """The real model, returning one dimension too few: a wrong model behind the right name."""

    def __init__(self, real: Any) -> None:
        self.real, self.spec, self.stats = real, real.spec, real.stats

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.real.embed_texts(texts))[:, :-1]

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.embed_texts(texts)

    def embed_images(self, images: list[bytes]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """The shared session model stays loaded."""


def test_wrong_dimension_stops_the_run_before_any_write(
        make_config: Callable[..., Path], corpus: Path, minilm: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import ingest
    from tessera.core.events import read_events
    from tessera.ingest import context as ingest_job
    from tessera.store import open_store

    monkeypatch.setattr(ingest_job, "make_backend", lambda *a, **k: _TruncatingBackend(minilm))
    config = make_config(sources=[{"name": "corpus", "path": str(corpus)}])
    with pytest.raises(ContractViolation, match="383-dim vectors but the collection expects 384"):
        ingest.ingest_flow(config=str(config))

    settings = load_settings(config)
    store = open_store(settings)
    try:
        assert store.count("test") == 0
    finally:
        store.close()
    [run] = read_events(settings.events_dir, "ingest_runs")
    assert run["status"] == "failed" and "dimension_matches_collection" in run["error"]
    fatal = [r for r in read_events(settings.events_dir, "contract_results")
             if r["expectation"] == "dimension_matches_collection"]
    assert [(r["success"], r["severity"]) for r in fatal] == [(False, "fatal")]
