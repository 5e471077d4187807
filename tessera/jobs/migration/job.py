"""The migrate job: plan -> (adopt) -> build the shadow -> gate -> [catch up -> check -> switch],
the bracketed part inside the alias's exclusive writer section; and its rollback.

Plain functions over a `Steps`, like the ingest job: the CLI runs them directly, the Prefect flow
(flows/migrate.py) as tasks. Every attempt leaves one `migrations` event and a report comparing
live and shadow per metric; a refusal raises MigrationRefused carrying the decision.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from statistics import mean
from typing import Any

from models import get_spec
from tessera.core import telemetry
from tessera.core.errors import MigrationRefused, StoreLockedError
from tessera.core.events import EventLog, new_run_id, utcnow
from tessera.core.fs import HeldLock
from tessera.core.settings import Settings, SourceConfig
from tessera.core.steps import PlainSteps, Steps
from tessera.ingest.identity import identity_of
from tessera.ingest.run import run_ingest
from tessera.jobs import significance
from tessera.jobs.migration import parts
from tessera.jobs.quality import slug
from tessera.store import open_store
from tessera.store.writers import lock_dir, writer_section

logger = logging.getLogger(__name__)


class _Attempt:
    """One attempt's decision record, its event and its report."""

    def __init__(self, settings: Settings, steps: Steps, alias: str) -> None:
        self.settings, self.steps = settings, steps
        self.events = EventLog(settings.events_dir, new_run_id())
        self.started = utcnow()
        self.result: dict[str, Any] = {"decision": None, "alias": alias, "from": None,
                                       "to": None, "metrics": {}, "reason": None,
                                       "run_id": self.events.run_id}
        self.row: dict[str, Any] = {}
        self.gate: parts.Gate | None = None

    def sides(self, live: parts.Side, to: parts.Side) -> None:
        """Name the two collections (and models) of this attempt."""
        self.result.update({"from": live.collection, "to": to.collection, "model": to.spec.name,
                            "settings": to.identity.describe()})
        self.row = {"from_collection": live.collection, "to_collection": to.collection,
                    "from_model": live.spec.id, "to_model": to.spec.id,
                    "settings_hash": to.identity.tag,
                    "settings": parts.settings_json(to.identity)}

    def finish(self, decision: str, reason: str | None = None, **extra: Any) -> dict[str, Any]:
        """Record the decision: the event, the report, and the result `--json` prints."""
        self.result.update(decision=decision, reason=reason, **extra)
        metrics = self.result["metrics"]
        ndcg = {side: [per["ndcg@10"][side] for per in metrics.values() if "ndcg@10" in per]
                for side in ("live", "shadow")}
        self.events.add("migrations", alias=self.result["alias"], decision=decision,
                        metrics=json.dumps(metrics, sort_keys=True), reason=reason,
                        live_ndcg_at_10=mean(ndcg["live"]) if ndcg["live"] else None,
                        shadow_ndcg_at_10=mean(ndcg["shadow"]) if ndcg["shadow"] else None,
                        started_at=self.started, finished_at=utcnow(), **self.row)
        if self.gate is not None:
            for label, found in self.gate.compared.items():
                significance.record(self.events, self.settings.quality, "migration",
                                    self.result["alias"], label, "dense",
                                    (self.result["from"], self.result["to"]), found,
                                    self.gate.scores[label], decision)
        self.events.flush()
        self.steps.report(f"migration-{slug(self.result['alias'])}",
                          parts.markdown(self.result, self.settings.quality),
                          f"migration of {self.result['alias']}: {decision}")
        logger.info("migration %s", self.result)
        return self.result

    def refuse(self, reason: str, **extra: Any) -> MigrationRefused:
        """Record a refusal; the error to raise (it carries the decision)."""
        result = self.finish("refused", reason, **extra)
        return MigrationRefused(f"migration of {result['alias']!r} refused: {reason}", result)


@contextmanager
def _one_at_a_time(settings: Settings, alias: str) -> Iterator[None]:
    """One migration or rollback of an alias at a time; a second is refused at once."""
    def busy(holder: str, _waited: float) -> StoreLockedError:
        return StoreLockedError(f"another migration of {alias!r} is running (pid {holder}); "
                                "wait for it to finish")

    lock = HeldLock(lock_dir(settings) / f"{alias}.migrate.lock", 0, busy)
    try:
        yield
    finally:
        lock.release()


@telemetry.traced("migration")
def run_migrate(settings: Settings, alias: str, model: str | None = None,
                overrides: list[str] | None = None, dry_run: bool = False,
                steps: Steps | None = None) -> dict[str, Any]:
    """Build, gate and (if it scores at least as well and holds the same documents) switch."""
    steps = steps or PlainSteps()
    changes = parts.parse_overrides(overrides or [])
    with _one_at_a_time(settings, alias):
        store = open_store(settings)
        try:
            plan = parts.plan(settings, store, alias, model, changes, repair=not dry_run)
        finally:
            store.close()
        attempt = _Attempt(settings, steps, alias)
        attempt.sides(plan.live, plan.shadow)
        attempt.result["adopt"] = plan.adopt
        if dry_run:
            return attempt.finish("dry_run", sources=[s.name for s in plan.sources])
        try:
            return _migrate(settings, steps, plan, attempt)
        except MigrationRefused:
            raise
        except Exception as exc:
            attempt.finish("failed", f"{type(exc).__name__}: {exc}")
            raise


def _migrate(settings: Settings, steps: Steps, plan: parts.Plan,
             attempt: _Attempt) -> dict[str, Any]:
    if plan.adopt:
        with writer_section(settings, plan.alias, exclusive=True):
            store = open_store(settings)
            try:
                steps.run("adopt", parts.adopt, store, plan, io=True)
            finally:
                store.close()
    attempt.result["build"] = parts.build(settings, steps, plan.shadow, plan.sources)
    attempt.gate = parts.gate(settings, steps, plan.live, plan.shadow)
    attempt.result.update(metrics=attempt.gate.metrics(), power_notes=attempt.gate.notes)
    if attempt.gate.breaches:
        raise attempt.refuse("quality gate: " + "; ".join(attempt.gate.breaches))
    _catch_up_check_switch(settings, steps, plan.alias, plan.sources, plan.live, plan.shadow,
                           attempt)
    return attempt.finish("switched")


def _catch_up_check_switch(settings: Settings, steps: Steps, alias: str,
                           sources: list[SourceConfig], live: parts.Side, to: parts.Side,
                           attempt: _Attempt) -> None:
    """Inside the exclusive writer section: bring both collections level with the sources,
    check they hold the same documents, switch. No ingest writes in between."""
    names = [s.name for s in sources]
    with writer_section(settings, alias, exclusive=True):
        run_ingest(settings, steps, sources=names, flow="migrate")  # live, as readers see it
        attempt.result["catch_up"] = parts.build(settings, steps, to, sources)
        store = open_store(settings)
        try:
            current = store.aliases().get(alias)
            if current != live.collection:
                raise attempt.refuse(f"{alias!r} now points at {current!r}, not at "
                                     f"{live.collection!r}: it was moved while this ran; run again")
            check = parts.compare(parts.doc_pairs(store, live.collection),
                                  parts.doc_pairs(store, to.collection))
            attempt.result["check"] = check
            if not check["equal"]:
                raise attempt.refuse(
                    f"{to.collection!r} and {live.collection!r} do not hold the same documents "
                    f"({check['missing_count']} (doc_id, content_hash) pairs only in the live "
                    f"one, {check['extra_count']} only in the other); see `check`")
            steps.run("switch-alias", parts.switch, store, alias, to.collection, io=True)
        finally:
            store.close()


@telemetry.traced("rollback")
def run_rollback(settings: Settings, alias: str, steps: Steps | None = None) -> dict[str, Any]:
    """Point the alias back at the collection the last migration replaced, after the same
    catch-up and completeness check; refused when the last change was already a rollback."""
    steps = steps or PlainSteps()
    with _one_at_a_time(settings, alias):
        attempt = _Attempt(settings, steps, alias)
        last = parts.last_change(settings, alias)
        store = open_store(settings)
        try:
            current = store.aliases().get(alias)
            if last is None:
                raise attempt.refuse(f"no migration of {alias!r} is recorded, so there is "
                                     "nothing to roll back to")
            if last["decision"] == "rolled_back":
                raise attempt.refuse(
                    f"the last change of {alias!r} was already a rollback (to "
                    f"{last['to_collection']!r} at {last['finished_at']:%Y-%m-%d %H:%M} UTC); a "
                    "rollback undoes one migration only. Run `tessera migrate` to move forward")
            if current != last["to_collection"]:
                raise attempt.refuse(
                    f"{alias!r} points at {current!r}, not at {last['to_collection']!r} where "
                    "the last migration left it (moved by hand?); point it with `tessera alias`")
            live = _side(settings, store, current)
            previous = _side(settings, store, last["from_collection"])
        finally:
            store.close()
        if previous is None or live is None:
            raise attempt.refuse(f"the previous collection {last['from_collection']!r} is gone "
                                 "(pruned after migrate.keep_previous); migrate instead")
        attempt.sides(live, previous)
        sources = parts.alias_sources(settings, alias)
        if not sources:
            raise attempt.refuse(f"no declared source writes to {alias!r}, so the previous "
                                 "collection cannot be brought level with the sources")
        try:
            _catch_up_check_switch(settings, steps, alias, sources, live, previous, attempt)
        except MigrationRefused:
            raise
        except Exception as exc:
            attempt.finish("failed", f"{type(exc).__name__}: {exc}")
            raise
        return attempt.finish("rolled_back")


def _side(settings: Settings, store: Any, collection: str | None) -> parts.Side | None:
    info = store.get_collection(collection) if collection else None
    identity = identity_of(info) if info is not None else None
    if info is None or identity is None or collection is None:
        return None
    return parts.Side(collection, get_spec(settings, identity.model), identity)


def prune_previous(settings: Settings, store: Any, now: int, dry_run: bool = False) -> list[str]:
    """Drop replaced collections kept longer than `migrate.keep_previous` (the nightly prune)."""
    return parts.prune_previous(settings, store, now, dry_run)
