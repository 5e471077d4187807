"""What needs no re-indexing, decided here only, and the one write it still gets.

Two tests, the cheap one first. A file whose (size, mtime_ns, inode), model and build are what the
diff state recorded when it was last fully indexed is not opened at all (`unchanged_files`, asked
by the feed: rsync's quick check). A document read from a file is unchanged when the index holds
every chunk of it from this content hash, model, chunking and sparse config
(`document_unchanged`, asked by the batch). Either way only its expiry moves (`refresh_expiry`),
as it does for a quarantined document's last good version that is kept, and, by filter, for a
whole source at the end of a run.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from tessera.core.types import Match
from tessera.ingest.points import Existing, stale_expiry
from tessera.ingest.state import DiffState, FileStat
from tessera.store import VectorStore

if TYPE_CHECKING:
    from tessera.ingest.context import IngestRun, Target


def unchanged_files(state: DiffState, stats: dict[str, FileStat], model_id: str, build: str,
                    verify: bool = False) -> set[str]:
    """The files not to read: those whose recorded stat, model and build (the file key: build
    key and captioner) equal these. None with `verify`, which trusts no recorded stat."""
    if verify:
        return set()
    recorded = state.recorded_files(list(stats))
    return {f for f, (stat, model, key) in recorded.items()
            if stat == stats[f] and (model, key) == (model_id, build)}


def document_unchanged(old: Existing | None, content_hash: str, model_id: str, chunking: str,
                       sparse: str = "none") -> bool:
    """True when the index holds every chunk of the document, from this content, model,
    chunking and sparse config (nothing to embed). A sparse-config change counts like a model
    change."""
    if (old is None or old.hashes != {content_hash} or old.models != {model_id}
            or old.chunkings != {chunking} or old.sparses != {sparse}
            or len(old.chunk_counts) != 1):
        return False
    (count,) = old.chunk_counts
    return set(old.ids_by_index) == set(range(count))


def refresh_expiry(run: IngestRun, store: VectorStore, target: Target,
                   where: list[str] | Match) -> None:
    """Give points that stay as they are the target's expiry: these point ids, or the points
    `where` matches whose expiry is not already it (by filter, one range at a time: the range
    index finds them without a scan). Each store call is one timed `refresh` step."""
    name = target.source.name
    if isinstance(where, Match):
        for stale in stale_expiry(target.expires_at):
            run.timed(name, "refresh", 0, "refresh-expiry", store.set_payload_where,
                      target.collection, replace(where, ranges=(*where.ranges, stale)),
                      {"expires_at": target.expires_at}, io=True)
    elif where:
        run.timed(name, "refresh", len(where), "refresh-expiry", store.set_payload,
                  target.collection, where, {"expires_at": target.expires_at}, io=True)
