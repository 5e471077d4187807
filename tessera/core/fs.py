"""Small filesystem helpers every layer shares: one file lock, one atomic write, one file hash,
and the free-space arithmetic the embedded store needs."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tessera.core.errors import PipelineError

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


class LockBusy(PipelineError):
    """Another process held a lock for longer than we were willing to wait."""

    def __init__(self, message: str, holder: str) -> None:
        self.holder = holder
        super().__init__(message)


class HeldLock:
    """An exclusive lock on a file (flock through `filelock`), held until `release`.

    The holder writes its pid into the lock file, so whoever waits can say who holds it.
    `busy(holder_pid, waited_seconds)` builds the error raised when `timeout` runs out.
    """

    def __init__(self, path: Path, timeout: float,
                 busy: Callable[[str, float], PipelineError] | None = None) -> None:
        from filelock import FileLock, Timeout

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path), timeout=timeout, thread_local=False,
                              on_acquired=_write_pid)
        try:
            self._lock.acquire()
        except Timeout:
            holder = _holder(self.path)
            raise (busy(holder, timeout) if busy else LockBusy(
                f"{self.path} is locked by pid {holder}; waited {timeout:.0f} s", holder)) from None

    def release(self) -> None:
        """Let the next process in (idempotent)."""
        if self._lock.is_locked:
            self._lock.release()


@contextmanager
def locked(path: Path, timeout: float,
           busy: Callable[[str, float], PipelineError] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the length of the block."""
    lock = HeldLock(path, timeout, busy)
    try:
        yield
    finally:
        lock.release()


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)


def _holder(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write a file so readers see the old content or the new, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_with(path: Path, write: Callable[[Path], object]) -> Path:
    """Let `write` fill a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def replace_dir(fill: Callable[[Path], object], target: Path) -> Path:
    """Build a directory in a temporary sibling with `fill`, then swap it in for `target`.

    Readers see the old directory or the new one; a failure leaves the old one untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fill(tmp)
        old = None
        if target.exists():
            old = target.parent / f".old-{target.name}-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def writable(path: Path) -> bool:
    """True when `path` (or the nearest folder above it that exists) can be written here."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.access(path, os.W_OK)


def free_bytes(path: Path) -> int:
    """Bytes free for this user on the filesystem holding `path` (or its nearest parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def allocated_bytes(folder: Path) -> int:
    """Disk blocks the files under `folder` hold, in bytes (0 for a folder that is not there)."""
    return sum(p.stat().st_blocks * 512 for p in Path(folder).rglob("*") if p.is_file())


def sparse_bytes(folder: Path, pattern: str = "*") -> int:
    """Bytes files under `folder` may still claim: apparent size minus blocks allocated.

    Memory-mapped and preallocated files (Qdrant's WAL segments, vector chunks) are sparse: they
    take disk blocks only as they are written, and a write that finds the disk full dies with
    SIGBUS instead of an error. This is the most they can still grow by.
    """
    total = 0
    for path in Path(folder).rglob(pattern):
        try:
            st = path.stat()
        except OSError:
            continue
        if path.is_file():
            total += max(0, st.st_size - st.st_blocks * 512)
    return total
