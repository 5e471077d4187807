"""A snapshot of a closed shard that costs what changed: sealed data shared, the rest copied.

A sealed segment (every dense vector in immutable `Mmap` storage) is written once by the engine's
optimizer and then only read, except for a few small files a delete or an update rewrites in
place: the id tracker's deletion flags and versions, the payload store's page tracker and free
lists, and `segment.json`. Measured on qdrant-edge-py 0.9 (`tests/service/test_shard_copy.py`
keeps it true): of a sealed segment's files, only those change in place under upserts, deletes,
payload updates, seals and merges; the rest are never opened for writing again, and the optimizer
replaces a whole segment by writing a new folder and deleting the old one.

So a snapshot hard-links the large write-once files of sealed segments (the vectors, the HNSW
graph, the sparse inverted index, the payload pages and payload indexes, the id maps: the bulk of
a shard) and the WAL's closed segments, and copies everything else: the appendable segment, the
open WAL segment (sparsely: it is mostly holes), and the small in-place files. A link shares the
file's blocks, so the snapshot takes extra disk only for what it copies, and a writer that later
deletes the segment leaves the snapshot's link (and the blocks) in place until the snapshot is
dropped.

Where a link cannot be made (another file system, a file system without hard links) the file is
copied: the snapshot is then whole, as before, and one log line per snapshot says why.

Every linked file's identity (inode, size, modification time) is kept; `changed_in_place` tells
whether a writer wrote to one after all, which would mean the engine changed what it writes once
(the reader logs it as an error and takes a fresh snapshot at once).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

_BLOCK = 1024 * 1024
_ZEROS = bytes(_BLOCK)
# Files of a sealed segment that the engine writes once (paths relative to the segment folder).
WRITE_ONCE = re.compile(
    r"^(id_tracker\.(e2i|i2e)"
    r"|vector_storage-[^/]+/(matrix\.dat|store/page_\d+\.dat)"
    r"|vector_index-[^/]+/(graph\.bin|links[^/]*\.bin|inverted_index\.dat)"
    r"|payload_storage/page_\d+\.dat"
    r"|payload_index/.+/(point_to_values|values_to_points|data|data_block_index"
    r"|histogram_borders)\.bin)$")
# The shard's WAL: a segment is appended to while open, then closed (renamed) and only ever
# deleted once a flush has made it unneeded; the open one is copied.
CLOSED_WAL = re.compile(r"^closed-\d+$")
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
Identity = tuple[int, int, int]  # inode, size, mtime_ns


@dataclass
class ShardCopy:
    """What one snapshot took: the files it links (with their identities) and what it copied."""

    linked: dict[str, Identity] = field(default_factory=dict)
    linked_bytes: int = 0
    copied_bytes: int = 0  # disk blocks the copies hold
    copied_files: int = 0
    link_failed: str | None = None  # why links were not possible, when they were not


def sparse_copy(src: str, dst: str) -> None:
    """Copy a file's data regions only (SEEK_DATA/SEEK_HOLE), leaving holes where it has holes or
    whole blocks of zeros: the engine preallocates 32 MiB WAL segments and 1 MiB trackers that are
    mostly holes, which a plain copy (or one that reads 1 MiB at a time) would fill in."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fd, size, offset = fin.fileno(), os.fstat(fin.fileno()).st_size, 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: nothing but a hole to the end
                    raise
                break
            offset = os.lseek(fd, start, os.SEEK_HOLE)
            for at in range(start, offset, _BLOCK):
                block = os.pread(fd, min(_BLOCK, offset - at), at)
                if block != _ZEROS[:len(block)]:
                    os.pwrite(fout.fileno(), block, at)
        fout.truncate(size)
    shutil.copystat(src, dst)


def sealed_segments(shard: Path) -> set[str]:
    """The names of the segments under `shard` that are sealed (immutable vector storage)."""
    sealed = set()
    for meta in (shard / "segments").glob("*/segment.json"):
        try:
            vectors = json.loads(meta.read_text())["config"]["vector_data"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: copy the segment whole
        if vectors and all(v.get("storage_type") == "Mmap" for v in vectors.values()):
            sealed.add(meta.parent.name)
    return sealed


def shareable(shard: Path) -> set[Path]:
    """The files under `shard` a snapshot may link rather than copy."""
    out: set[Path] = {p for p in (shard / "wal").glob("closed-*") if CLOSED_WAL.match(p.name)}
    for name in sealed_segments(shard):
        segment = shard / "segments" / name
        out.update(p for p in segment.rglob("*")
                   if p.is_file() and WRITE_ONCE.match(p.relative_to(segment).as_posix()))
    return out


def copy_bytes_needed(shard: Path, share: set[Path]) -> int:
    """Disk blocks the files a snapshot copies hold now (what it needs free)."""
    return sum(p.stat().st_blocks * 512 for p in shard.rglob("*")
               if p.is_file() and p not in share)


def snapshot_shard(src: Path, dst: Path, share: set[Path] | None = None) -> ShardCopy:
    """Make `dst` a snapshot of the closed shard `src`: write-once files (`share`, by default
    `shareable(src)`) linked, the rest copied."""
    share = shareable(src) if share is None else share
    done = ShardCopy()
    for folder, _, files in os.walk(src):
        here = Path(folder)
        (dst / here.relative_to(src)).mkdir(parents=True, exist_ok=True)
        for name in files:
            path = here / name
            target = dst / path.relative_to(src)
            if path in share and done.link_failed is None and _link(path, target, done):
                continue
            sparse_copy(str(path), str(target))
            done.copied_files += 1
            done.copied_bytes += target.stat().st_blocks * 512
    return done


def _link(path: Path, target: Path, done: ShardCopy) -> bool:
    """Hard-link one file, recording its identity; False (and why, once) where links fail."""
    try:
        os.link(path, target)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        done.link_failed = f"{exc.strerror} ({path.parent} -> {target.parent})"
        logger.info("snapshots copy whole files: no hard link is possible here: %s",
                    done.link_failed)
        return False
    st = target.stat()
    done.linked[target.as_posix()] = (st.st_ino, st.st_size, st.st_mtime_ns)
    done.linked_bytes += st.st_blocks * 512
    return True


def changed_in_place(copy: ShardCopy) -> list[str]:
    """The linked files whose contents changed since the snapshot linked them (none, unless the
    engine wrote to a file it writes once)."""
    changed = []
    for path, (ino, size, mtime) in copy.linked.items():
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue  # the snapshot was dropped meanwhile
        if (st.st_ino, st.st_size, st.st_mtime_ns) != (ino, size, mtime):
            changed.append(path)
    return changed
