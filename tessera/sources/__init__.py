"""Sources: where documents come from. `make_source` picks the reader for a declared source."""

from __future__ import annotations

from tessera.core.settings import SourceConfig
from tessera.sources.base import Source

__all__ = ["Source", "make_source"]


def make_source(config: SourceConfig) -> Source:
    """The reader for this source's kind."""
    if config.kind == "beir":
        from tessera.sources.directory import BeirSource

        return BeirSource(config)
    if config.kind == "images":
        from tessera.sources.images import ImageSource

        return ImageSource(config)
    from tessera.sources.directory import DirectorySource

    return DirectorySource(config)
