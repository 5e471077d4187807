"""Opening a collection's shard. One process writes a shard at a time (a file lock per
collection, holding the writer's pid); on a home this process cannot write (a read-only mount),
readers open a private copy of the shard instead (the engine writes on open)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tessera.core.errors import StoreLockedError, VectorStoreError
from tessera.core.fs import HeldLock, writable
from tessera.store.base import HnswParams
from tessera.store.edge.configs import open_config
from tessera.store.edge.records import Records
from tessera.store.edge.requests import qe
from tessera.store.edge.space import require_space

logger = logging.getLogger("tessera.store.edge")  # the package's: log lines name the store
T = TypeVar("T")


class Shards:
    """The shards this store has open, the writer locks it holds, its private copies."""

    def __init__(self, root: Path, lock_timeout: float, search_threads: int | None,
                 records: Records) -> None:
        self.root = root
        self.lock_timeout = lock_timeout
        # The engine's search pool size when opening a sealed shard; None: the engine's default.
        # The open writes it into the shard's config, so only readers of a private copy set it.
        self.search_threads = search_threads
        self.records = records
        self.registry = records.registry
        self.opened: dict[str, Any] = {}
        self.locks: dict[str, HeldLock] = {}
        self.copies: dict[str, Path] = {}
        self.dirty: set[str] = set()  # changed since opened: closing them publishes a generation
        self.read_only = self.root.exists() and not writable(self.root)

    def call(self, name: str, what: str, fn: Callable[..., T], *args: Any) -> T:
        """One engine call; its plain exceptions become ours (a retry would fail the same way)."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the engine raises plain Exception/ValueError
            raise VectorStoreError(f"Qdrant Edge could not {what} in collection {name!r} "
                                   f"({self.registry.folder(name)}): {exc}") from exc

    def lock(self, name: str) -> None:
        """Take the collection's writer lock (kept until unlock; waits up to lock_timeout)."""
        def busy(holder: str, waited: float) -> StoreLockedError:
            return StoreLockedError(
                f"the embedded store at {self.registry.folder(name)} is in use by another "
                f"Tessera process (pid {holder}) and did not come free within {waited:.0f} s; "
                "wait for it to finish, or raise store.lock_timeout")

        if name not in self.locks:
            self.locks[name] = HeldLock(self.registry.folder(name) / ".lock", self.lock_timeout,
                                        busy)

    def unlock(self, name: str) -> None:
        """Release the collection's writer lock, if held."""
        lock = self.locks.pop(name, None)
        if lock is not None:
            lock.release()

    def get(self, name: str) -> Any:
        """The collection's open shard, opened (locked, or a private copy) on first use."""
        name = self.registry.real_name(name)
        shard = self.opened.get(name)
        if shard is not None:
            return shard
        if self.records.get(name) is None:
            raise VectorStoreError(f"collection {name!r} does not exist in {self.root}; "
                                   "run `tessera ingest` first")
        folder = self.registry.folder(name) / "shard"
        if self.read_only:
            folder = self._private_copy(name)
        else:
            self.lock(name)
        try:
            # Loading fills the open WAL segment's preallocated blocks.
            require_space(self.root, folder / "wal", 0, f"opening collection {name!r}")
            shard = self.load(name, folder, "open the shard")
        except BaseException:
            self.unlock(name)
            raise
        self.opened[name] = shard
        return shard

    def load(self, name: str, folder: Path, what: str, hnsw: HnswParams | None = None) -> Any:
        """Open the shard in `folder` with the config _load_config gives."""
        return self.call(name, what, qe().EdgeShard.load, str(folder),
                         self._load_config(name, hnsw))

    def _load_config(self, name: str, hnsw: HnswParams | None = None) -> Any:
        """None (the shard's own config), or its vectors as created with another search pool
        size or HNSW graph (the engine then records the change in the shard)."""
        if (self.search_threads is None and hnsw is None) or not self.records.sealing(name):
            return None
        return open_config(self.records.info(name), hnsw, self.search_threads)

    def _private_copy(self, name: str) -> Path:
        """A copy of a read-only shard in a temp folder, for readers (the engine writes on open)."""
        tmp = Path(tempfile.mkdtemp(prefix=f"tessera-ro-{name}-"))
        self.copies[name] = tmp
        logger.warning("%s is read-only: searching a private copy of collection %r in %s",
                       self.root, name, tmp)
        target = tmp / "shard"
        shutil.copytree(self.registry.folder(name) / "shard", target)
        return target

    def close_shard(self, name: str) -> None:
        """Flush and close the shard if open (its lock stays as it is)."""
        shard = self.opened.pop(name, None)
        if shard is not None:
            shard.flush()
            shard.close()

    def drop_copies(self) -> None:
        """Delete the private copies (their shards closed)."""
        for copy in self.copies.values():
            shutil.rmtree(copy, ignore_errors=True)
        self.copies.clear()
