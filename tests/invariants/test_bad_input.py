"""Bad input the ingest must survive: each bad record is quarantined with a reason a user can act
on, and the good records of the same batch are indexed.

One real ingest (Prefect flow, Qdrant Edge, the bundled model) runs over a directory holding
every kind of bad input beside good files, once per module; each test reads its case from it.
The NaN case goes through the embedding backend protocol: a wrapper around the real model that
returns NaN for one document, as a faulty GPU or an fp16 overflow would.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera.core.settings import Settings, SourceConfig, load_settings
from tessera.core.types import Quarantined
from tessera.sources import make_source

pytestmark = pytest.mark.usefixtures("prefect_server")

NAN_TRIGGER = "faulty-model-returns-nan"
GOOD_TEXT = "Tides rise and fall twice a day because the moon pulls on the oceans."


class FaultyBackend:
    """The real backend, except that chunks holding NAN_TRIGGER come back with a NaN in them."""

    def __init__(self, real: Any, faulty: bool) -> None:
        self.real, self.faulty = real, faulty
        self.spec, self.stats = real.spec, real.stats

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = np.array(self.real.embed_texts(texts), copy=True)
        for i, text in enumerate(texts):
            if self.faulty and NAN_TRIGGER in text:
                out[i, 7] = np.nan
        return out

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.real.embed_queries(texts)  # type: ignore[no-any-return]

    def embed_images(self, images: list[bytes]) -> np.ndarray:
        return self.real.embed_images(images)  # type: ignore[no-any-return]

    def close(self) -> None:
        """The shared session model stays loaded."""


def _write_corpus(src: Path, outside: Path) -> None:
    import pandas as pd

    src.mkdir()
    (src / "good.txt").write_text(GOOD_TEXT)
    (src / "volcano.md").write_text("# Volcanoes\n\nMagma rises through the crust and erupts.\n")
    (src / "empty.txt").write_bytes(b"")
    (src / "blank.html").write_text("<html><script>var x = 1;</script></html>")
    (src / "latin1.txt").write_bytes("Un caf\u00e9 cr\u00e8me, s'il vous pla\u00eet.".encode("latin-1"))
    lines = [json.dumps({"id": f"r{i}", "text": f"Recipe {i}: bake the bread for {20 + i} minutes."})
             for i in range(3)]
    lines.insert(2, '{"id": "r-bad", "text": "an unterminated string}')
    (src / "recipes.jsonl").write_text("\n".join(lines) + "\n")
    (src / "dupes.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "same", "text": "The first record that claims the id."},
        {"id": "same", "text": "The second record that claims the id."},
        {"id": "other", "text": "A record with an id of its own."},
    ]) + "\n")
    (src / "cities.csv").write_text("id,body\n1,Paris is on the Seine.\n")
    buf = io.BytesIO()
    pd.DataFrame({"id": ["1"], "content": ["Lisbon is on the Tagus."]}).to_parquet(buf)
    (src / "cities.parquet").write_bytes(buf.getvalue())
    (src / "huge.txt").write_bytes(b"lorem ipsum " * (50 * 1024 * 1024 // 12))
    (src / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    (src / f"{NAN_TRIGGER}.txt").write_text(f"This document makes the model fail: {NAN_TRIGGER}.")
    outside.mkdir()
    (outside / "secret.txt").write_text("A file outside the source root.")
    os.symlink(outside / "secret.txt", src / "escape.txt")


def _config(root: Path, src: Path) -> Path:
    path = root / "tessera.toml"
    path.write_text(f'home = "{root / "home"}"\ncollection = "bad"\n\n'
                    f'[[sources]]\nname = "bad"\npath = "{src}"\n')
    return path


def _ingest(config: Path, backend: FaultyBackend) -> tuple[dict[str, Any], Any]:
    from flows import ingest
    from tessera.ingest import context as ingest_job

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ingest_job, "make_backend", lambda *a, **k: backend)
        state = ingest.ingest_flow(config=str(config), return_state=True)
    return state.result(), state.state_details.flow_run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, minilm: Any) -> dict[str, Any]:
    """Two ingests: the first over all the bad input with a faulty model; the second after the
    empty file was given text and the model was fixed."""
    from tessera.core.events import read_events
    from tessera.service.status import quarantine_rows

    root = tmp_path_factory.mktemp("bad-input")
    src = root / "src"
    _write_corpus(src, root / "outside")
    config = _config(root, src)
    settings = load_settings(config)
    first, flow_run_id = _ingest(config, FaultyBackend(minilm, faulty=True))
    (src / "empty.txt").write_text("Now the file has text, and a later run indexes it.")
    second, _ = _ingest(config, FaultyBackend(minilm, faulty=False))
    q = {r["doc_id"]: r for r in quarantine_rows(settings, first["run_id"])}
    outcomes = [r for r in read_events(settings.events_dir, "documents_indexed")]
    return {"first": first, "second": second, "q": q, "settings": settings, "src": src,
            "config": config, "flow_run_id": flow_run_id, "outcomes": outcomes}


def _outcomes(runs: dict[str, Any], run: str) -> dict[str, str]:
    return {r["doc_id"]: r["outcome"] for r in runs["outcomes"] if r["run_id"] == runs[run]["run_id"]}


def test_every_record_ends_in_exactly_one_place(runs: dict[str, Any]) -> None:
    for name in ("first", "second"):
        s = runs[name]
        assert s["seen"] == s["indexed"] + s["unchanged"] + s["quarantined"], s
    first = runs["first"]
    # good.txt, volcano.md, r0-r2, "other": the good records beside the bad ones.
    assert first["indexed"] == 6 and first["quarantined"] == len(runs["q"]) + 1  # "same" twice
    indexed = {d for d, o in _outcomes(runs, "first").items() if o == "indexed"}
    assert indexed == {"bad/good.txt", "bad/volcano.md", "bad/recipes.jsonl#r0",
                       "bad/recipes.jsonl#r1", "bad/recipes.jsonl#r2", "bad/dupes.jsonl#other"}


def test_empty_file(runs: dict[str, Any]) -> None:
    row = runs["q"]["bad/empty.txt"]
    assert row["expectation"] == "non_empty" and "empty" in row["reason"]
    blank = runs["q"]["bad/blank.html"]  # readable, but no visible text: the documents suite
    assert (blank["suite"], blank["expectation"], blank["observed"]) == ("documents", "text_not_empty", "0")
    assert "no text to embed" in blank["reason"] and "contracts.min_text_chars" in blank["reason"]


def test_file_that_is_not_utf8(runs: dict[str, Any]) -> None:
    row = runs["q"]["bad/latin1.txt"]
    assert row["expectation"] == "valid_encoding"
    assert "not valid utf-8" in row["reason"] and "options.encoding" in row["reason"]


def test_jsonl_with_one_malformed_line(runs: dict[str, Any]) -> None:
    bad = [d for d in runs["q"] if d.startswith("bad/recipes.jsonl")]
    assert len(bad) == 1
    row = runs["q"][bad[0]]
    assert row["expectation"] == "valid_json" and "line 3" in row["reason"]


@pytest.mark.parametrize("name", ["cities.csv", "cities.parquet"])
def test_table_without_the_text_column(runs: dict[str, Any], name: str) -> None:
    row = runs["q"][f"bad/{name}"]
    assert row["expectation"] == "text_column_present"
    assert name in row["reason"] and "'text'" in row["reason"] and "options.text_field" in row["reason"]


def test_50mb_text_file_is_refused_by_the_length_rule(runs: dict[str, Any]) -> None:
    row = runs["q"]["bad/huge.txt"]
    assert (row["suite"], row["expectation"]) == ("documents", "text_within_max_length")
    assert int(row["observed"]) > 50_000_000
    assert "contracts.max_text_chars" in row["reason"] and "split the file" in row["reason"]


def test_file_with_an_image_extension_that_is_not_an_image(runs: dict[str, Any]) -> None:
    # A text source does not read images at all; an image source checks them (test_contracts).
    row = runs["q"]["bad/photo.png"]
    assert row["expectation"] == "allowed_extension" and "narrow the source's glob" in row["reason"]


def test_duplicate_doc_ids_in_one_batch(runs: dict[str, Any]) -> None:
    rows = [r for r in _quarantine(runs) if r["doc_id"] == "bad/dupes.jsonl#same"]
    assert len(rows) == 2 and {r["expectation"] for r in rows} == {"doc_id_unique"}
    assert "appears 2 times" in rows[0]["reason"] and "give each record its own id" in rows[0]["reason"]
    assert _outcomes(runs, "first")["bad/dupes.jsonl#other"] == "indexed"


def test_nan_vector_from_a_faulty_model(runs: dict[str, Any]) -> None:
    row = runs["q"][f"bad/{NAN_TRIGGER}.txt"]
    assert (row["suite"], row["expectation"], row["observed"]) == ("embeddings", "values_finite", "1")
    assert "NaN or infinite" in row["reason"] and "tried again" in row["reason"]


def test_symlink_out_of_the_source_root_is_refused(runs: dict[str, Any]) -> None:
    row = runs["q"]["bad/escape.txt"]
    assert row["expectation"] == "path_inside_source_root" and "outside the source root" in row["reason"]


def test_dotdot_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "secret.txt").write_text("outside")
    source = make_source(SourceConfig(name="s", path=tmp_path / "src"))
    [item] = list(source.load(["../secret.txt"]))
    assert isinstance(item, Quarantined) and item.expectation == "path_inside_source_root"


def test_quarantined_documents_are_tried_again_on_a_later_run(runs: dict[str, Any]) -> None:
    second = _outcomes(runs, "second")
    assert second["bad/empty.txt"] == "indexed"  # its content changed
    assert second[f"bad/{NAN_TRIGGER}.txt"] == "indexed"  # never indexed, so checked again
    assert second["bad/good.txt"] == "unchanged" and second["bad/huge.txt"] == "quarantined"
    assert runs["second"]["indexed"] == 2 and runs["second"]["unchanged"] == 6


def test_quarantine_command_lists_a_run(runs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from tessera.cli.main import main

    assert main(["quarantine", "--run", runs["first"]["run_id"], "--json",
                 "--config", str(runs["config"])]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == runs["first"]["quarantined"]
    row = next(r for r in out["rows"] if r["doc_id"] == "bad/huge.txt")
    assert {"run_id", "doc_id", "uri", "suite", "expectation", "observed", "reason"} <= set(row)


def test_suite_runs_are_events_and_an_artifact(runs: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tessera.core.events import read_events

    results = [r for r in read_events(runs["settings"].events_dir, "contract_results")
               if r["run_id"] == runs["first"]["run_id"]]
    by = {(r["suite"], r["expectation"]): r for r in results}
    assert {s for s, _ in by} == {"documents", "chunks", "embeddings", "payload"}
    # Duplicate ids are caught when the file is read (across the whole file,
    # tests/invariants/test_scale.py), so the batch's own uniqueness check finds none left.
    unique = by[("documents", "doc_id_unique")]
    assert (unique["success"], unique["unexpected_count"], unique["severity"]) == (True, 0, "error")
    assert by[("embeddings", "dimension_matches_collection")]["severity"] == "fatal"
    assert all(r["success"] for r in results if r["suite"] == "payload")

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs["flow_run_id"]])))
    contracts = [str(a.data) for a in artifacts if a.key == "contracts-bad"]
    assert contracts, [a.key for a in artifacts]
    # One artifact per batch (the 50 MB file closes a batch of its own): the first batch's report.
    (md,) = [data for data in contracts if "`bad`, batch 0\n" in data]
    assert "### documents: 2 of 9 expectations failed" in md
    assert "| doc_id_unique | error | **failed** |" not in md


def _quarantine(runs: dict[str, Any]) -> list[dict[str, Any]]:
    from tessera.service.status import quarantine_rows

    settings: Settings = runs["settings"]
    return quarantine_rows(settings, runs["first"]["run_id"])


def test_truncated_png_and_fake_image_in_an_image_source(tmp_path: Path) -> None:
    from PIL import Image

    from flows.ingest import ingest_flow
    from tessera.service.status import quarantine_rows
    from tests.support.tiny_clip import DIMENSION, build_tiny_clip

    clip = build_tiny_clip(tmp_path / "clip")
    pics = tmp_path / "pics"
    pics.mkdir()
    for seed in range(2):
        pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(pics / f"good{seed}.png")
    data = (pics / "good0.png").read_bytes()
    (pics / "truncated.png").write_bytes(data[: len(data) * 2 // 3])
    (pics / "fake.png").write_text("I am a text file with an image extension.")
    config = tmp_path / "tessera.toml"
    config.write_text(
        f'home = "{tmp_path / "home"}"\ncollection = "pics"\nmodel = "tiny-clip"\n\n'
        f'[models.tiny-clip]\nid = "tests/tiny-clip"\nkind = "clip"\npath = "{clip}"\n'
        f'dimension = {DIMENSION}\nmodalities = ["text", "image"]\nmax_length = 77\n\n'
        f'[[sources]]\nname = "pics"\nkind = "images"\nmodality = "image"\npath = "{pics}"\n')

    summary = ingest_flow(config=str(config))

    assert (summary["seen"], summary["indexed"], summary["quarantined"]) == (4, 2, 2)
    rows = {r["doc_id"]: r for r in quarantine_rows(load_settings(config), summary["run_id"])}
    assert "damaged or truncated" in rows["pics/truncated.png"]["reason"]
    assert "not a readable image" in rows["pics/fake.png"]["reason"]
