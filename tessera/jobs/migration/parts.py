"""The parts of a blue/green migration: plan, build the shadow, gate, check, switch, prune.

A migration moves an alias to a collection built with other settings (a model, chunking, extra
index settings). The shadow is built by the ordinary ingest job into its versioned name, so it
passes the contracts, writes events, uses Modal when configured, and a re-run after a crash goes
on from what was written. The gate scores every quality set with the live and the shadow settings
in the same run and compares them per query (tessera.jobs.significance): refused when a gated
metric is significantly worse or any metric drops more than `quality.max_drop`. The switch happens inside the alias's exclusive writer section, after a catch-up
ingest of both collections and a check that both hold the same (doc_id, content_hash) pairs.
The order of the parts is tessera/jobs/migration/job.py's.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from models import get_spec
from models.registry import ModelSpec
from tessera.core.errors import ConfigError, UsageError
from tessera.core.events import read_events
from tessera.core.settings import (
    VERSION_MARK,
    ChunkingConfig,
    QualityConfig,
    Settings,
    SourceConfig,
)
from tessera.core.sparse import SparseConfig
from tessera.core.steps import Steps
from tessera.core.types import Match
from tessera.ingest.identity import (
    Identity,
    alias_of,
    identity_extra,
    identity_for,
    identity_of,
    settings_for,
    target_collection,
    versioned_info,
)
from tessera.ingest.run import run_ingest
from tessera.jobs import significance
from tessera.jobs.quality import (
    METRICS,
    dataset_settings,
    embed_queries,
    load_dataset,
    retrieve,
    score,
)
from tessera.jobs.significance import Comparison, compare_runs, power_notes
from tessera.store import VectorStore, switch_alias

logger = logging.getLogger(__name__)

# What `--set KEY=VALUE` may change: the sections whose settings are part of a collection's
# identity (`--set sparse.k=0.9`, `--set sparse.enabled=false`).
OVERRIDABLE: dict[str, type[BaseModel]] = {"chunking": ChunkingConfig, "sparse": SparseConfig}
LIST_LIMIT = 20  # differences listed per side when the completeness check fails
_SIG = re.compile(r"tokens=(\d+);overlap=(\d+)")


@dataclass(frozen=True)
class Side:
    """One collection of a migration: its name, model and identity."""

    collection: str
    spec: ModelSpec
    identity: Identity


@dataclass(frozen=True)
class Plan:
    """What a migration will do, decided before any work."""

    alias: str
    live: Side
    shadow: Side
    sources: list[SourceConfig]
    adopt: bool  # the alias is still a plain collection: adopt it first


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """`chunking.overlap=48` -> {"chunking": {"overlap": "48"}}; refuses unknown keys."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        section, dot, field = key.strip().partition(".")
        if not sep or not dot or section not in OVERRIDABLE:
            known = ", ".join(f"{s}.{f}" for s, m in OVERRIDABLE.items() for f in m.model_fields)
            raise UsageError(f"--set {pair!r}: give KEY=VALUE with KEY one of {known}")
        if field not in OVERRIDABLE[section].model_fields:
            raise UsageError(f"--set {pair!r}: {section} has no setting {field!r}; it has "
                             + ", ".join(OVERRIDABLE[section].model_fields))
        text = value.strip()
        out.setdefault(section, {})[field] = None if text.lower() in ("none", "null", "") else text
    return out


def apply_overrides(settings: Settings, overrides: dict[str, dict[str, Any]]) -> Settings:
    """Settings with the `--set` values applied, validated like the config file is."""
    update: dict[str, Any] = {}
    for section, values in overrides.items():
        current = getattr(settings, section).model_dump()
        try:
            update[section] = OVERRIDABLE[section].model_validate({**current, **values})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(f"{section}.{err['loc'][0]}", err.get("input"), err["msg"]) from None
    return settings.model_copy(update=update)


def alias_sources(settings: Settings, alias: str) -> list[SourceConfig]:
    """The declared sources whose points go to `alias`."""
    return [s for s in settings.sources if settings.collection_for(s) == alias]


def live_side(settings: Settings, store: VectorStore, alias: str,
              repair: bool = True) -> tuple[Side, bool]:
    """The collection readers of `alias` use now, and whether it still has to be adopted
    (`repair`: finish an adoption that crashed halfway; a dry run only looks)."""
    real = store.aliases().get(alias)
    if real is None and alias in store.list_collections():
        info = store.get_collection(alias)
        assert info is not None
        spec = get_spec(settings, info.model_name)
        # What the plain collection holds: its chunking, and its sparse vectors or none.
        adopted = identity_for(settings, spec, _recorded_chunking(settings, store, alias, spec),
                               {**identity_extra(settings), "sparse": info.sparse})
        return Side(target_collection(alias, spec, adopted), spec, adopted), True
    if real is None:
        real = _finish_adoption(store, alias, repair)
    if real is None:
        raise UsageError(f"{alias!r} is neither an alias nor a collection in this store; ingest "
                         "into it first (`tessera ingest`), then migrate it")
    info = store.get_collection(real)
    identity = identity_of(info) if info is not None else None
    if info is None or identity is None:
        raise UsageError(f"alias {alias!r} points at {real!r}, which records no build settings "
                         "(made by hand with `tessera alias`); point it at a collection Tessera "
                         "made, or migrate from a plain collection")
    return Side(real, get_spec(settings, identity.model), identity), False


def _finish_adoption(store: VectorStore, alias: str, repair: bool) -> str | None:
    """An adoption that crashed after renaming the collection and before making the alias."""
    for name in store.list_collections():
        info = store.get_collection(name) if alias_of(name) == alias else None
        if info is not None and (info.identity or {}).get("adopted_from") == alias:
            if repair:
                store.set_alias(alias, name)
            return name
    return None


def _recorded_chunking(settings: Settings, store: VectorStore, name: str,
                       spec: ModelSpec) -> ChunkingConfig:
    """How a plain collection's points say they were chunked (the config's when it agrees)."""
    from tessera.ingest.chunking import signature

    cfg = settings.chunking
    for _, payload in store.scan(name, Match(), ["chunking"]):
        sig = str(payload.get("chunking"))
        found = _SIG.fullmatch(sig)
        if sig == signature(spec.max_length, cfg.max_tokens, cfg.overlap) or found is None:
            return cfg
        return ChunkingConfig(max_tokens=int(found.group(1)), overlap=int(found.group(2)))
    return cfg


def plan(settings: Settings, store: VectorStore, alias: str, model: str | None,
         overrides: dict[str, dict[str, Any]], repair: bool = True) -> Plan:
    """Decide what to build; refuses, before any work, a migration that cannot or need not run."""
    if VERSION_MARK in alias:
        raise UsageError(f"--alias {alias!r} names a versioned collection; give the alias "
                         f"readers use (the part before {VERSION_MARK!r})")
    sources = alias_sources(settings, alias)
    if not sources:
        raise UsageError(f"no declared source writes to {alias!r}, so there is nothing to build "
                         "a new collection from; check the alias name and [[sources]] collection")
    if not settings.quality.sets:
        raise UsageError("no quality sets are configured, so a migration has nothing to gate on; "
                         "add [[quality.sets]] (BEIR-layout folders) to tessera.toml")
    live, adopt = live_side(settings, store, alias, repair)
    wanted = apply_overrides(settings, overrides)
    spec = get_spec(wanted, model or wanted.model)
    if any(m not in spec.modalities for m in {s.modality for s in sources}):
        raise UsageError(f"model {spec.name!r} embeds {'/'.join(spec.modalities)} only, but "
                         f"sources writing to {alias!r} hold other modalities")
    identity = identity_for(wanted, spec)
    if identity.tag == live.identity.tag:
        raise UsageError(f"{alias!r} already serves {live.collection!r}, built with these "
                         f"settings (model {spec.name}, hash {identity.tag}); pass --model or "
                         "--set, or change tessera.toml, to migrate to something else")
    return Plan(alias, live, Side(target_collection(alias, spec, identity), spec, identity),
                sources, adopt)


def adopt(store: VectorStore, plan: Plan) -> None:
    """Turn the plain collection named like the alias into a versioned one behind the alias."""
    live = plan.live
    info = versioned_info(live.collection, live.spec, live.identity, plan.alias,
                          adopted_from=plan.alias)
    store.adopt(plan.alias, info)


def build(settings: Settings, steps: Steps, side: Side, sources: list[SourceConfig],
          flow: str = "migrate") -> dict[str, Any]:
    """Ingest the sources into `side`'s collection with its settings (resumable, incremental)."""
    scoped = settings_for(settings, side.identity).model_copy(update={"sources": [
        s.model_copy(update={"collection": side.collection, "model": None}) for s in sources]})
    return run_ingest(scoped, steps, sources=[s.name for s in sources], flow=flow)


def doc_pairs(store: VectorStore, collection: str) -> set[tuple[str, str]]:
    """Every (doc_id, content_hash) the collection holds."""
    return {(str(p.get("doc_id")), str(p.get("content_hash")))
            for _, p in store.scan(collection, Match(), ["doc_id", "content_hash"])}


def compare(live: set[tuple[str, str]], other: set[tuple[str, str]]) -> dict[str, Any]:
    """What differs: pairs only live has (missing from the other) and only the other has."""
    missing, extra = sorted(live - other), sorted(other - live)
    return {"equal": not missing and not extra, "missing_count": len(missing),
            "extra_count": len(extra),
            "missing": [{"doc_id": d, "content_hash": h} for d, h in missing[:LIST_LIMIT]],
            "extra": [{"doc_id": d, "content_hash": h} for d, h in extra[:LIST_LIMIT]]}


def measure(settings: Settings, steps: Steps, side: Side, path: Path,
            name: str | None) -> tuple[str, dict[str, dict[str, float]]]:
    """Index a quality set with `side`'s settings (its own collection) and score it per query."""
    scoped = dataset_settings(settings_for(settings, side.identity), path, name)
    run_ingest(scoped, steps, sources=[scoped.sources[0].name], flow="quality")
    data = load_dataset(path, name)
    qids = list(data.queries)
    collection = str(scoped.sources[0].collection)
    vectors = steps.run("embed-queries", embed_queries, scoped, [data.queries[q] for q in qids])
    found = steps.run("retrieve", retrieve, scoped, collection, qids, vectors, io=True)
    return data.name, steps.run("score", score, data.qrels, found)


@dataclass(frozen=True)
class Gate:
    """What the gate found: per set, the paired comparison per metric and both sides' per-query
    scores; the rules the shadow breaks; what the sets are too small to see."""

    compared: dict[str, dict[str, Comparison]]
    scores: dict[str, tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]]
    breaches: list[str]
    notes: list[str]

    def metrics(self) -> dict[str, dict[str, dict[str, Any]]]:
        """{set: {metric: live, shadow, difference, interval, p-value, power}} (JSON, events)."""
        return {label: {m: {"live": c.baseline, "shadow": c.candidate, "difference": c.difference,
                            "low": c.low, "high": c.high, "p_value": c.p_value, "power": c.power,
                            "worse": c.worse, "underpowered": c.underpowered}
                        for m, c in per.items()}
                for label, per in self.compared.items()}


def gate(settings: Settings, steps: Steps, live: Side, shadow: Side) -> Gate:
    """Score every quality set on both sides in this run and compare them per query."""
    gates = settings.quality
    compared, scores, breaches, notes = {}, {}, [], []
    for qs in gates.sets:
        label, before = measure(settings, steps, live, Path(qs.path), qs.name)
        _, after = measure(settings, steps, shadow, Path(qs.path), qs.name)
        found = compare_runs(gates, before, after, METRICS)
        compared[label], scores[label] = found, (before, after)
        breaches += [f"{label}: {b}" for b in significance.breaches(gates, found, ("live", "shadow"))]
        if found["ndcg@10"].candidate < gates.min_ndcg_at_10:
            breaches.append(f"{label}: ndcg@10 shadow {found['ndcg@10'].candidate:.4f} is below "
                            f"the floor quality.min_ndcg_at_10 = {gates.min_ndcg_at_10}")
        notes += [f"{label}: {n}" for n in power_notes(gates, found)]
    return Gate(compared, scores, breaches, notes)


def switch(store: VectorStore, alias: str, collection: str) -> str | None:
    """Point the alias at `collection` (one atomic call); returns where it pointed before."""
    return switch_alias(store, alias, collection)["previous"]


def last_change(settings: Settings, alias: str) -> dict[str, Any] | None:
    """The latest switch or rollback of `alias` recorded in the events, or None."""
    rows = [r for r in read_events(settings.events_dir, "migrations")
            if r["alias"] == alias and r["decision"] in ("switched", "rolled_back")]
    return max(rows, key=lambda r: (r["finished_at"], r["run_id"])) if rows else None


def prune_previous(settings: Settings, store: VectorStore, now: int,
                   dry_run: bool = False) -> list[str]:
    """Drop versioned collections no alias uses that were replaced (or built and never used)
    longer than `migrate.keep_previous` ago; returns their names."""
    keep = settings.migrate.keep_previous_seconds
    if keep is None:
        return []
    aliases = store.aliases()
    live = set(aliases.values())
    retired: dict[str, float] = {}
    for row in read_events(settings.events_dir, "migrations"):
        if row["decision"] in ("switched", "rolled_back") and row["from_collection"]:
            at = row["finished_at"].timestamp()
            retired[row["from_collection"]] = max(at, retired.get(row["from_collection"], 0.0))
    dropped = []
    for name in store.list_collections():
        if name in live or alias_of(name) not in aliases:
            continue  # in use, or not one of an alias's versions (quality sets, plain ones)
        info = store.get_collection(name)
        rec = (info.identity if info is not None else None) or {}
        since = retired.get(name, float(rec.get("created_at", now)))
        if now - since > keep:
            if not dry_run:
                store.drop_collection(name)
            dropped.append(name)
    return dropped


def markdown(result: dict[str, Any], gates: QualityConfig) -> str:
    """The Prefect artifact: live and shadow side by side per set and metric, the difference with
    its 95% interval, the p-value and the power, and the decision."""
    lines = [f"## Migration of `{result['alias']}`: {result['decision']}", "",
             f"from `{result['from']}` to `{result['to']}`", ""]
    if result.get("reason"):
        lines += [f"**Reason:** {result['reason']}", ""]
    lines += [f"Gate: refused when {', '.join(gates.gate_metrics)} is significantly worse "
              f"(paired permutation test, p < {gates.significance}), when any metric drops more "
              f"than {gates.max_drop}, or when ndcg@10 < {gates.min_ndcg_at_10}.", ""]
    lines += [f"- {note}" for note in result.get("power_notes") or []]
    lines += ["", "| set | metric | live | shadow | change | 95% interval | p | power |",
              "|---|---|---|---|---|---|---|---|"]
    for label, per in (result.get("metrics") or {}).items():
        for metric, v in per.items():
            lines.append(f"| {label} | {metric} | {v['live']:.4f} | {v['shadow']:.4f} | "
                         f"{v['shadow'] - v['live']:+.4f} | {_interval(v)} | "
                         f"{_p(v)} | {_power(v)} |")
    return "\n".join(lines) + "\n"


def _interval(v: dict[str, Any]) -> str:
    return f"[{v['low']:+.4f}, {v['high']:+.4f}]" if "low" in v else "-"


def _p(v: dict[str, Any]) -> str:
    return f"{v['p_value']:.3g}" if "p_value" in v else "-"


def _power(v: dict[str, Any]) -> str:
    return f"{v['power']:.0%}" if "power" in v else "-"


def settings_json(identity: Identity) -> str:
    """The identity as the `migrations` event stores it."""
    return json.dumps(identity.describe(), sort_keys=True)
