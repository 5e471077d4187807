"""Search settings tuned for one collection (`tessera tune`): where they live, how searches read them.

A tuning run that passes its gate writes `TESSERA_HOME/tuned/<collection>.json`: the settings it
chose, the run, and the scores it was chosen on. Every search of that collection (the service,
the CLI, `tessera quality`) then uses them over the `[search]` config, which stays the fallback
for every other collection. Only search-time settings are tuned: nothing here changes what the
index holds, so a tuned file can be deleted at any time to go back to the config.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tessera.core.errors import UsageError
from tessera.core.fs import atomic_write
from tessera.core.query import SearchConfig
from tessera.core.settings import Settings

# What a tuning run may choose.
TUNABLE = ("fusion", "rrf_k", "doc_chunks", "dense_prefetch", "sparse_prefetch", "hnsw_ef")
_cache: dict[Path, tuple[int, dict[str, Any] | None]] = {}  # path -> (mtime_ns, record)
_lock = threading.Lock()


def tuned_path(settings: Settings, collection: str) -> Path:
    """Where a collection's tuned settings are kept."""
    return settings.home / "tuned" / f"{collection}.json"


def read_tuned(settings: Settings, collection: str) -> dict[str, Any] | None:
    """The collection's tuning record, or None (read again only when the file changed: every
    search asks)."""
    path = tuned_path(settings, collection)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    with _lock:
        cached = _cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        record = json.loads(path.read_text())
        SearchConfig.model_validate({k: v for k, v in record.get("search", {}).items()
                                     if k in TUNABLE})
    except ValidationError as exc:  # edited by hand, badly: one line, the first fault
        err = exc.errors()[0]
        raise _unusable(path, f"search.{err['loc'][0]}: {err['msg']}") from None
    except (ValueError, AttributeError) as exc:
        raise _unusable(path, str(exc).splitlines()[0]) from None
    with _lock:
        _cache[path] = (stamp, record)
    return record


def _unusable(path: Path, why: str) -> UsageError:
    return UsageError(f"{path} is not a tuning record tessera can use ({why}); delete it to "
                      "search that collection with [search] again, or run `tessera tune`")


def search_settings(settings: Settings, collection: str) -> SearchConfig:
    """`[search]` with the collection's tuned values over it, where it has any."""
    record = read_tuned(settings, collection)
    if not record:
        return settings.search
    chosen = {k: v for k, v in record.get("search", {}).items() if k in TUNABLE}
    return settings.search.model_validate({**settings.search.model_dump(), **chosen})


def tuned_values(cfg: SearchConfig) -> dict[str, Any]:
    """The tunable part of a search config: what a tuning run chooses and writes."""
    values = {k: getattr(cfg, k) for k in TUNABLE}
    if cfg.fusion == "dbsf":
        values.pop("rrf_k")  # DBSF has no k: configs differing only in it search the same way
    for side in ("dense_prefetch", "sparse_prefetch"):
        values[side] = values[side] or cfg.prefetch  # unset: `prefetch`, the same search
    return values


def write_tuned(settings: Settings, collection: str, record: dict[str, Any]) -> Path:
    """Keep a tuning run's chosen settings for `collection` (atomically: a search reads the old
    file or the new one)."""
    path = tuned_path(settings, collection)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
