"""The ingest flow on real components (Qdrant Edge, the bundled model, Prefect): invariants 1-5."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flows.ingest import ingest_flow
from tessera.core.errors import ModelMismatchError
from tessera.core.settings import load_settings
from tessera.core.types import Match
from tessera.store import open_store

pytestmark = pytest.mark.usefixtures("prefect_server")


def _points(config: Path, extra: list[str] | None = None) -> list[dict[str, Any]]:
    settings = load_settings(config)
    store = open_store(settings)
    try:
        return [p for _, p in store.scan(settings.collection, Match(), [
            "doc_id", "chunk_index", "chunk_count", "content_hash", "expires_at", "source",
            *(extra or [])])]
    finally:
        store.close()


def _assert_one_point_per_chunk(points: list[dict[str, Any]]) -> None:
    keys = Counter((p["doc_id"], p["chunk_index"]) for p in points)
    assert max(keys.values()) == 1
    by_doc: dict[str, set[int]] = {}
    for p in points:
        by_doc.setdefault(p["doc_id"], set()).add(p["chunk_index"])
        assert p["chunk_index"] < p["chunk_count"]
    for doc_id, indexes in by_doc.items():
        counts = {p["chunk_count"] for p in points if p["doc_id"] == doc_id}
        assert len(counts) == 1 and indexes == set(range(counts.pop())), doc_id


@pytest.fixture
def config(make_config: Callable[..., Path], corpus: Path) -> Path:
    return make_config(sources=[{"name": "docs", "path": str(corpus), "ttl": "7d"}])


def test_second_ingest_embeds_nothing_and_only_refreshes_expiry(config: Path) -> None:
    first = ingest_flow(config=str(config))
    assert first["seen"] == 9 and first["indexed"] == 9 and first["quarantined"] == 0
    assert first["seen"] == first["indexed"] + first["unchanged"] + first["quarantined"]
    assert first["chunks_embedded"] == first["points_upserted"] == 9
    before = {(p["doc_id"], p["chunk_index"]): p for p in _points(config)}

    second = ingest_flow(config=str(config))
    assert (second["indexed"], second["unchanged"]) == (0, 9)
    assert second["chunks_embedded"] == 0 and second["points_upserted"] == 0
    after = {(p["doc_id"], p["chunk_index"]): p for p in _points(config)}
    assert after.keys() == before.keys()
    assert all(after[k]["expires_at"] >= before[k]["expires_at"] for k in after)
    _assert_one_point_per_chunk(list(after.values()))


def test_edit_and_delete_reembeds_only_the_edited_file(config: Path, corpus: Path) -> None:
    long_text = " ".join(f"Tides sentence {i} about the moon and the sea." for i in range(120))
    (corpus / "tides.txt").write_text(long_text)
    ingest_flow(config=str(config))
    tides_chunks = {p["chunk_index"] for p in _points(config) if p["doc_id"] == "docs/tides.txt"}
    assert len(tides_chunks) > 1

    (corpus / "tides.txt").write_text("Tides now fit in one short chunk.")
    (corpus / "cities.csv").unlink()
    summary = ingest_flow(config=str(config))
    assert summary["indexed"] == 1 and summary["chunks_embedded"] == 1
    assert summary["deleted"] == 2  # the two records of cities.csv
    points = _points(config)
    docs = {p["doc_id"] for p in points}
    assert not any(d.startswith("docs/cities.csv") for d in docs)
    assert [p["chunk_index"] for p in points if p["doc_id"] == "docs/tides.txt"] == [0]
    _assert_one_point_per_chunk(points)


def _plain_collection(config: Path) -> None:
    """A plain collection named like the config's, as Tessera made them before aliases."""
    from models import get_spec
    from tessera.core.types import CollectionInfo

    settings = load_settings(config)
    store = open_store(settings)
    try:
        store.create_collection(CollectionInfo.for_model(settings.collection, get_spec(settings)))
    finally:
        store.close()


def _wide_model(make_config: Callable[..., Path], corpus: Path, tmp_path: Path) -> Path:
    # Same weights declared as a 512-dim model.
    other = make_config(
        sources=[{"name": "docs", "path": str(corpus)}], name="other.toml", model="wide")
    other.write_text(other.read_text() + (
        '\n[models.wide]\nid = "acme/wide-model"\ndimension = 512\n'
        f'path = "{tmp_path / "nowhere"}"\n'))
    return other


def test_a_collection_refuses_a_model_of_another_dimension(
    config: Path, make_config: Callable[..., Path], corpus: Path, tmp_path: Path
) -> None:
    _plain_collection(config)
    ingest_flow(config=str(config))
    # The plain collection must refuse the other model before any write.
    with pytest.raises(ModelMismatchError, match="384-dim") as err:
        ingest_flow(config=str(_wide_model(make_config, corpus, tmp_path)))
    assert "acme/wide-model" in str(err.value) and "512-dim" in str(err.value)
    assert len(_points(config)) == 9


def test_a_model_change_in_config_keeps_writing_the_live_model_until_migrated(
    config: Path, make_config: Callable[..., Path], corpus: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture
) -> None:
    """Behind an alias, ingest writes with the model the live collection records (models never
    mix, the scheduled ingest keeps working) and says how to move to the configured one."""
    ingest_flow(config=str(config))
    (corpus / "new.txt").write_text("A new document about glaciers carving valleys.")
    again = ingest_flow(config=str(_wide_model(make_config, corpus, tmp_path)))
    assert (again["indexed"], again["unchanged"]) == (1, 9)
    assert "tessera migrate --alias test" in caplog.text
    points = _points(config, extra=["model_id"])
    assert {p["model_id"] for p in points} == {"sentence-transformers/all-MiniLM-L6-v2"}
    _assert_one_point_per_chunk(points)


@pytest.mark.parametrize(("query", "expected"), [
    ("how do plants make oxygen from sunlight", "docs/photosynthesis.md"),
    ("why does magma come out of a mountain", "docs/volcanoes.html"),
    ("cold tomato soup", "docs/recipes.jsonl#gazpacho"),
    ("capital city of Iceland heated by geothermal energy", "docs/cities.csv#reykjavik"),
    ("the moon pulls the sea up and down", "docs/tides.txt"),
])
def test_search_finds_the_hand_checked_document_first(
    config: Path, query: str, expected: str, minilm: Any
) -> None:
    from tessera.service.search import search

    settings = load_settings(config)
    if not settings.events_dir.exists():
        ingest_flow(config=str(config))
    hits = search(settings, query=query, k=3, backend=minilm)
    assert hits[0]["doc_id"] == expected
    assert hits[0]["score"] > hits[1]["score"]


def test_events_record_every_document_once(config: Path) -> None:
    import duckdb

    summary = ingest_flow(config=str(config))
    settings = load_settings(config)
    con = duckdb.connect()
    outcomes = con.execute(
        "select outcome, count(*) from read_parquet(?) where run_id = ? group by 1",
        [str(settings.events_dir / "documents_indexed" / "*.parquet"), summary["run_id"]],
    ).fetchall()
    assert dict(outcomes) == {"indexed": 9}
    (row,) = con.execute("select seen, indexed, status, chunks_embedded, embed_seconds from "
                         "read_parquet(?)", [str(settings.events_dir / "ingest_runs" / "*.parquet")]
                         ).fetchall()
    assert row[:4] == (9, 9, "completed", 9) and row[4] > 0


def test_cli_json_prints_exactly_one_object(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tessera.cli.main import main

    assert main(["ingest", "--config", str(config), "--json"]) == 0
    assert main(["search", "cold tomato soup", "-k", "2", "--config", str(config), "--json"]) == 0
    assert main(["status", "--config", str(config), "--json"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 3
    ingest, search, status = (json.loads(ln) for ln in lines)
    assert set(ingest) == {"run_id", "seen", "indexed", "unchanged", "quarantined", "deleted",
                           "chunks_embedded", "points_upserted", "sparse_written", "seconds",
                           "diff_state_rebuilt"}
    assert ingest["sparse_written"] == ingest["points_upserted"] == 9
    assert search["results"][0]["doc_id"] == "docs/recipes.jsonl#gazpacho"
    assert search["mode"] == "hybrid" and search["grouped"] is True
    assert set(search["results"][0]) >= {"doc_id", "chunk_index", "score", "source", "title", "text"}
    assert status["collections"][0]["points"] == 9 and status["collections"][0]["dimension"] == 384
    assert status["last_runs"][0]["run_id"] == ingest["run_id"]


def test_cli_reports_config_errors_without_a_traceback(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tessera.cli.main import main

    bad = tmp_path / "bad.toml"
    bad.write_text('[embedding]\nbackend = "gpu"\n')
    assert main(["status", "--config", str(bad), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["error"] == "ConfigError" and "embedding.backend" in out["message"]


def test_changing_the_chunking_rechunks_a_plain_collection(config: Path) -> None:
    _plain_collection(config)
    ingest_flow(config=str(config))
    config.write_text(config.read_text() + "\n[chunking]\noverlap = 16\n")
    again = ingest_flow(config=str(config))
    assert (again["indexed"], again["unchanged"]) == (9, 0)
    assert {p["chunking"] for p in _points(config, extra=["chunking"])} == {"tokens=254;overlap=16"}
    assert ingest_flow(config=str(config))["unchanged"] == 9


def test_behind_an_alias_a_chunking_change_waits_for_a_migration(config: Path) -> None:
    """The live collection keeps the chunking it records; `tessera migrate` builds the new one."""
    ingest_flow(config=str(config))
    config.write_text(config.read_text() + "\n[chunking]\noverlap = 16\n")
    again = ingest_flow(config=str(config))
    assert (again["indexed"], again["unchanged"]) == (0, 9)
    assert {p["chunking"] for p in _points(config, extra=["chunking"])} == {"tokens=254;overlap=32"}
