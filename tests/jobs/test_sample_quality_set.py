"""The labelled set about the sample corpus that ships in examples/quality: declared in
tessera.toml, well formed, and scored for real by the quality job (the nightly's step)."""

from __future__ import annotations

from pathlib import Path

from tessera.core.beir import read_corpus
from tessera.core.events import read_events
from tessera.core.settings import load_settings
from tests.support.paths import REPO


def test_tessera_toml_declares_the_sample_set() -> None:
    from tessera.jobs.quality import load_dataset

    sets = load_settings(REPO / "tessera.toml").quality.sets
    assert [(s.name, s.path) for s in sets] == [("sample", REPO / "examples" / "quality")]
    data = load_dataset(sets[0].path, "sample")
    corpus = {rec["_id"] for _, rec in read_corpus(sets[0].path)}
    assert len(data.queries) == 14 and len(corpus) == 15
    assert {d for rel in data.qrels.values() for d in rel} <= corpus


def test_scoring_the_sample_set_writes_a_quality_row(tmp_path: Path) -> None:
    from tessera.jobs.quality import run_quality

    config = tmp_path / "tessera.toml"
    config.write_text(f'home = "{tmp_path / "home"}"\n')
    settings = load_settings(config)
    summary = run_quality(settings, str(REPO / "examples" / "quality"), name="sample")
    assert summary["dataset"] == "sample" and summary["queries"] == 14
    assert summary["ndcg@10"] > 0.8  # the queries were written to be answerable
    rows = read_events(settings.events_dir, "quality_runs")
    assert sorted((r["dataset"], r["mode"], r["status"]) for r in rows) == [  # one per mode
        ("sample", m, "passed") for m in ("dense", "hybrid", "sparse")]
