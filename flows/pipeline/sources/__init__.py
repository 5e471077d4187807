"""Sources: where documents come from. `make_source` picks the reader for a declared source."""

from __future__ import annotations

from flows.pipeline.sources.base import Source
from tessera.settings import SourceConfig

__all__ = ["Source", "make_source"]


def make_source(config: SourceConfig) -> Source:
    """The reader for this source's kind."""
    if config.kind == "beir":
        from flows.pipeline.sources.directory import BeirSource

        return BeirSource(config)
    if config.kind == "images":
        from flows.pipeline.sources.images import ImageSource

        return ImageSource(config)
    from flows.pipeline.sources.directory import DirectorySource

    return DirectorySource(config)
