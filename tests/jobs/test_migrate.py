"""Blue/green migrations: build a shadow, gate it on quality against live, check, switch, roll back.

On both stores (Qdrant Edge, and the server store through qdrant-client's local mode), with the
bundled all-MiniLM-L6-v2 and a tiny random model (tests/support/tiny_text.py) that retrieves badly.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tessera.core.errors import ConfigError, MigrationRefused, StoreLockedError, UsageError
from tessera.core.events import read_events
from tessera.core.settings import Settings, load_settings
from tessera.core.steps import PlainSteps
from tessera.core.types import Match
from tessera.ingest.run import run_ingest
from tessera.jobs.migration.job import prune_previous, run_migrate, run_rollback
from tessera.store import open_store
from tessera.store.writers import writer_section
from tests.support.datasets import make_slice
from tests.support.machine import crash_on_third_upsert, kill_when_marked
from tests.support.paths import REPO
from tests.support.tiny_text import build_tiny_text, tiny_text_toml

# qdrant-client's local mode warns that it ignores payload indexes and search params.
pytestmark = [pytest.mark.usefixtures("prefect_server"),
              pytest.mark.filterwarnings("ignore:Payload indexes have no effect"),
              pytest.mark.filterwarnings("ignore:Local mode performs exact")]

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A SciFact slice to gate on and the tiny model's files, made once for the module."""
    root = tmp_path_factory.mktemp("migrate")
    return {"slice": make_slice(root / "slice", 6, 12),
            "tiny": build_tiny_text(root / "tiny-text")}


@pytest.fixture(params=["edge", "qdrant-local"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def setup(make_config: Callable[..., Path], corpus: Path, shared: dict[str, Path],
          tmp_path: Path) -> Callable[..., Path]:
    """make(kind, model=..., store={...}, **sections): a config whose source `docs` writes to `test`,
    gated on the slice, with the tiny model declared."""
    def make(kind: str = "edge", model: str = "all-minilm-l6-v2", name: str = "tessera.toml",
             store: dict[str, Any] | None = None, **sections: Any) -> Path:
        stores = {"edge": {}, "qdrant-local": {"kind": "qdrant", "path": str(tmp_path / "local")}}
        config = make_config(sources=[{"name": "docs", "path": str(corpus)}], name=name,
                             model=model, embedding={"runtime": "torch", "device": "cpu"},
                             store={**stores[kind], **(store or {})}, **sections)
        config.write_text(config.read_text() + tiny_text_toml(shared["tiny"])
                          + f'\n[[quality.sets]]\npath = "{shared["slice"]}"\n')
        return config
    return make


def _alias(settings: Settings, alias: str = "test") -> str | None:
    store = open_store(settings)
    try:
        return store.aliases().get(alias)
    finally:
        store.close()


def _docs(settings: Settings, collection: str) -> dict[str, set[str]]:
    """doc_id -> model ids of its points, in `collection` (an alias or a real name)."""
    store = open_store(settings)
    try:
        out: dict[str, set[str]] = {}
        for _, p in store.scan(collection, Match(), ["doc_id", "model_id"]):
            out.setdefault(p["doc_id"], set()).add(p["model_id"])
        return out
    finally:
        store.close()


def _migrations(settings: Settings) -> list[dict[str, Any]]:
    return sorted(read_events(settings.events_dir, "migrations"), key=lambda r: r["finished_at"])


def test_a_better_model_switches_then_rolls_back_once(setup: Callable[..., Path],
                                                      store_kind: str) -> None:
    """Tiny model live -> MiniLM: scores better, switches; search then embeds with MiniLM.
    Rollback restores the tiny collection; a second rollback is refused."""
    settings = load_settings(setup(store_kind, model="tiny-text"))
    run_ingest(settings)
    tiny = _alias(settings)
    assert tiny is not None and tiny.startswith("test--tiny-text-")

    result = run_migrate(settings, "test", "all-minilm-l6-v2")
    assert result["decision"] == "switched" and result["from"] == tiny
    new = result["to"]
    assert new.startswith("test--all-minilm-l6-v2-") and _alias(settings) == new
    per = result["metrics"]["slice"]["ndcg@10"]
    assert per["shadow"] >= per["live"]
    assert result["check"]["equal"] and result["build"]["indexed"] == 9
    from tessera.service.search import search

    hits = search(settings, "how do plants make oxygen from sunlight", k=1)
    assert hits[0]["doc_id"] == "docs/photosynthesis.md"  # the tiny model would not find it
    assert set().union(*_docs(settings, "test").values()) == {MINILM}
    assert _docs(settings, tiny)  # the previous collection is kept, for a rollback

    back = run_rollback(settings, "test")
    assert (back["decision"], back["from"], back["to"]) == ("rolled_back", new, tiny)
    assert _alias(settings) == tiny
    assert set().union(*_docs(settings, "test").values()) == {"tests/tiny-text"}
    with pytest.raises(MigrationRefused, match="already a rollback") as err:
        run_rollback(settings, "test")
    assert "tessera migrate" in str(err.value) and _alias(settings) == tiny
    assert [r["decision"] for r in _migrations(settings)] == ["switched", "rolled_back", "refused"]
    if store_kind == "edge":
        _history_answers_which_model_served(settings, tiny, new)


def _history_answers_which_model_served(settings: Settings, tiny: str, new: str) -> None:
    """fct_alias_history: which model served the alias at each moment, and what it scored."""
    import duckdb

    from tessera.jobs.marts import build_marts

    assert build_marts(settings)["failures"] == []
    switched, rolled_back = (r["finished_at"] for r in _migrations(settings)[:2])
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        rows = con.execute(
            "select collection, model_id, ndcg_at_10, is_current from fct_alias_history "
            "where alias = 'test' and (valid_from is null or valid_from <= ?) "
            "and (valid_to is null or valid_to > ?)", [switched, switched]).fetchall()
        decisions = con.execute("select decision from fct_migrations order by finished_at"
                                ).fetchall()
    finally:
        con.close()
    first = _migrations(settings)[0]
    assert rows == [(new, MINILM, pytest.approx(first["shadow_ndcg_at_10"]), False)]
    assert [d for (d,) in decisions] == ["switched", "rolled_back", "refused"]
    assert rolled_back > switched and tiny != new


def test_a_worse_model_is_refused_and_nothing_moves(setup: Callable[..., Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """MiniLM live -> the tiny model: refused naming the metric, both values and the gate; the
    alias and the live collection are untouched; the CLI exits 2 with the decision."""
    from tessera.cli.main import main

    config = setup()
    settings = load_settings(config)
    run_ingest(settings)
    live = _alias(settings)
    assert live is not None
    before = _docs(settings, live)

    code = main(["migrate", "--alias", "test", "--model", "tiny-text", "--config", str(config),
                 "--json"])
    assert code == 2
    out = json.loads(capsys.readouterr().out)
    assert out["decision"] == "refused" and out["from"] == live
    assert out["to"].startswith("test--tiny-text-")
    assert "ndcg@10 shadow" in out["reason"] and "quality.max_drop = 0.02" in out["reason"]
    nd = out["metrics"]["slice"]["ndcg@10"]
    assert nd["live"] - nd["shadow"] > 0.02
    assert f"{nd['shadow']:.4f} vs live {nd['live']:.4f}" in out["reason"]
    assert _alias(settings) == live and _docs(settings, live) == before
    event = _migrations(settings)[-1]
    assert (event["decision"], event["from_model"], event["to_model"]) == (
        "refused", MINILM, "tests/tiny-text")
    assert json.loads(event["metrics"]) == out["metrics"]


class _AddDuringGate(PlainSteps):
    """Plain steps that, once the shadow is built, add a document to the source and let a
    normal ingest run (as the schedule would while a migration runs)."""

    def __init__(self, settings: Settings, corpus: Path) -> None:
        super().__init__()
        self.settings, self.corpus, self.done = settings, corpus, False

    def run(self, name: str, fn: Callable[..., Any], *args: Any, io: bool = False,
            **kwargs: Any) -> Any:
        if name == "embed-queries" and not self.done:
            self.done = True
            (self.corpus / "late.txt").write_text("Glaciers carve U-shaped valleys over "
                                                  "thousands of years.")
            assert run_ingest(self.settings)["indexed"] == 1  # into the live collection
            (self.corpus / "later.txt").write_text("Fjords are drowned glacial valleys.")
        return super().run(name, fn, *args, io=io, **kwargs)


def test_documents_added_during_the_build_are_in_the_new_collection(
        setup: Callable[..., Path], corpus: Path) -> None:
    """Catch-up: a document ingested into live mid-migration, and one not ingested at all, are
    both in the new collection after the switch, and the check found the two level."""
    settings = load_settings(setup("edge", model="tiny-text"))
    run_ingest(settings)
    steps = _AddDuringGate(settings, corpus)
    result = run_migrate(settings, "test", "all-minilm-l6-v2", steps=steps)
    assert result["decision"] == "switched" and result["build"]["indexed"] == 9
    report = steps.reports["migration-test"]  # the flow's markdown artifact, as plain steps keep it
    assert "switched" in report and "| slice | ndcg@10 |" in report and "more than 0.02" in report
    assert result["catch_up"]["indexed"] == 2
    docs = _docs(settings, "test")
    assert {"docs/late.txt", "docs/later.txt"} <= set(docs) and len(docs) == 11
    assert _docs(settings, result["from"]).keys() == docs.keys()


def test_a_plain_collection_is_adopted_and_readers_keep_its_name(
        setup: Callable[..., Path], store_kind: str) -> None:
    """A collection from before aliases (plain `test`) is adopted on its first migration; a
    chunking change (--set) then switches; `test` answers searches before and after."""
    from models import get_spec
    from tessera.core.types import CollectionInfo
    from tessera.service.search import search

    settings = load_settings(setup(store_kind))
    store = open_store(settings)
    store.create_collection(CollectionInfo.for_model("test", get_spec(settings)))
    store.close()
    run_ingest(settings)
    assert _alias(settings) is None  # plain: written as before
    query = "the moon pulls the sea up and down"
    assert search(settings, query, k=1)[0]["doc_id"] == "docs/tides.txt"

    dry = run_migrate(settings, "test", overrides=["chunking.overlap=48"], dry_run=True)
    assert dry["decision"] == "dry_run" and dry["adopt"] and _alias(settings) is None
    result = run_migrate(settings, "test", overrides=["chunking.overlap=48"])
    assert result["decision"] == "switched"
    assert result["settings"]["chunking"] == {"max_tokens": None, "overlap": 48}
    assert result["from"].startswith("test--all-minilm-l6-v2-") and _alias(settings) == result["to"]
    assert search(settings, query, k=1)[0]["doc_id"] == "docs/tides.txt"
    store = open_store(settings)
    try:
        assert "test" not in store.list_collections()
        adopted = store.get_collection(result["from"])
        assert adopted is not None and adopted.identity is not None
        assert adopted.identity["adopted_from"] == "test"
        chunkings = {p["chunking"] for _, p in store.scan("test", Match(), ["chunking"])}
        assert chunkings == {"tokens=254;overlap=48"}
        # The replaced collection is kept for migrate.keep_previous (7 days), then pruned.
        assert prune_previous(settings, store, int(time.time())) == []
        later = int(time.time()) + 8 * 86400
        assert prune_previous(settings, store, later, dry_run=True) == [result["from"]]
        assert prune_previous(settings, store, later) == [result["from"]]
        assert result["from"] not in store.list_collections() and "test" in store.aliases()
    finally:
        store.close()
    with pytest.raises(MigrationRefused, match="is gone"):
        run_rollback(settings, "test")


def test_mistakes_are_refused_before_any_work(setup: Callable[..., Path],
                                               make_config: Callable[..., Path], corpus: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from tessera.cli.main import main

    config = setup()
    settings = load_settings(config)
    with pytest.raises(UsageError, match="neither an alias nor a collection"):
        run_migrate(settings, "test", "tiny-text")
    run_ingest(settings)
    with pytest.raises(UsageError, match="already serves"):
        run_migrate(settings, "test")
    with pytest.raises(UsageError, match="chunking.max_tokens, chunking.overlap"):
        run_migrate(settings, "test", overrides=["model=x"])
    with pytest.raises(UsageError, match="has no setting 'size'"):
        run_migrate(settings, "test", overrides=["chunking.size=3"])
    with pytest.raises(ConfigError, match="chunking.overlap"):
        run_migrate(settings, "test", overrides=["chunking.overlap=-1"])
    with pytest.raises(UsageError, match="versioned collection"):
        run_migrate(settings, "test--x", "tiny-text")
    with pytest.raises(UsageError, match="no declared source writes to 'other'"):
        run_migrate(settings, "other", "tiny-text")
    with pytest.raises(MigrationRefused, match="no migration of 'test' is recorded"):
        run_rollback(settings, "test")
    ungated = make_config(sources=[{"name": "docs", "path": str(corpus)}], name="ungated.toml")
    with pytest.raises(UsageError, match="no quality sets"):
        run_migrate(load_settings(ungated), "test", "tiny-text")
    assert main(["migrate", "--alias", "test", "--rollback", "--model", "x", "--config",
                 str(config), "--json"]) == 2
    assert "--rollback takes only --alias" in json.loads(capsys.readouterr().out)["message"]
    bad = make_config(collection="docs--v2")
    assert main(["status", "--config", str(bad), "--json"]) == 2
    assert "may not contain '--'" in json.loads(capsys.readouterr().out)["message"]
    assert not read_events(settings.events_dir, "migrations")[1:]  # one: the rollback refusal


def test_the_switch_waits_for_ingests_and_one_migration_runs_at_a_time(
        setup: Callable[..., Path]) -> None:
    """Ingests share an alias's writer section; the switch needs it alone."""
    settings = load_settings(setup(store={"lock_timeout": 1}))
    first = writer_section(settings, "test", exclusive=False)
    second = writer_section(settings, "test", exclusive=False)  # ingests run side by side
    with pytest.raises(StoreLockedError, match="writer section of 'test'"):
        writer_section(settings, "test", exclusive=True)
    first.release()
    second.release()
    with writer_section(settings, "test", exclusive=True):
        writer_section(settings, "test", exclusive=False).release()  # its own catch-up: covered
    from tessera.jobs.migration.job import _one_at_a_time

    with _one_at_a_time(settings, "test"), pytest.raises(StoreLockedError,
                                                         match="another migration"):
        run_migrate(settings, "test", "tiny-text")


def test_the_migrate_flow_reports_live_and_shadow_side_by_side(setup: Callable[..., Path]) -> None:
    """The Prefect flow (dry run): a markdown artifact and the same decision record."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.migrate import migrate_flow

    config = setup()
    run_ingest(load_settings(config))
    result = migrate_flow(alias="test", config=str(config), model="tiny-text", dry_run=True)
    assert result["decision"] == "dry_run" and result["model"] == "tiny-text"
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["migration-test"])))
    assert arts and arts[0].type == "markdown" and "dry_run" in str(arts[0].data)


# Runs the real migration in a child; the shadow's third upsert writes half its points, then the
# child announces itself and sleeps so the parent can SIGKILL it mid-build.
CHILD = crash_on_third_upsert(
    '"all-minilm" in self.real_name(name) and not name.startswith("quality-")') + """
from tessera.jobs.migration.job import run_migrate
from tessera.core.settings import load_settings
run_migrate(load_settings(sys.argv[1]), "test", "all-minilm-l6-v2")
"""


@pytest.fixture
def many(corpus: Path) -> Iterator[Path]:
    for i in range(40):
        body = " ".join(f"Document {i} sentence {j} on topic {i % 7}." for j in range(3 + i % 40))
        (corpus / f"many{i:02d}.txt").write_text(body)
    yield corpus


@pytest.mark.slow
def test_sigkill_during_the_shadow_build_then_rerun_continues_and_switches(
        setup: Callable[..., Path], many: Path, tmp_path: Path) -> None:
    config = setup(model="tiny-text", store={"upsert_batch": 8})
    settings = load_settings(config)
    run_ingest(settings)
    marker = tmp_path / "child.pid"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    kill_when_marked(CHILD, [str(config), str(marker)], marker, env, "reached its third upsert",
                     timeout=300)
    shadow = [c for c in open_store_names(settings) if c.startswith("test--all-minilm")]
    assert len(shadow) == 1 and _alias(settings) != shadow[0]  # built halfway, not switched

    result = run_migrate(settings, "test", "all-minilm-l6-v2")
    assert result["decision"] == "switched" and result["to"] == shadow[0]
    done_before = 49 - result["build"]["indexed"]
    assert 0 < done_before < 49  # what the killed run wrote is not embedded again
    assert result["build"]["unchanged"] == done_before
    assert len(_docs(settings, "test")) == 49 and result["check"]["equal"]


def open_store_names(settings: Settings) -> list[str]:
    store = open_store(settings)
    try:
        return store.list_collections()
    finally:
        store.close()


def test_an_adoption_killed_before_its_alias_is_finished_by_the_next_migration(
        setup: Callable[..., Path]) -> None:
    """Edge adoption renames the folder, then writes the alias: killed in between, the renamed
    collection records `adopted_from`, a dry run reports it untouched, the next run finishes."""
    from models import get_spec
    from tessera.ingest.identity import identity_for, target_collection, versioned_info
    from tessera.jobs.migration import parts

    settings = load_settings(setup())
    spec = get_spec(settings)
    identity = identity_for(settings, spec)
    renamed = target_collection("test", spec, identity)
    store = open_store(settings)
    store.create_collection(versioned_info(renamed, spec, identity, "test", adopted_from="test"))
    store.close()
    dry = run_migrate(settings, "test", "tiny-text", dry_run=True)
    assert dry["from"] == renamed and not dry["adopt"] and _alias(settings) is None
    store = open_store(settings)
    try:
        plan = parts.plan(settings, store, "test", "tiny-text", {})
        assert plan.live.collection == renamed and store.aliases() == {"test": renamed}
    finally:
        store.close()


class _SearchesAtTheSwitch(PlainSteps):
    """Plain steps that, right after the alias moves (while the migration still holds both
    collections open), let a searching client get a few answers before going on."""

    def __init__(self, answered: Callable[[], int]) -> None:
        super().__init__()
        self.answered = answered
        self.windows: list[tuple[int, int]] = []  # answers given while the migration held on

    def run(self, name: str, fn: Callable[..., Any], *args: Any, io: bool = False,
            **kwargs: Any) -> Any:
        out = super().run(name, fn, *args, io=io, **kwargs)
        if name == "switch-alias":
            start = self.answered()
            deadline = time.monotonic() + 60
            while self.answered() < start + 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.windows.append((start, self.answered()))
        return out


def test_searches_never_fail_across_a_switch_and_a_rollback(setup: Callable[..., Path]) -> None:
    """A search API on the embedded store, searched in a loop while `migrate` switches the alias
    and rolls it back: every answer is a 200, from the old collection until the new one can be
    opened, then from the new one."""
    import threading

    import httpx
    from pydantic import SecretStr

    from tessera.service.app import create_app
    from tests.support.servers import KEY, Served

    settings = load_settings(setup("edge", model="tiny-text",
                                   quality={"max_drop": 1.0, "min_ndcg_at_10": 0.0}))
    run_ingest(settings)
    old = _alias(settings)
    settings = settings.model_copy(update={"api": settings.api.model_copy(update={
        "keys": SecretStr(KEY), "rate_limit": 10_000.0, "burst": 10_000,
        "snapshot_check_seconds": 0.05})})
    server = Served(create_app(settings))
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def search_in_a_loop() -> None:
        with server.client() as client:
            while not stop.is_set():
                try:
                    response = client.post("/v1/search", json={"query": "tides and the moon",
                                                               "k": 3})
                except httpx.HTTPError as exc:  # a hang or a dropped connection is a failure too
                    failures.append(repr(exc))
                    continue
                if response.status_code == 200:
                    seen.append(response.json()["collection"])
                else:
                    failures.append(f"{response.status_code} {response.text[:300]}")

    def settles_on(collection: str | None) -> None:
        count = len(seen)
        deadline = time.monotonic() + 60
        while seen[count:][-3:] != [collection] * 3:
            assert time.monotonic() < deadline, f"searches never moved to {collection}"
            time.sleep(0.05)

    searcher = threading.Thread(target=search_in_a_loop, daemon=True)
    searcher.start()
    try:
        settles_on(old)
        steps = _SearchesAtTheSwitch(lambda: len(seen) + len(failures))
        result = run_migrate(settings, "test", overrides=["chunking.overlap=16"], steps=steps)
        assert result["decision"] == "switched" and result["from"] == old
        settles_on(result["to"])
        back = run_rollback(settings, "test", steps=steps)
        assert back["decision"] == "rolled_back"
        settles_on(old)
    finally:
        stop.set()
        searcher.join(timeout=60)
        server.stop()
    assert failures == []
    (a, b), (c, d) = steps.windows
    assert b - a >= 3 and d - c >= 3
    # At the switch the new collection has no snapshot yet: the old one answers. At the rollback
    # the old one's snapshot is still open, so searches may move back at once.
    assert set(seen[a:b]) == {old} and set(seen[c:d]) <= {old, result["to"]}
