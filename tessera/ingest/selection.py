"""Which sources a run reads, checked before any work starts.

An ad-hoc `tessera ingest PATH` never shares a name or a delete scope with a declared source:
it runs as a source of its own, `adhoc-<name>-<hash of the absolute path>`, so it can only ever
remove documents that it listed itself from that same path on an earlier run. With
`--source NAME`, PATH must lie inside that source's folder, and the run adds or updates the
files it lists there and deletes nothing.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tessera.core.errors import ConfigError, UsageError
from tessera.core.settings import ADHOC_PREFIX, Settings, SourceConfig, parse_ttl
from tessera.sources import make_source

# (source, the items to load, or None for the source's whole listing)
Selection = list[tuple[SourceConfig, list[str] | None]]


def check_ttl(ttl: str | None) -> None:
    """Refuse a bad --ttl before any work."""
    if ttl is None:
        return
    try:
        parse_ttl(ttl)
    except ValueError as exc:
        raise UsageError(f"--ttl {ttl!r}: {exc}") from None


def select_sources(settings: Settings, names: list[str] | None, path: str | None) -> Selection:
    """The sources to run and, for a PATH, the items to load from it."""
    if path is not None:
        return [_path_selection(settings, names or [], Path(path))]
    chosen = [settings.source(n) for n in names] if names else list(settings.sources)
    if not chosen:
        raise ConfigError("sources", [], "no sources declared; add a [[sources]] table to "
                          "tessera.toml or give `tessera ingest` a PATH")
    return [(s, None) for s in chosen]


def adhoc_name(target: Path) -> str:
    """The ad-hoc source name for a path: readable, and unique to that absolute path."""
    stem = target.stem if target.is_file() else target.name
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "root"
    digest = hashlib.sha256(str(target).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{ADHOC_PREFIX}{slug[:40]}-{digest}"


def _path_selection(settings: Settings, names: list[str], given: Path
                    ) -> tuple[SourceConfig, list[str] | None]:
    target = given.expanduser().resolve()
    if not target.exists():
        raise UsageError(f"{given} does not exist; give `tessera ingest` a file or folder that does")
    if len(names) > 1:
        raise UsageError("with a PATH, give at most one --source (the declared source the files "
                         "belong to)")
    if names:
        return _inside_declared(settings.source(names[0]), target, given)
    name = adhoc_name(target)
    if any(s.name == name for s in settings.sources):
        raise ConfigError("sources", name, "a declared source has the name an ad-hoc run of "
                          f"{target} would use; rename the declared source")
    if target.is_file():
        return SourceConfig(name=name, path=target.parent), [target.name]
    return SourceConfig(name=name, path=target), None


def _inside_declared(source: SourceConfig, target: Path, given: Path
                     ) -> tuple[SourceConfig, list[str]]:
    """Files of a declared source under PATH, by their names relative to the source's root."""
    root = Path(source.path).resolve()
    if target != root and root not in target.parents:
        raise UsageError(f"{given} is not inside source {source.name!r}'s folder {root}; give a "
                         f"path under it, or leave out --source to ingest {given} on its own")
    if target.is_file():
        return source, [target.relative_to(root).as_posix()]
    prefix = "" if target == root else target.relative_to(root).as_posix() + "/"
    return source, [rel for rel in make_source(source).discover() if rel.startswith(prefix)]
