"""Gates that tell a regression from noise: paired comparisons over per-query scores.

Unit checks of tessera.jobs.significance against an independent exact computation, then the
gates end to end on a 40-query SciFact slice with the bundled model: a harmful migration
(4-token windows) refused by the significance rule alone, a harmless one (overlap 48 vs 32)
switched and reported as underpowered, and a nightly run that got significantly worse failing.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera.core.errors import MigrationRefused, QualityGateError
from tessera.core.events import read_events
from tessera.core.settings import QualityConfig, load_settings
from tessera.ingest.run import run_ingest
from tessera.jobs.significance import breaches, compare, power_notes
from tests.support.datasets import make_slice

pytestmark = pytest.mark.usefixtures("prefect_server")


def _runs(before: list[float], after: list[float]
          ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    return ({f"q{i}": {"ndcg@10": v} for i, v in enumerate(before)},
            {f"q{i}": {"ndcg@10": v} for i, v in enumerate(after)})


def test_the_p_value_is_the_exact_paired_permutation_test() -> None:
    """With 10 queries every one of the 2^10 swaps is enumerated: scipy's p-value equals the
    share of sign flips whose mean difference is at least as extreme (counted here by hand)."""
    rng = np.random.default_rng(3)
    before = rng.uniform(0, 1, 10)
    after = np.clip(before - 0.15 + rng.normal(0, 0.1, 10), 0, 1)
    found = compare(*_runs(list(before), list(after)), ("ndcg@10",), 0.05, 0.02)["ndcg@10"]
    diff = after - before
    flips = [abs(np.mean(diff * np.array(signs))) >= abs(diff.mean()) - 1e-12
             for signs in itertools.product((1, -1), repeat=10)]
    assert found.p_value == pytest.approx(sum(flips) / len(flips), abs=1e-6)
    assert found.difference == pytest.approx(diff.mean(), abs=1e-6)
    assert found.low <= found.difference <= found.high < 0  # the interval excludes no change
    assert found.worse and not found.better


def test_identical_runs_differ_by_nothing_and_a_small_set_says_it_cannot_see() -> None:
    scores = [0.2, 0.9, 0.5, 0.0, 1.0, 0.7]
    found = compare(*_runs(scores, scores), ("ndcg@10",), 0.05, 0.02)["ndcg@10"]
    assert (found.difference, found.low, found.high, found.p_value) == (0, 0, 0, 1)
    assert not found.worse and found.underpowered and found.needed > 6
    gates = QualityConfig()
    assert breaches(gates, {"ndcg@10": found}) == []
    [note] = power_notes(gates, {"ndcg@10": found})
    assert "6 queries" in note and f"~{found.needed}" in note
    # Nearly perfect on every query both times (the sample set's shape): no spread to measure
    # is not proof that a drop would show.
    easy = [1.0] * 13 + [0.95]
    found = compare(*_runs(easy, easy), ("ndcg@10",), 0.05, 0.02)["ndcg@10"]
    assert found.underpowered and found.power < 0.5 and found.needed > 14


def test_a_large_noisy_drop_breaks_max_drop_even_when_not_significant() -> None:
    """Three queries, one of them much worse: too few to be significant, but the mean drops
    more than max_drop, which refuses on its own."""
    found = compare(*_runs([0.9, 0.5, 0.4], [0.6, 0.5, 0.4]), ("ndcg@10",), 0.05, 0.02)
    assert not found["ndcg@10"].worse
    [message] = breaches(QualityConfig(), found, ("live", "shadow"))
    assert "more than quality.max_drop = 0.02" in message and "significantly" not in message


# -- end to end on a SciFact slice -------------------------------------------------------------

@pytest.fixture(scope="module")
def gate_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 judged SciFact queries, their documents and 40 others."""
    return make_slice(tmp_path_factory.mktemp("gates") / "set", 40, 40)


@pytest.fixture
def gated(make_config: Callable[..., Path], corpus: Path, gate_set: Path) -> Callable[..., Path]:
    """A config whose source writes to `test`, gated on the 40-query slice."""
    def make(**sections: object) -> Path:
        config = make_config(sources=[{"name": "docs", "path": str(corpus)}],
                             embedding={"runtime": "torch", "device": "cpu"}, **sections)
        config.write_text(config.read_text() + f'\n[[quality.sets]]\npath = "{gate_set}"\n')
        return config
    return make


@pytest.mark.slow
def test_a_harmful_migration_is_refused_by_the_significance_rule_alone(
        gated: Callable[..., Path]) -> None:
    """4-token windows: with max_drop out of the way (1.0), the paired test alone refuses it,
    naming the metric, the interval and the p-value; the comparison is in the events."""
    from tessera.jobs.migration.job import run_migrate

    settings = load_settings(gated(quality={"max_drop": 1.0}))
    run_ingest(settings)
    with pytest.raises(MigrationRefused) as refused:
        run_migrate(settings, "test", overrides=["chunking.max_tokens=4", "chunking.overlap=0"])
    result: dict[str, Any] = dict(refused.value.result)
    assert "ndcg@10 is significantly worse" in result["reason"] and "max_drop" not in result[
        "reason"]
    nd = result["metrics"]["set"]["ndcg@10"]
    assert nd["worse"] and nd["p_value"] < 0.05 and nd["high"] < 0
    assert f"p = {nd['p_value']:.3g}" in result["reason"]
    rows = [r for r in read_events(settings.events_dir, "quality_comparisons")
            if r["run_id"] == result["run_id"]]
    assert {r["metric"] for r in rows} == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
    assert all(r["decision"] == "refused" and r["kind"] == "migration" for r in rows)
    [row] = [r for r in rows if r["metric"] == "ndcg@10"]
    assert row["p_value"] == nd["p_value"] and row["significantly_worse"] and row["gated"]
    losses = [r for r in read_events(settings.events_dir, "quality_query_changes")
              if r["run_id"] == result["run_id"] and r["metric"] == "ndcg@10"]
    assert losses and sum(r["difference"] for r in losses) / 40 == pytest.approx(
        nd["difference"], abs=1e-6)


@pytest.mark.slow
def test_a_harmless_migration_switches_and_says_the_set_is_underpowered(
        gated: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Overlap 48 instead of 32 changes (almost) nothing: it switches, and 40 queries cannot
    detect a 0.02 drop, which the result, the --json output and the artifact say."""
    from tessera.cli.main import main

    config = gated()
    settings = load_settings(config)
    run_ingest(settings)
    code = main(["migrate", "--alias", "test", "--set", "chunking.overlap=48", "--config",
                 str(config), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["decision"] == "switched", out.get("reason")
    nd = out["metrics"]["set"]["ndcg@10"]
    assert not nd["worse"] and nd["underpowered"] and nd["power"] < 0.8
    assert any(n.startswith("set: ndcg@10: 40 queries") for n in out["power_notes"])


@pytest.mark.slow
def test_a_nightly_run_that_got_significantly_worse_fails(gated: Callable[..., Path],
                                                          gate_set: Path) -> None:
    """The same set scored with the bundled model's windows, then with 4-token windows (the
    same model, so the second run is compared with the first): the second fails on the paired
    test, and its comparison with the first is recorded."""
    from tessera.jobs.quality import run_quality

    settings = load_settings(gated(quality={"max_drop": 1.0}))
    first = run_quality(settings, str(gate_set))
    worse = load_settings(gated(quality={"max_drop": 1.0},
                                chunking={"max_tokens": 4, "overlap": 0}))
    with pytest.raises(QualityGateError, match="significantly worse than run") as failed:
        run_quality(worse, str(gate_set))
    assert "max_drop" not in str(failed.value)
    rows = [r for r in read_events(settings.events_dir, "quality_comparisons")
            if r["kind"] == "nightly"]
    assert rows and {r["baseline"] for r in rows} == {first["run_id"]}
    assert any(r["significantly_worse"] and r["decision"] == "failed" for r in rows)
