"""`tessera tune`: search settings chosen on a set's train split, applied only through a gate on
its test split, which the choice never reads."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tessera.core.errors import UsageError
from tessera.core.events import read_events
from tessera.core.query import SearchConfig
from tessera.core.settings import Settings, load_settings
from tessera.core.steps import PlainSteps
from tessera.core.tuned import search_settings, tuned_path, write_tuned
from tessera.jobs.tune import candidates
from tests.support.datasets import make_slice

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def tune_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 judged test queries, 80 train queries, their documents and 40 others."""
    return make_slice(tmp_path_factory.mktemp("tune") / "set", 40, 40, train=80)


@pytest.fixture
def tuning(make_config: Callable[..., Path]) -> Callable[..., Settings]:
    def make(**search: Any) -> Settings:
        return load_settings(make_config(embedding={"runtime": "torch", "device": "cpu"},
                                         search=search or {"mode": "hybrid"}))
    return make


class _Watched(PlainSteps):
    """Plain steps that note when the choice on train was made."""

    def __init__(self) -> None:
        super().__init__()
        self.chosen_at: float | None = None

    def run(self, name: str, fn: Callable[..., Any], *args: Any, io: bool = False,
            **kwargs: Any) -> Any:
        out = super().run(name, fn, *args, io=io, **kwargs)
        if name == "choose-on-train":
            self.chosen_at = time.monotonic()
        return out


def test_the_candidates_start_with_the_current_settings_and_differ() -> None:
    current = SearchConfig(fusion="rrf", rrf_k=60, doc_chunks=1)
    hybrid = candidates(current, "hybrid")
    assert hybrid[0] == current and len(hybrid) == 15  # 5 fusions x 3 document scores
    assert len({json.dumps(c.model_dump(), sort_keys=True) for c in hybrid}) == 15
    assert [c.doc_chunks for c in candidates(current, "dense")] == [1, 2, 3]  # no fusion


def test_tuned_settings_override_the_config_for_their_collection_only(tuning: Any) -> None:
    settings = tuning()
    write_tuned(settings, "c1", {"search": {"fusion": "dbsf", "doc_chunks": 2, "mode": "dense"}})
    tuned = search_settings(settings, "c1")
    assert (tuned.fusion, tuned.doc_chunks) == ("dbsf", 2)
    assert tuned.mode == settings.search.mode  # only tunable keys are taken
    assert search_settings(settings, "c2") == settings.search
    tuned_path(settings, "c1").unlink()
    assert search_settings(settings, "c1") == settings.search  # deleting it goes back


def test_a_set_that_cannot_be_tuned_is_refused_before_any_work(tuning: Any,
                                                                tmp_path: Path) -> None:
    """No train split, an empty one, or no test split to check the choice: refused before
    anything is indexed."""
    from tessera.jobs.tune import run_tune

    settings = tuning()
    only_test = make_slice(tmp_path / "only-test", 3, 3)
    with pytest.raises(UsageError, match="no qrels/train.tsv"):
        run_tune(settings, str(only_test))
    (only_test / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(UsageError, match="judges no query"):
        run_tune(settings, str(only_test))
    (only_test / "qrels" / "test.tsv").unlink()
    with pytest.raises(UsageError, match="no qrels/test.tsv"):
        run_tune(settings, str(only_test))
    assert not (settings.home / "qdrant").exists() or not any((settings.home / "qdrant").iterdir())


def test_a_tuning_record_edited_badly_is_named_with_the_way_back(tuning: Any) -> None:
    """Every search of the collection reads it: a broken one says which file and what to do,
    instead of a JSON traceback on each search."""
    settings = tuning()
    path = tuned_path(settings, "c1")
    path.parent.mkdir(parents=True)
    for text in ("{not json", '{"search": {"rrf_k": 0}}', '["a list"]'):
        path.write_text(text)
        with pytest.raises(UsageError, match=f"{path.name} is not a tuning record.*delete it"
                           ) as refused:
            search_settings(settings, "c1")
        assert "\n" not in str(refused.value)  # one line of advice


@pytest.mark.slow
def test_tune_chooses_on_train_without_reading_test_then_gates_on_test(
        tuning: Any, tune_set: Path) -> None:
    """The current settings are poor on purpose (RRF k = 100, documents scored by the sum of
    their 3 best chunks: flat RRF scores summed favour documents with many chunks). Every open of qrels/test.tsv comes after the choice; the chosen
    settings are applied (written, used by the next `tessera quality`), with the comparison on
    test (difference, interval, p) in the summary and the events."""
    from tessera.jobs.quality import run_quality
    from tessera.jobs.tune import run_tune

    settings = tuning(mode="hybrid", fusion="rrf", rrf_k=100, doc_chunks=3)
    opened: list[float] = []

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and str(args[0]).endswith("qrels/test.tsv"):
            opened.append(time.monotonic())

    sys.addaudithook(audit)  # stays for the process; it only appends times, cheaply
    steps = _Watched()
    result = run_tune(settings, str(tune_set), steps)
    assert steps.chosen_at is not None and opened and min(opened) > steps.chosen_at
    assert result["train_queries"] == 80 and result["test_queries"] == 40
    assert len(result["trials"]) == 15 and result["trials"][0]["search"] == result["current"]
    assert len(result["depth_trials"]) == 16 + 4  # each side's prefetch, then ef
    assert {t["search"]["hnsw_ef"] for t in result["depth_trials"][16:]} == {64, 128, 256, 512}
    # The ef round starts from the prefetch pair the first round chose.
    assert {(t["search"]["dense_prefetch"], t["search"]["sparse_prefetch"])
            for t in result["depth_trials"][16:]} == {
        (result["chosen"]["dense_prefetch"], result["chosen"]["sparse_prefetch"])}
    k10 = result["comparison_k10"]
    assert set(k10) == {"ndcg@10", "recall@10", "mrr@10"} and 0 <= k10["ndcg@10"]["p_value"] <= 1
    best = max(t["ndcg@10"] for t in result["trials"])
    assert best > result["trials"][0]["ndcg@10"]  # the poor start is beaten on train
    nd = result["comparison"]["ndcg@10"]
    assert nd["low"] <= nd["difference"] <= nd["high"] and 0 <= nd["p_value"] <= 1
    assert result["decision"] == "applied", result["reason"]
    tuned = search_settings(settings, result["collection"])
    assert (tuned.doc_chunks, tuned.dense_prefetch, tuned.sparse_prefetch, tuned.hnsw_ef) == (
        result["chosen"]["doc_chunks"], result["chosen"]["dense_prefetch"],
        result["chosen"]["sparse_prefetch"], result["chosen"]["hnsw_ef"])
    scored = run_quality(settings, str(tune_set))
    assert scored["collection"] == result["collection"] and scored["search"] == result["chosen"]
    assert scored["modes"]["hybrid"]["ndcg@10"] == pytest.approx(nd["candidate"], abs=1e-4)
    [row] = read_events(settings.events_dir, "tuning_runs")
    assert (row["decision"], row["run_id"]) == ("applied", result["run_id"])
    assert row["test_ndcg_at_10_chosen"] == nd["candidate"]
    kinds = {r["kind"] for r in read_events(settings.events_dir, "quality_comparisons")
             if r["run_id"] == result["run_id"]}
    assert kinds == {"tune"}


@pytest.mark.slow
def test_the_tune_flow_runs_on_a_prefect_server(make_config: Callable[..., Path],
                                               tmp_path: Path) -> None:
    """The same job as a Prefect flow (`tune-<set>-<minute>`), tagged with its run id."""
    from prefect.client.orchestration import get_client

    from flows.tune import tune_flow

    small = make_slice(tmp_path / "small", 5, 5, train=10)
    config = make_config(embedding={"runtime": "torch", "device": "cpu"})
    summary = tune_flow(dataset=str(small), config=str(config))
    assert summary["decision"] in ("applied", "kept") and summary["train_queries"] == 10

    tag = f"run_id:{summary['run_id']}"

    async def runs() -> list[Any]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

        async with get_client() as client:  # by tag: the session's server holds many runs
            return list(await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))))

    import anyio

    [run] = anyio.run(runs)
    assert run.name.startswith("tune-small-") and run.state is not None and run.state.is_completed()
