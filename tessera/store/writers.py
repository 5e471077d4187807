"""The writer section of an alias: ingests share it, an alias switch holds it alone.

An ingest into an alias holds the section shared for its whole run, so several ingests (of
different sources) still run at once; a migration's catch-up, completeness check and switch hold
it exclusively, so no ingest writes the old collection after the check, and an ingest that starts
after the switch resolves the alias to the new one. The lock is an flock on a file under the
store's folder (Edge) or TESSERA_HOME (server): it covers the processes of one host, which is
where an embedded store can be written from at all. With a Qdrant server written from several
hosts, a write racing the switch on another host lands in the previous collection; the next
ingest of that source brings the new one level (it reads the source, not the collection).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from tessera.core.errors import StoreLockedError
from tessera.core.settings import Settings

_POLL = 0.2
# Sections this process holds exclusively: a shared request for one of them (a migration's own
# catch-up ingest) is already covered.
_EXCLUSIVE_HERE: set[Path] = set()


def lock_dir(settings: Settings) -> Path:
    """Where the section lock files live: beside the Edge shards, or under the home."""
    if settings.store.kind == "edge" and not settings.store.in_memory:
        return Path(settings.store.path or settings.home / "qdrant") / ".writers"
    return settings.home / "locks"


class WriterSection:
    """A held writer section (flock); `release` lets the others in."""

    def __init__(self, path: Path, exclusive: bool, timeout: float) -> None:
        self.path = path
        self.exclusive = exclusive
        self._fd: int | None = None
        if not exclusive and path in _EXCLUSIVE_HERE:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StoreLockedError(
                        f"the writer section of {path.stem!r} is held by another Tessera process "
                        f"({'an ingest' if exclusive else 'a migration switching it'}) and did "
                        f"not come free within {timeout:.0f} s; wait for it, or raise "
                        "store.lock_timeout") from None
                time.sleep(_POLL)
        self._fd = fd
        if exclusive:
            _EXCLUSIVE_HERE.add(path)

    def release(self) -> None:
        """Give the section back (idempotent)."""
        if self._fd is None:
            return
        if self.exclusive:
            _EXCLUSIVE_HERE.discard(self.path)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WriterSection:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def writer_section(settings: Settings, alias: str, exclusive: bool) -> WriterSection:
    """Hold `alias`'s writer section: shared for an ingest, exclusive for a switch."""
    return WriterSection(lock_dir(settings) / f"{alias}.lock", exclusive,
                         settings.store.lock_timeout)
