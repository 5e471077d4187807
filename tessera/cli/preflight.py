"""Checks that run before any work: a user's mistake is refused in well under a second, with one
line of advice that names where the value came from (a flag, a TESSERA_* variable or a config
key), and it is never retried.

Nothing here imports Prefect, the model or the store's client library unless the check needs it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tessera.core import env
from tessera.core.errors import ConfigError, StorageError, UsageError
from tessera.core.suggest import did_you_mean as did_you_mean  # re-exported for cli.support
from tessera.core.suggest import known as _known

if TYPE_CHECKING:  # the settings (pydantic) load with the config: `tessera --help` needs neither
    from tessera.core.settings import Settings


def check_sources(settings: Settings, names: list[str] | None) -> None:
    """Every `--source NAME` must be a declared source."""
    declared = [s.name for s in settings.sources]
    for name in names or []:
        if name not in declared:
            raise UsageError(f"--source {name!r} is not a declared source{did_you_mean(name, declared)}; "
                             f"declared sources: {_known(declared)} (see [[sources]] in the config)")


def check_path(path: str | None) -> None:
    """A command-line PATH must exist (the advice is about the argument, not `sources.path`)."""
    if path is not None and not Path(path).expanduser().exists():
        raise UsageError(f"PATH {path!r} does not exist; give `tessera ingest` a file or folder "
                         "that does (or leave PATH out to ingest the declared sources)")


def _modal_has_token() -> bool:
    if env.modal_token_in_env():
        return True
    try:
        return "token_id" in env.modal_config_path().read_text(encoding="utf-8")
    except OSError:
        return False


def check_backend(settings: Settings) -> None:
    """`embedding.backend = "modal"` needs Modal credentials on this machine."""
    if settings.embedding.backend == "modal" and not _modal_has_token():
        from_env = env.setting_from_env("embedding.backend") is not None
        key = "TESSERA_EMBEDDING__BACKEND" if from_env else "embedding.backend"
        switch = ("unset TESSERA_EMBEDDING__BACKEND (or set it to local)" if from_env
                  else 'set embedding.backend = "local" in the config')
        raise ConfigError(key, "modal", "Modal has no token on this machine; run `modal token new` "
                          f"(or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET), or {switch}")


def check_store(settings: Settings, timeout: float = 1.0) -> None:
    """A Qdrant server store must answer a TCP connect (a wrong URL is a mistake, not an outage
    a retry fixes: the flow would otherwise spend its retries on it)."""
    store = settings.store
    if store.kind != "qdrant" or not store.url:
        return
    origin = env.setting_variable("store.url") if env.setting_from_env("store.url") else "store.url"
    parts = urlsplit(store.url if "://" in store.url else f"http://{store.url}")
    if not parts.hostname:
        raise ConfigError(origin, store.url, "not a URL; write it like http://localhost:6333")
    port = parts.port or (443 if parts.scheme == "https" else 6333)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(origin, store.url, f"no Qdrant server answers there ({exc.strerror or exc}); "
                          "start it, or fix the URL") from None


def check_collection(name: str, collections: list[str], aliases: dict[str, str],
                     flag: str = "--collection") -> None:
    """A collection (or alias) a reader names must exist."""
    known = [*collections, *aliases]
    if name not in known:
        raise UsageError(f"{flag} {name!r}: no such collection or alias in the index"
                         f"{did_you_mean(name, known)}; known: {_known(known)}")


def check_search_source(settings: Settings, source: str, indexed: bool,
                        seen: Iterable[str] = ()) -> None:
    """`search --source NAME` for a source with nothing in the index is an error, not []."""
    if indexed:
        return
    known = {s.name for s in settings.sources} | set(seen)
    raise UsageError(f"--source {source!r}: the index holds nothing from that source"
                     f"{did_you_mean(source, known)}; known sources: {_known(known)}")


def ingest_checks(settings: Settings, sources: list[str] | None, ttl: str | None,
                  path: str | None) -> None:
    """Everything `tessera ingest` can refuse before it starts."""
    from tessera.ingest.selection import check_ttl

    check_ttl(ttl)
    check_path(path)
    check_sources(settings, sources)
    check_backend(settings)
    check_store(settings)


def error_object(exc: BaseException) -> dict[str, Any]:
    """The one JSON object `--json` prints for a refused command."""
    out: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, ConfigError):
        out["key"] = exc.key
    if isinstance(exc, StorageError):
        out["path"] = exc.path
    return out


def check_search(settings: Settings, collection: str | None, source: str | None) -> None:
    """`search`'s --collection and --source name something the index holds."""
    check_store(settings)
    from tessera.core.types import Match
    from tessera.store import open_store, resolve

    store = open_store(settings)
    try:
        if collection is not None:
            check_collection(collection, store.list_collections(), store.aliases())
        name = resolve(store, collection or settings.collection)
        if source is not None and store.get_collection(name) is not None:
            indexed = store.count(name, Match(source=source)) > 0
            if not indexed:
                check_search_source(settings, source, indexed, _indexed_sources(settings))
    finally:
        store.close()


def _indexed_sources(settings: Settings) -> set[str]:
    """Source names that completed runs wrote (for "did you mean" beside the declared ones)."""
    from tessera.core.events import read_events

    names: set[str] = set()
    for row in read_events(settings.events_dir, "ingest_runs"):
        names.update(n for n in (row.get("sources") or "").split(",") if n)
    return names


def check_run(settings: Settings, run_id: str | None) -> None:
    """`--run ID` must name a run the events hold: `count: 0` for a typo would read as a clean
    run."""
    if run_id is None:
        return
    runs = _run_ids(settings.events_dir)
    if run_id in runs:
        return
    recent = ", ".join(sorted(runs, reverse=True)[:5]) or "none yet"
    raise UsageError(f"--run {run_id!r}: no such run{did_you_mean(run_id, runs)}; recent runs: "
                     f"{recent} (`tessera status --last 20` lists more)")


def _run_ids(events_dir: Path) -> set[str]:
    """Ids of the runs that left events, from the file names alone (`<run_id>-<part>.parquet`;
    `_schema.parquet` is no run's)."""
    return {p.name.rsplit("-", 1)[0]
            for table in ("ingest_runs", "ingest_batches", "quarantine")
            for p in (events_dir / table).glob("*.parquet") if not p.name.startswith("_")}
