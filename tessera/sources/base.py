"""What every source is: it discovers items cheaply, then loads them as documents or quarantine rows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from tessera.core.errors import RecordError
from tessera.core.settings import SourceConfig
from tessera.core.types import Loaded


class Source(Protocol):
    """A declared source: finds its items cheaply, then loads them in batches."""

    config: SourceConfig

    def discover(self) -> list[str]:
        """Relative item names (files) under the source root, sorted."""
        ...

    def load(self, items: list[str]) -> Iterator[Loaded]:
        """Documents and quarantine rows for these items; never raises for one bad record."""
        ...


def safe_path(root: Path, relative: str) -> Path:
    """Resolve `relative` under `root`, refusing anything (.., symlinks) that escapes it."""
    root_real = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(root_real / relative))
    if candidate != root_real and root_real not in candidate.parents:
        raise RecordError(
            f"{relative} resolves to {candidate}, outside the source root {root_real}; "
            "Tessera refuses paths that escape their source (symlink or '..')",
            expectation="path_inside_source_root",
        )
    return candidate
