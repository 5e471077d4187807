"""Readers that never wait for an ingest: private snapshots of the embedded store's shards.

Qdrant Edge has one writer per shard, and the writer (an ingest, a prune) holds the shard's lock
for its whole run. A long-lived reader (the API, the MCP server) therefore does not open the live
shard. It takes a snapshot, holding the lock only while it does (the writer has closed and flushed
the shard), and searches that. A snapshot shares the sealed segments' write-once files with the
shard (hard links) and copies the rest (`tessera.service.shard_copy`), so its time and disk grow
with what the writers changed, not with the index. Each writer that changed a shard rewrites its
generation marker as it closes it (`EdgeStore.generation`); the reader looks at the marker every
`api.snapshot_check_seconds` and, when it moved and the lock is free, takes a fresh copy in a
background thread and swaps it in. Searches in flight finish on the copy they started on.

What a reader sees mid-ingest: the index as the last finished write left it. A new snapshot
appears within a check interval of the writer closing the shard (plus the copy's time).

Across an alias switch (`tessera migrate`, a rollback) the service keeps searching the collection
it served before until `ready` has a snapshot of the new one: the migration holds the new
collection open for a moment after it moves the alias.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tessera.core.errors import DiskSpaceError, StoreLockedError
from tessera.core.fs import MIB, HeldLock, LockBusy, free_bytes, writable
from tessera.service.shard_copy import (
    ShardCopy,
    changed_in_place,
    copy_bytes_needed,
    shareable,
    snapshot_shard,
)
from tessera.store.edge import LAYOUT_FILES, EdgeStore
from tessera.store.edge.layout import GENERATION

logger = logging.getLogger(__name__)


class _Snapshot:
    """One snapshot of one collection, with a count of the searches using it."""

    def __init__(self, name: str, generation: str, root: Path, copy: ShardCopy,
                 search_threads: int | None = None) -> None:
        self.name, self.generation, self.root, self.copy = name, generation, root, copy
        self.store = EdgeStore(root, search_threads=search_threads)
        self.store._shard(name)  # open now, in the background, not on the first search
        self._users = 0
        self._retired = False
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self._users += 1

    def leave(self) -> None:
        with self._lock:
            self._users -= 1
            done = self._retired and self._users == 0
        if done:
            self._close()

    def retire(self) -> None:
        with self._lock:
            self._retired = True
            done = self._users == 0
        if done:
            self._close()

    def _close(self) -> None:
        self.store.close()
        shutil.rmtree(self.root, ignore_errors=True)


class SnapshotReader:
    """Read access to the embedded store at `root` through private snapshots under `workdir`."""

    def __init__(self, root: Path, workdir: Path | None = None, check_seconds: float = 1.0,
                 search_threads: int | None = None) -> None:
        self.live = EdgeStore(root)  # metadata only (collections, aliases, generations)
        self.root = Path(root)
        self.check_seconds = check_seconds
        self.search_threads = search_threads
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tessera-snapshots-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._snaps: dict[str, _Snapshot] = {}
        self._checked: dict[str, float] = {}
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()
        self.refreshes = 0  # snapshots taken after the first, for tests and metrics
        self.torn = 0  # snapshots found sharing a file a writer changed in place (never, so far)
        self.last_take: dict[str, Any] = {}  # the last snapshot's lock time, take time and bytes

    def _take(self, name: str) -> _Snapshot:
        """Snapshot the shard while holding its lock (so no writer has it open), then open it."""
        folder = self.root / name
        started = time.perf_counter()
        lock = None
        if writable(folder):  # a read-only store has no writer to wait for
            try:
                lock = HeldLock(folder / ".lock", 0)
            except LockBusy as exc:
                raise StoreLockedError(
                    f"collection {name!r} is being written by another process (pid {exc.holder}) "
                    "and this reader has no snapshot of it yet; searches work once that write "
                    "finishes") from None
        try:
            self._check_torn(name)
            generation = self.live.generation(name)
            target, copy = self._copy(name, folder)
        finally:
            if lock is not None:
                lock.release()
        locked = time.perf_counter() - started
        try:
            snap = _Snapshot(name, generation, target, copy, self.search_threads)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        self.last_take = {"lock_s": locked, "take_s": time.perf_counter() - started,
                          "copied_bytes": copy.copied_bytes, "linked_bytes": copy.linked_bytes,
                          "copied_files": copy.copied_files, "linked_files": len(copy.linked)}
        return snap

    def _copy(self, name: str, folder: Path) -> tuple[Path, ShardCopy]:
        """The collection's files under a new folder of the workdir (the shard as a snapshot)."""
        share = shareable(folder / "shard")
        need = copy_bytes_needed(folder / "shard", share) + 64 * MIB
        if free_bytes(self.workdir) < need:
            raise DiskSpaceError(
                f"a search snapshot of collection {name!r} needs about {need / MIB:.0f} MiB "
                f"free in {self.workdir}; free some space there")
        target = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
        try:
            (target / name).mkdir()
            for file in ("tessera.json", GENERATION, *LAYOUT_FILES):
                if (folder / file).exists():
                    shutil.copy2(folder / file, target / name / file)
            return target, snapshot_shard(folder / "shard", target / name / "shard", share)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise

    def _check_torn(self, name: str) -> None:
        """Under the lock, before a fresh snapshot: did a writer write to a file the current
        snapshot shares with the shard? (It must not; the fresh one replaces it at once.)"""
        with self._lock:
            snap = self._snaps.get(name)
        changed = changed_in_place(snap.copy) if snap is not None else []
        if changed:
            self.torn += 1
            logger.error("collection %r: %d file(s) the search snapshot shares with the shard "
                         "were changed in place by a writer (%s); replacing the snapshot now",
                         name, len(changed), ", ".join(sorted(changed)[:3]))

    def _refresh(self, name: str) -> None:
        try:
            fresh = self._take(name)
        except StoreLockedError:
            return  # a writer took the shard again first; the next check tries again
        except Exception:  # noqa: BLE001 - keep serving the old snapshot, say why
            logger.exception("could not take a fresh snapshot of collection %r", name)
            return
        finally:
            with self._lock:
                self._refreshing.discard(name)
        with self._lock:
            old = self._snaps.get(name)
            self._snaps[name] = fresh
            self.refreshes += 1
        if old is not None:
            old.retire()
        logger.info("searching a fresh snapshot of collection %r (generation %s)", name,
                    fresh.generation)

    def ready(self, name: str) -> bool:
        """Whether `name` has a snapshot to search now; if not, one is taken in the background
        (an alias just moved to a collection its writer still holds: search the old one meanwhile)."""
        with self._lock:
            if name in self._snaps:
                return True
        self._in_background(name, self._take_ahead)
        return False

    def _in_background(self, name: str, work: Callable[[str], None]) -> None:
        """Run `work(name)` on a thread of its own, unless one for `name` is already running."""
        with self._lock:
            start = name not in self._refreshing
            self._refreshing.add(name)
        if start:
            threading.Thread(target=work, args=(name,), daemon=True,
                             name=f"tessera-snapshot-{name}").start()

    def _take_ahead(self, name: str) -> None:
        snap = None
        try:
            snap = self._take(name)
        except StoreLockedError:
            pass  # the writer still holds it; the next search asks again
        except Exception:  # noqa: BLE001 - the caller keeps searching the old one, say why
            logger.exception("could not take a snapshot of collection %r", name)
        with self._lock:
            self._refreshing.discard(name)
            if snap is not None and name not in self._snaps:
                self._snaps[name], snap = snap, None
        if snap is not None:  # a search took one meanwhile
            snap.retire()

    def _current(self, name: str) -> _Snapshot:
        now = time.monotonic()
        with self._lock:
            snap = self._snaps.get(name)
            due = now - self._checked.get(name, 0.0) >= self.check_seconds
            if due:
                self._checked[name] = now
        if snap is None:
            snap = self._take(name)
            with self._lock:
                if name in self._snaps:  # another thread took one meanwhile
                    snap.retire()
                    snap = self._snaps[name]
                else:
                    self._snaps[name] = snap
        elif due and self.live.generation(name) != snap.generation:
            self._in_background(name, self._refresh)
        return snap

    @contextmanager
    def reading(self, name: str) -> Iterator[EdgeStore]:
        """The store to search `name` in; the snapshot stays open until the block ends."""
        while True:
            snap = self._current(name)
            snap.enter()
            if not snap._retired:
                break
            snap.leave()  # swapped out between the lookup and now: take the new one
        try:
            yield snap.store
        finally:
            snap.leave()

    def generation(self, name: str) -> str | None:
        """The generation of the snapshot being searched (None before the first)."""
        snap = self._snaps.get(name)
        return snap.generation if snap else None

    def close(self) -> None:
        """Close every snapshot and delete the copies."""
        with self._lock:
            snaps = list(self._snaps.values())
            self._snaps.clear()
        for snap in snaps:
            snap.retire()
        shutil.rmtree(self.workdir, ignore_errors=True)
