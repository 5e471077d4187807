"""The records of a source's listing, in batches of a fixed number of records.

Files are read one at a time and their records streamed, so a batch never holds more than its
records, whatever the size of a file. A file whose (size, mtime_ns, inode) and model and chunking
are what the diff state recorded when it was last fully indexed is not opened at all (the quick
check, as rsync's, decided in tessera/ingest/unchanged.py): its documents come from the state.
`verify` reads every file.

Each file is stat'ed before it is read: a file changed while it was being read has a newer stat
than the one recorded, so the next run reads it again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tessera.core.types import Loaded, Quarantined
from tessera.ingest.state import DiffState, FileStat
from tessera.ingest.unchanged import unchanged_files
from tessera.sources.base import Source

STAT_PAGE = 1024
# A batch also closes at this much text, so a file of huge records cannot make a huge batch.
BATCH_BYTES = 32 * 1024 * 1024
# Unchanged files a batch may hold (their names only: ~6 MiB at this count).
SKIPPED_PER_BATCH = 65536


@dataclass
class FeedBatch:
    """One batch: the records read, the files skipped, and the files finished in it."""

    loaded: list[Loaded] = field(default_factory=list)
    file_of: dict[str, str] = field(default_factory=dict)  # doc id -> the file it came from
    skipped: list[str] = field(default_factory=list)  # unchanged files, not read
    finished: dict[str, FileStat | None] = field(default_factory=dict)  # read to their end
    files_done: int = 0  # files of the listing finished or skipped so far, this batch included
    text_bytes: int = 0

    def __len__(self) -> int:
        return len(self.loaded) + len(self.skipped)

    def full(self, size: int) -> bool:
        """`size` records read, or SKIPPED_PER_BATCH files skipped: a skipped file costs a stat,
        not a contract check or a model call, so a re-run after a 1% change fills its batches
        with the changed records instead of paying a batch's fixed costs per ~10 of them."""
        return (len(self.loaded) >= size or len(self.skipped) >= SKIPPED_PER_BATCH
                or self.text_bytes >= BATCH_BYTES)


class Feed:
    """Pulls batches of at most `size` records (and up to SKIPPED_PER_BATCH skipped files) from a
    source's listing."""

    def __init__(self, reader: Source, root: Path, listing: list[str], state: DiffState,
                 model_id: str, chunking: str, size: int, verify: bool = False,
                 before_read: Callable[[], None] | None = None) -> None:
        self.reader = reader
        self.before_read = before_read  # called before each file is opened
        self.root = root
        self.listing = listing
        self.state = state
        self.model_id, self.chunking = model_id, chunking
        self.size = size
        self.verify = verify
        self._next_file = 0
        self._stats: dict[str, FileStat | None] = {}
        self._unchanged: set[str] = set()
        self._open: tuple[str, object] | None = None  # (file, its record iterator)
        self._done = 0

    @property
    def total_files(self) -> int:
        return len(self.listing)

    def _stat_page(self) -> None:
        page = self.listing[self._next_file:self._next_file + STAT_PAGE]
        self._stats = {rel: _stat(self.root / rel) for rel in page}
        known = {rel: s for rel, s in self._stats.items() if s is not None}
        self._unchanged = unchanged_files(self.state, known, self.model_id, self.chunking,
                                          self.verify)

    def next_batch(self) -> FeedBatch | None:
        """The next batch, or None when the listing is done."""
        batch = FeedBatch()
        while not batch.full(self.size):
            if self._open is None:
                if self._next_file >= len(self.listing):
                    break
                if self._next_file % STAT_PAGE == 0 or self.listing[self._next_file] not in self._stats:
                    self._stat_page()
                rel = self.listing[self._next_file]
                self._next_file += 1
                bad_name = _bad_name(self.reader.config.name, rel, self.root)
                if bad_name is not None:
                    batch.loaded.append(bad_name)
                    batch.file_of[bad_name.doc_id] = bad_name.doc_id
                    self._done += 1
                    continue
                if rel in self._unchanged:
                    batch.skipped.append(rel)
                    self._done += 1
                    continue
                if self.before_read is not None:
                    self.before_read()
                self._open = (rel, iter(self.reader.load([rel])))
            rel, records = self._open
            for item in records:  # type: ignore[attr-defined]
                batch.loaded.append(item)
                batch.file_of[item.doc_id] = rel
                batch.text_bytes += getattr(item, "size_bytes", 0)
                if batch.full(self.size):
                    break
            else:
                batch.finished[rel] = self._stats.get(rel)
                self._open = None
                self._done += 1
        batch.files_done = self._done
        return batch if len(batch) or batch.finished else None


def _bad_name(source: str, rel: str, root: Path) -> Quarantined | None:
    """A quarantine row for a file whose name is not valid UTF-8 (ids, events and the diff state
    hold text), or None when the name is fine."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return Quarantined(
            source=source, doc_id=f"{source}/{shown}", uri=f"{root}/{shown}",
            reason=(f"{shown}: the file name is not valid UTF-8, so it cannot be an id in the "
                    "index; rename the file (e.g. `convmv -f latin1 -t utf8`)"),
            expectation="file_name_utf8")
    return None


def _stat(path: Path) -> FileStat | None:
    try:
        return FileStat.of(os.stat(path))
    except OSError:
        return None
