"""Duplicate ids across a whole file, found in flat memory: 16 bytes per record (a 64-bit hash of
its id and its line), however far apart the copies are."""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable

import numpy as np


def id_hash(doc_id: str) -> int:
    """A 64-bit key for a document id (a collision between two ids is ~1 in 2^64)."""
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def find_duplicates(keys: Iterable[tuple[str, int]]) -> dict[int, list[int]]:
    """For each id (by `id_hash`) given more than once: the lines of all its copies, in order."""
    hashes, lines = array("q"), array("q")
    for doc_id, line in keys:
        hashes.append(id_hash(doc_id))
        lines.append(line)
    if len(hashes) < 2:
        return {}
    h = np.frombuffer(hashes, dtype=np.int64)
    ordered = np.sort(h)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if not repeated.size:
        return {}
    where = np.nonzero(np.isin(h, repeated))[0]
    line_of = np.frombuffer(lines, dtype=np.int64)
    out: dict[int, list[int]] = {}
    for i in where:
        out.setdefault(int(h[i]), []).append(int(line_of[i]))
    return out
