"""The caption cache: one caption per (image content hash, captioner, generation settings).

A caption is a pure function of those three, so it is made once: a re-ingest, a TTL refresh, a
second source holding the same photo, or a migration to another embedding model reads it here
instead of running the captioner again. The cache is a SQLite file under the home
(`<home>/captions/captions.sqlite`): several processes may read and write it at once, and a
write is all or nothing. Losing it costs only captioning time; it is never the only copy of
anything a user gave.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

_SCHEMA = """
create table if not exists captions (
    image_sha256 text not null,
    captioner text not null,
    caption text not null,
    created_at integer not null,
    primary key (image_sha256, captioner)
)
"""


def image_hash(data: bytes) -> str:
    """sha256 of the encoded image: the same bytes anywhere are the same image."""
    return hashlib.sha256(data).hexdigest()


class CaptionCache:
    """Captions by (image hash, captioner key); `captioner key` is `captioning.cache_key()`."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._timeout = timeout
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Two processes opening a new cache at once: switching it to WAL can fail at once
            # with "database is locked", without waiting for the busy timeout (1 in ~75 tries
            # with two threads). Try again until the timeout has passed.
            deadline = time.monotonic() + self._timeout
            while True:
                conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
                try:
                    conn.execute("pragma journal_mode=wal")
                    conn.execute(_SCHEMA)
                    break
                except sqlite3.OperationalError as exc:
                    conn.close()
                    busy = "locked" in str(exc) or "busy" in str(exc)
                    if not busy or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.01)
            self._conn = conn
        return self._conn

    def get_many(self, hashes: Iterable[str], captioner: str) -> dict[str, str]:
        """The cached captions among these image hashes (hash -> caption); a broken or
        unreadable cache reads as empty: the images are captioned again."""
        wanted = sorted(set(hashes))
        found: dict[str, str] = {}
        try:
            conn = self._connect()
            for start in range(0, len(wanted), 500):
                part = wanted[start:start + 500]
                marks = ",".join("?" * len(part))
                rows = conn.execute(
                    f"select image_sha256, caption from captions where captioner = ? "  # noqa: S608
                    f"and image_sha256 in ({marks})", [captioner, *part]).fetchall()
                found.update({str(h): str(c) for h, c in rows})
        except (sqlite3.Error, OSError) as exc:
            logger.warning("caption cache %s unreadable (%s); captioning again", self.path, exc)
        return found

    def put_many(self, captions: dict[str, str], captioner: str) -> bool:
        """Store captions (hash -> caption) in one transaction; False (and a warning) when the
        cache cannot be written, e.g. a full disk: the captions are still used this run."""
        if not captions:
            return True
        now = int(time.time())
        try:
            conn = self._connect()
            with conn:
                conn.execute("begin immediate")
                conn.executemany(
                    "insert or replace into captions values (?, ?, ?, ?)",
                    [(h, captioner, c, now) for h, c in captions.items()])
        except (sqlite3.Error, OSError) as exc:
            logger.warning("could not store %d caption(s) in %s (%s); they will be made again "
                           "next time", len(captions), self.path, exc)
            return False
        return True

    def count(self, captioner: str | None = None) -> int:
        """How many captions are cached (for one captioner key, or all)."""
        conn = self._connect()
        if captioner is None:
            return int(conn.execute("select count(*) from captions").fetchone()[0])
        return int(conn.execute("select count(*) from captions where captioner = ?",
                                [captioner]).fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def cache_path(home: Path) -> Path:
    """Where a home keeps its caption cache."""
    return Path(home) / "captions" / "captions.sqlite"
