"""The diff state: what the index holds per document of one source, kept on disk (SQLite).

An ingest looks up each batch's documents here instead of holding the whole source's index in
memory, so its memory does not grow with the source. One file per (collection, source):
`TESSERA_HOME/state/<collection>/<source>.sqlite`, with

- `docs`: doc id -> content hash, model, chunking, chunk count, expiry, the file it came from,
  and the run that last saw it. Point ids are not stored: they are derived
  (`point_id(collection, doc_id, chunk_index)` for each index below the chunk count).
- `files`: each fully indexed file's (size, mtime_ns, inode), so a re-run need not read it.

The index stays the source of truth. The state is trusted only when the last run that wrote it
finished (`status = clean`) and the number of points it recorded equals the index's count for the
source; otherwise (missing, unreadable, left open by a killed run, or disagreeing) it is rebuilt
from one paged scan of the index, and the run says so.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessera.core.errors import StoreLockedError
from tessera.core.fs import HeldLock
from tessera.core.types import Match, point_id
from tessera.ingest.points import Existing
from tessera.store import DIFF_FIELDS, VectorStore

logger = logging.getLogger(__name__)

STATE_VERSION = "2"  # 2: the chunking column holds build_key(chunking, sparse signature)
_PAGE = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS docs (
    doc_id TEXT PRIMARY KEY, file TEXT, uri TEXT, content_hash TEXT, model_id TEXT,
    chunking TEXT, chunk_count INTEGER NOT NULL, expires_at INTEGER, seen_run TEXT) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS docs_file ON docs (file);
CREATE TABLE IF NOT EXISTS files (
    file TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, model_id TEXT,
    chunking TEXT) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class FileStat:
    """What the quick check compares: a file's size, modification time (ns) and inode."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


def build_key(chunking: str, sparse: str) -> str:
    """How a document was built, as the state records it: the chunking signature and the sparse
    (BM25) config signature. A change of either re-embeds, as the payload diff does."""
    return f"{chunking}|{sparse}"


@dataclass(frozen=True)
class Row:
    """One document as the state records it."""

    doc_id: str
    file: str | None
    uri: str | None
    content_hash: str
    model_id: str
    chunking: str
    chunk_count: int
    expires_at: int | None = None


def state_path(home: Path, collection: str, source: str) -> Path:
    """Where the diff state of one source in one collection lives."""
    return Path(home) / "state" / collection / f"{source}.sqlite"


class DiffState:
    """One source's diff state, opened (and checked against the index) for one run."""

    def __init__(self, path: Path, collection: str, source: str, lock_timeout: float = 600.0):
        self.path = path
        self.collection = collection
        self.source = source
        self.path.parent.mkdir(parents=True, exist_ok=True)
        def busy(holder: str, waited: float) -> StoreLockedError:
            return StoreLockedError(
                f"source {source!r} of collection {collection!r} is being ingested by another "
                f"Tessera process (pid {holder}), and its diff state {path} did not come free "
                f"within {waited:.0f} s; wait for that run to finish, or raise store.lock_timeout")

        self._lock = HeldLock(path.with_suffix(".lock"), lock_timeout, busy)
        self._unreadable: str | None = None
        try:
            self.db = self._connect()
            self.db.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
            self._unreadable = f"the diff state file could not be read ({exc})"
            self._remove_files()
            self.db = self._connect()

    # ------------------------------------------------------------------ open / check / rebuild
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        return db

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, **values: str) -> None:
        self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def problem(self, indexed_points: int) -> str | None:
        """Why this state cannot be trusted against an index holding `indexed_points`, or None."""
        if self._unreadable:
            return self._unreadable
        status = self.meta("status")
        if status is None:
            return "no diff state on disk (first run, or the state file was removed)"
        if self.meta("version") != STATE_VERSION:
            return f"the diff state has format {self.meta('version')}, this release writes {STATE_VERSION}"
        if status == "stale":
            return str(self.meta("stale_reason"))
        if status != "clean":
            return f"the run that last wrote the diff state ({self.meta('run_id')}) did not finish"
        recorded = int(self.meta("points") or -1)
        if recorded != indexed_points:
            return (f"the diff state records {recorded:,} points for the source, the index holds "
                    f"{indexed_points:,}")
        return None

    def rebuild(self, store: VectorStore, reason: str) -> int:
        """Replace the state with what the index holds (one paged scan); returns documents."""
        self.db.close()
        self._remove_files()
        self.db = self._connect()
        db = self.db
        db.execute("CREATE TEMP TABLE pts (doc_id TEXT, idx INTEGER, pid TEXT, hash TEXT, "
                   "model TEXT, chunking TEXT, n INTEGER, path TEXT, uri TEXT, expires INTEGER)")
        fields = [*DIFF_FIELDS, "path", "uri", "expires_at"]
        page: list[tuple[Any, ...]] = []
        db.execute("BEGIN")
        for pid, p in store.scan(self.collection, Match(source=self.source), fields):
            page.append((str(p.get("doc_id")), int(p.get("chunk_index", -1)), pid,
                         p.get("content_hash"), p.get("model_id"),
                         build_key(p.get("chunking") or "", p.get("sparse") or "none"),
                         int(p.get("chunk_count", -1)), p.get("path"), p.get("uri"),
                         p.get("expires_at")))
            if len(page) >= _PAGE:
                db.executemany("INSERT INTO pts VALUES (?,?,?,?,?,?,?,?,?,?)", page)
                page = []
        db.executemany("INSERT INTO pts VALUES (?,?,?,?,?,?,?,?,?,?)", page)
        # A document is current only when its chunks agree and run 0..n-1; otherwise its hash is
        # left empty (it is embedded again) and its chunk count covers every index it has. Chunks
        # that disagree on their expiry record 0: the next sighting rewrites all of them.
        db.execute("""
            INSERT INTO docs (doc_id, file, uri, content_hash, model_id, chunking, chunk_count,
                              expires_at, seen_run)
            SELECT doc_id, max(path), max(uri),
                   CASE WHEN count(DISTINCT hash) = 1 AND count(DISTINCT model) = 1
                             AND count(DISTINCT chunking) = 1 AND count(DISTINCT n) = 1
                             AND min(idx) = 0 AND max(idx) = max(n) - 1
                             AND count(DISTINCT idx) = max(n) THEN max(hash) ELSE '' END,
                   max(model), max(chunking), max(max(idx) + 1, max(n)),
                   CASE WHEN min(expires) = max(expires) THEN min(expires) ELSE 0 END, NULL
            FROM pts GROUP BY doc_id""")
        docs = int(db.execute("SELECT count(*) FROM docs").fetchone()[0])
        points = int(db.execute("SELECT count(*) FROM pts").fetchone()[0])
        db.execute("DROP TABLE pts")
        self._set_meta(version=STATE_VERSION, status="clean", points=str(points), run_id="rebuild")
        db.execute("COMMIT")
        self._unreadable = None
        if reason:
            logger.warning("source %r: %s; rebuilt the diff state from the index (%d documents, "
                           "%d points)", self.source, reason, docs, points)
        return docs

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def begin_run(self, run_id: str) -> None:
        """Mark the state open: a run that dies before `finish_run` leaves it to be rebuilt."""
        self._set_meta(status="open", run_id=run_id)

    def mark_stale(self, reason: str) -> None:
        """Leave the state for the next ingest to rebuild from the index, saying why."""
        self._set_meta(status="stale", stale_reason=reason)

    def finish_run(self, points: int) -> None:
        """Mark the state clean, recording the index's point count for the source."""
        self._set_meta(status="clean", points=str(points))

    def close(self) -> None:
        """Close the file and release its lock."""
        try:
            self.db.close()
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ per batch
    def ids(self, doc_id: str, chunk_count: int) -> dict[int, str]:
        """The point ids of a document's chunks (derived, as the writer derives them)."""
        return {i: point_id(self.collection, doc_id, i) for i in range(chunk_count)}

    def lookup(self, doc_ids: Iterable[str]) -> dict[str, Existing]:
        """What the index holds for these documents (absent ids are not in the index)."""
        return {r.doc_id: Existing(hashes={r.content_hash}, models={r.model_id},
                                   chunkings={r.chunking.rpartition("|")[0]},
                                   sparses={r.chunking.rpartition("|")[2]},
                                   chunk_counts={r.chunk_count},
                                   ids_by_index=self.ids(r.doc_id, r.chunk_count),
                                   expiries={r.expires_at} if r.expires_at is not None else set())
                for r in self.rows(doc_ids) if r.chunk_count > 0}

    def rows(self, doc_ids: Iterable[str]) -> list[Row]:
        """The state's rows for these ids."""
        return [Row(r[0], r[1], r[2], r[3] or "", r[4] or "", r[5] or "", int(r[6]),
                    None if r[7] is None else int(r[7]))
                for r in self.db.execute(
                    "SELECT doc_id, file, uri, content_hash, model_id, chunking, chunk_count, "
                    "expires_at FROM docs WHERE doc_id IN (SELECT value FROM json_each(?))",
                    (_json(list(doc_ids)),))]

    def write_batch(self, run_id: str, model_id: str, chunking: str, expires_at: int,
                    indexed: list[tuple[str, str | None, str, str, int]], seen: list[str],
                    removed: list[str]) -> None:
        """One batch's outcome, in one transaction: documents (re)indexed as (doc_id, file, uri,
        hash, chunk count), seen unchanged (expiry refreshed), and removed from the index."""
        db = self.db
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(d, f, u, h, model_id, chunking, n, expires_at, run_id) for d, f, u, h, n in indexed])
        db.executemany("UPDATE docs SET seen_run = ?, expires_at = ? WHERE doc_id = ?",
                       [(run_id, expires_at, d) for d in seen])
        db.executemany("DELETE FROM docs WHERE doc_id = ?", [(d,) for d in removed])
        db.execute("COMMIT")

    # ------------------------------------------------------------------ files
    def recorded_files(self, files: list[str]) -> dict[str, tuple[FileStat, str, str]]:
        """(stat, model id, file key) recorded for each of these files that was fully indexed
        (tessera.ingest.unchanged compares them)."""
        return {file: (FileStat(size, mtime, inode), model, key)
                for file, size, mtime, inode, model, key in self.db.execute(
                    "SELECT file, size, mtime_ns, inode, model_id, chunking FROM files WHERE file "
                    "IN (SELECT value FROM json_each(?))", (_json(files),))}

    def docs_of_files(self, files: list[str], size: int
                      ) -> Iterator[list[tuple[str, int, str, int | None]]]:
        """(doc id, chunk count, hash, expiry) of the documents these files hold, `size` at a
        time."""
        after = ("", "")
        names = _json(files)
        while rows := self.db.execute(
                "SELECT file, doc_id, chunk_count, content_hash, expires_at FROM docs WHERE file IN (SELECT "
                "value FROM json_each(?)) AND chunk_count > 0 AND (file, doc_id) > (?, ?) "
                "ORDER BY file, doc_id LIMIT ?", (names, *after, size)).fetchall():
            after = (str(rows[-1][0]), str(rows[-1][1]))
            yield [(str(r[1]), int(r[2]), str(r[3]), None if r[4] is None else int(r[4]))
                   for r in rows]

    def record_files(self, stats: dict[str, FileStat], model_id: str, chunking: str) -> None:
        """Remember these files as fully indexed at this stat."""
        self.db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
                            [(f, s.size, s.mtime_ns, s.inode, model_id, chunking)
                             for f, s in stats.items()])

    def forget_files(self, files: Iterable[str]) -> None:
        """These files must be read again next run."""
        self.db.executemany("DELETE FROM files WHERE file = ?", [(f,) for f in files])

    # ------------------------------------------------------------------ end of source
    def unseen(self, run_id: str) -> Iterator[list[tuple[str, int]]]:
        """(doc id, chunk count) of the documents this run did not see, a page at a time (the
        caller may remove each page before asking for the next)."""
        after = ""
        while rows := self.db.execute(
                "SELECT doc_id, chunk_count FROM docs WHERE seen_run IS NOT ? AND doc_id > ? "
                "ORDER BY doc_id LIMIT ?", (run_id, after, _PAGE)).fetchall():
            after = str(rows[-1][0])
            yield [(str(r[0]), int(r[1])) for r in rows]

    def remove(self, doc_ids: list[str]) -> None:
        """Forget these documents (and make their files be read again)."""
        self.db.execute("BEGIN")
        self.db.execute("DELETE FROM files WHERE file IN (SELECT file FROM docs WHERE doc_id IN "
                        "(SELECT value FROM json_each(?)))", (_json(doc_ids),))
        self.db.executemany("DELETE FROM docs WHERE doc_id = ?", [(d,) for d in doc_ids])
        self.db.execute("COMMIT")

    def expire(self, now: int) -> int:
        """Forget the documents whose points expire at or before `now` (what prune deletes)."""
        self.db.execute("BEGIN")
        self.db.execute("DELETE FROM files WHERE file IN (SELECT file FROM docs WHERE "
                        "expires_at <= ?)", (now,))
        gone = self.db.execute("DELETE FROM docs WHERE expires_at <= ?", (now,)).rowcount
        self.db.execute("COMMIT")
        return int(gone)

    def count_points(self) -> int:
        """Points the state accounts for (the sum of its chunk counts)."""
        return int(self.db.execute("SELECT coalesce(sum(chunk_count), 0) FROM docs").fetchone()[0])


def _json(values: list[str]) -> str:
    import json

    return json.dumps(values)


def _each_state(home: Path, collection: str) -> Iterator[DiffState]:
    """Every source's diff state of the collection, opened (under its lock) one at a time."""
    folder = Path(home) / "state" / collection
    for path in sorted(folder.glob("*.sqlite")) if folder.exists() else []:
        state = DiffState(path, collection, path.stem)
        try:
            yield state
        finally:
            state.close()


def stale_states(home: Path, collection: str, reason: str) -> None:
    """Leave every source's state of the collection for the next ingest to rebuild from the index:
    something (a sparse backfill) rewrote what the states record, behind their back."""
    for state in _each_state(home, collection):
        state.mark_stale(reason)


def expire_states(home: Path, store: VectorStore, collection: str, now: int) -> None:
    """After prune deleted the points that expire at or before `now`: each source's state forgets
    the same documents (and their files, so they are read again). A state that then accounts for
    exactly the points the index holds stays trusted; any other is left for the next ingest to
    rebuild from the index."""
    for state in _each_state(home, collection):
        points = store.count(collection, Match(source=state.source))
        if state.meta("status") != "clean":
            continue
        gone = state.expire(now)
        if state.count_points() == points:
            state.finish_run(points)
        else:
            state.mark_stale(f"after prune the diff state accounts for {state.count_points():,} "
                             f"points, the index holds {points:,}")
        logger.info("source %r: prune removed %d documents from the diff state", state.source,
                    gone)
