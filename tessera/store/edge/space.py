"""The disk guard. The engine preallocates sparse files (32 MiB WAL segments, memory-mapped
vector and payload pages) and dies with SIGBUS when a write finds the disk full, so every open
and write first checks that the disk can hold what those files may still claim."""

from __future__ import annotations

from pathlib import Path

from tessera.core.errors import DiskSpaceError
from tessera.core.fs import MIB, allocated_bytes, free_bytes, sparse_bytes
from tessera.store.edge import tuning


def require_space(root: Path, folder: Path, extra: int, action: str) -> None:
    """Refuse, with a message, a write the disk could not hold (instead of a SIGBUS)."""
    need = (sparse_bytes(folder) if folder.exists() else 0) + extra
    free = free_bytes(folder)
    if free < need:
        raise DiskSpaceError(
            f"not enough free disk space for the embedded store at {root}: {action} "
            f"needs about {need / MIB:.0f} MiB free (Qdrant Edge preallocates 32 MiB WAL "
            f"segments and memory-mapped files and crashes if it cannot fill them), but "
            f"{free / MIB:.0f} MiB are free there. Free some space, or move TESSERA_HOME "
            "(or store.path) to a larger disk")


def write_need(incoming: int) -> int:
    """What one write of about `incoming` bytes may claim (the WAL grows a segment at a time)."""
    return 2 * tuning.WAL_SEGMENT + 2 * incoming


def rebuild_need(shard: Path) -> int:
    """What rebuilding a shard's sealed segments may claim: the optimizer writes each rebuilt
    segment before it drops the old one."""
    segments = allocated_bytes(shard / "segments")
    return 2 * tuning.WAL_SEGMENT + min(segments, 2 * tuning.MAX_SEGMENT_KB * 1024)


def seal_need(shard: Path, unsealed: int) -> int:
    """What sealing `unsealed` appended bytes may claim: the sealed copy of them, plus the sealed
    segments the optimizer may rewrite without their deleted points meanwhile (two at a time, as
    big as they are)."""
    rewrite = min(2 * tuning.MAX_SEGMENT_KB * 1024, allocated_bytes(shard / "segments"))
    return 2 * unsealed + 2 * tuning.WAL_SEGMENT + rewrite
