"""One source of an ingest, against its on-disk diff state: batches read in flat memory, unchanged
files skipped without reading them, and what left the source removed at the end. The per-batch
steps themselves are in tessera/ingest/batch.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from data_contracts import warm_up
from tessera.core import telemetry
from tessera.core.events import utcnow
from tessera.core.types import Document, Loaded, Match
from tessera.ingest.batch import process_batch
from tessera.ingest.context import Batch, BatchResult, Outcome, Target
from tessera.ingest.feed import Feed, FeedBatch
from tessera.ingest.state import DiffState, build_key, state_path
from tessera.ingest.unchanged import refresh_expiry
from tessera.sources import make_source
from tessera.store import VectorStore

if TYPE_CHECKING:
    from tessera.ingest.context import IngestRun

logger = logging.getLogger(__name__)

# Documents of unchanged files refreshed per payload update.
SKIP_PAGE = 4096


@dataclass
class SourcePass:
    """What one source's pass carries from batch to batch (all of it small)."""

    run: IngestRun
    store: VectorStore
    target: Target
    state: DiffState
    bad_files: set[str] = field(default_factory=set)  # files with a quarantined record
    total_files: int = 0  # the listing's length

    @property
    def refresh_at_end(self) -> bool:
        """A whole listing whose unseen documents are deleted: then the expiry of the unchanged
        files' documents is refreshed once, by filter, at the end of the run."""
        return self.target.items is None and self.target.source.delete_missing

    @property
    def name(self) -> str:
        return self.target.source.name


def open_state(run: IngestRun, store: VectorStore, target: Target) -> DiffState:
    """The source's diff state, checked against the index and rebuilt from it when they differ."""
    # The store first: an embedded store held by another process refuses with its own message.
    points = store.count(target.collection, Match(source=target.source.name))
    path = state_path(run.settings.home, target.collection, target.source.name)
    state = DiffState(path, target.collection, target.source.name,
                      run.settings.store.lock_timeout)
    problem = state.problem(points)
    if problem is not None and points == 0 and state.meta("status") is None:
        state.rebuild(store, "")  # a new source: nothing to rebuild, nothing to report
    elif problem is not None:
        run.timed(target.source.name, "diff", points, "rebuild-diff-state", state.rebuild, store,
                  problem, io=True)
        run.state_rebuilt.append(f"{target.source.name}: {problem}")
    return state


def ingest_from_state(run: IngestRun, store: VectorStore, target: Target, listing: list[str],
                      size: int) -> None:
    """Every batch of the source's listing, then the held-back documents, then removals."""
    state = open_state(run, store, target)
    sp = SourcePass(run, store, target, state, total_files=len(listing))
    try:
        state.begin_run(run.run_id)
        # Great Expectations imports in the background once a file must be read (while it is
        # read), not on a re-run that skips every file: that import is ~4 CPU s.
        feed = Feed(make_source(target.source), Path(target.source.path), listing, state,
                    target.spec.id, _file_key(run, target), size, run.verify, warm_up)
        files_before = 0
        while (fb := run.timed(sp.name, "load", 0, "load", feed.next_batch)) is not None:
            run.batch_files = (fb.files_done - files_before, len(fb.loaded) + len(fb.skipped))
            with telemetry.span("batch", source=sp.name, index=run.batch_index,
                                records=len(fb.loaded), files_skipped=len(fb.skipped)):
                _one_batch(sp, fb)
            run.files_done += fb.files_done - files_before
            files_before, run.batch_files = fb.files_done, (0, 0)
            run.report()
        if sp.refresh_at_end:
            _remove_missing(sp)
            _refresh_source(sp)
        points = store.count(target.collection, Match(source=sp.name))
        run.events.add("index_snapshots", collection=target.collection, source=sp.name,
                       points=points, recorded_at=utcnow())
        accounted = state.count_points()
        if accounted == points:
            state.finish_run(points)
        else:  # the next run rebuilds it from the index, and says why
            reason = (f"the last run's diff state accounted for {accounted:,} points, the index "
                      f"held {points:,}")
            state.mark_stale(reason)
            logger.warning("source %r: %s; the next run rebuilds the state from the index",
                           sp.name, reason)
    finally:
        state.close()


def _one_batch(sp: SourcePass, fb: FeedBatch) -> None:
    run = sp.run
    if fb.skipped:
        _skip_files(sp, fb.skipped)
    if fb.loaded:
        _process(sp, fb.loaded, fb.file_of, _backlog(fb, sp))
    done = {f: s for f, s in fb.finished.items() if s is not None and f not in sp.bad_files}
    sp.state.record_files(done, sp.target.spec.id, _file_key(run, sp.target))
    run.events.flush()  # per batch: memory stays flat, and a killed run leaves what it did
    run.batch_index += 1


def _file_key(run: IngestRun, t: Target) -> str:
    """What a file's recorded build must equal for the file to be skipped unread: the chunking,
    the sparse config and, for a source that captions with a model, the captioner and its
    generation settings (a new one re-captions every image)."""
    key = build_key(t.chunking, t.sparse_signature)
    mine = run.captions.for_source(t.source)
    return f"{key}|{run.captions.key(mine.spec)}" if mine is not None else key


def _backlog(fb: FeedBatch, sp: SourcePass) -> float:
    """This batch and the work left after it, in batches of this one's size (estimated from the
    files left): what `embedding.backend = "auto"` routes by, not this batch alone."""
    files_here = max(len(fb.finished) + len(fb.skipped), 1)
    return 1.0 + max(sp.total_files - fb.files_done, 0) / files_here


def _process(sp: SourcePass, loaded: list[Loaded], file_of: Mapping[str, str | None],
             remaining: float = 1.0) -> None:
    """The batch through check, diff, embed, write; then its result into the run and the diff
    state."""
    run, t = sp.run, sp.target
    docs = [x for x in loaded if isinstance(x, Document)]
    # Quarantined records too: their indexed version follows the source's on_invalid policy.
    existing = sp.state.lookup(x.doc_id for x in loaded)
    had = set(existing)
    batch = Batch(t, existing, remaining)
    try:
        result = process_batch(run, sp.store, batch, loaded)
    except BaseException:
        _account(run, t, batch.result())  # a failed run's summary counts what the batch did
        raise
    _account(run, t, result)
    uri = {d.doc_id: d.uri for d in docs}
    indexed, seen, removed = [], [], []
    for o in result.outcomes:
        doc_id = o.doc_id
        if o.outcome == "indexed":
            indexed.append((doc_id, file_of.get(doc_id), uri.get(doc_id, ""),
                            o.content_hash or "", int(o.chunk_count or 0)))
        elif o.outcome == "unchanged":
            seen.append(doc_id)
        elif o.outcome == "quarantined":
            sp.bad_files.add(file_of.get(doc_id) or "")
            if doc_id in existing:  # its indexed version was kept (on_invalid = keep_last_good)
                seen.append(doc_id)
            elif doc_id in had:
                removed.append(doc_id)
    sp.state.forget_files(f for f in sp.bad_files if f)
    sp.state.write_batch(run.run_id, t.spec.id, build_key(t.chunking, t.sparse_signature),
                         t.expires_at, indexed, seen, removed)


def _account(run: IngestRun, target: Target, result: BatchResult) -> None:
    """Add a batch's (or a page's) result to the run: a `documents_indexed` row per document,
    and the run's counts and progress (changed here only)."""
    for o in result.outcomes:
        run.events.add("documents_indexed", source=target.source.name,
                       collection=target.collection, doc_id=o.doc_id, outcome=o.outcome,
                       recorded_at=o.recorded_at, modality=o.modality,
                       content_hash=o.content_hash, chunk_count=o.chunk_count, bytes=o.bytes)
    c = run.counts
    c.seen += result.seen
    c.indexed += result.indexed
    c.unchanged += result.unchanged
    c.quarantined += result.quarantined
    c.deleted += result.count("deleted")
    c.chunks_embedded += result.chunks_embedded
    c.points_upserted += result.points_upserted
    c.sparse_written += result.sparse_written
    run.done += result.seen
    run.in_batch = (0, 0)  # now in the counts


def _skip_files(sp: SourcePass, files: list[str]) -> None:
    """Files whose stat is unchanged: their documents are unchanged; only their expiry moves
    (one payload update and one state write per page of documents, not per file)."""
    for page in sp.state.docs_of_files(files, SKIP_PAGE):
        _refresh_unchanged(sp, page)


def _refresh_source(sp: SourcePass) -> None:
    """Every point left of the source belongs to a document seen in this run: filtered updates
    set the expiry of those whose expiry is not already this run's (none, on a re-run inside the
    same expiry step; the range index finds them without a scan)."""
    refresh_expiry(sp.run, sp.store, sp.target, Match(source=sp.name))


def _refresh_unchanged(sp: SourcePass, page: list[tuple[str, int, str, int | None]]) -> None:
    run, t, state = sp.run, sp.target, sp.state
    if not sp.refresh_at_end:
        ids = [pid for doc_id, n, _, expires in page if expires != t.expires_at
               for pid in state.ids(doc_id, n).values()]
        refresh_expiry(run, sp.store, t, ids)
    same = tuple(Outcome(doc_id, "unchanged", content_hash, n)
                 for doc_id, n, content_hash, _ in page)
    _account(run, t, BatchResult(same, seen=len(page)))
    state.write_batch(run.run_id, t.spec.id, build_key(t.chunking, t.sparse_signature),
                      t.expires_at, [],
                      [d for d, _, _, _ in page], [])
    run.report()


def _remove_missing(sp: SourcePass) -> None:
    """Delete the points of documents this run did not see in the source's listing."""
    run, t, state = sp.run, sp.target, sp.state
    for page in state.unseen(run.run_id):
        ids = [pid for doc_id, n in page for pid in state.ids(doc_id, n).values()]
        if ids:
            run.timed(sp.name, "delete", len(ids), "delete-missing", sp.store.delete,
                      t.collection, ids, io=True)
        gone = tuple(Outcome(doc_id, "deleted", chunk_count=n) for doc_id, n in page if n > 0)
        _account(run, t, BatchResult(gone))
        state.remove([doc_id for doc_id, _ in page])
        run.events.flush()
