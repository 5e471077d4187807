"""The sizes and thresholds the embedded store writes, flushes and seals by.

The parts read them as `tuning.NAME` when they run, not at import, so a test that lowers one
here (`monkeypatch.setattr(tuning, "SEAL_BYTES", 16 * 1024)`) seals tiny shards.
"""

from __future__ import annotations

from tessera.core.fs import MIB

SCROLL_PAGE = 2048
WAL_SEGMENT = 32 * MIB
# What a new shard's preallocated files may claim once written: two WAL segments, the first
# vector chunk and payload page (32 MiB each), and the id and deletion trackers.
NEW_SHARD_BYTES = 4 * 32 * MIB + 4 * MIB
# A writer flushes a shard after about this much written (estimated from the updates), not only
# at close: the WAL is then truncated as it goes, instead of holding a whole first ingest (34
# closed 32 MiB segments at 400,000 points, all mmap'd), and the appendable segment's memory
# grows ~27% slower (benchmarks/SCALE.md).
FLUSH_BYTES = 32 * MIB
# Sealing. The engine holds the segment it appends to in memory (~1.1 KB a point of payload
# indexes, id tracking and sparse postings, on top of its vectors' pages): a million-point shard
# left as one appendable segment took 1.7 GB of anonymous memory on every open. After about
# SEAL_BYTES written, a writer runs the engine's optimizer, which turns the appendable segment
# into a sealed one whose vectors, payload, indexes and id tracker are memory-mapped (Cold: read
# on demand), then reopens the shard so that the pages it wrote are no longer mapped.
SEAL_BYTES = 64 * MIB
# What the optimizer seals: an appendable segment over this much vector data (KB) (~13,000
# 384-d vectors); sealed segments merge up to MAX_SEGMENT_KB. Each sealed segment gets the
# collection's HNSW graph (store.hnsw_m; 0: none, searches scan its vectors).
INDEXING_THRESHOLD_KB = 20_000
MAX_SEGMENT_KB = 64 * 1024
# Below this much vector data (KB) a segment is searched by scanning even when it has a graph.
FULL_SCAN_KB = 10_000
# A sealed segment is rewritten without its deleted points once this share of them is deleted.
# The engine's default, 0.2, rewrote every segment at almost every seal of a whole-source expiry
# refresh (ids are hashes, so each page of moved points touches every segment).
DELETED_THRESHOLD = 0.5
# A payload update moves a point out of a sealed segment (its vector and payload are written to
# the appendable segment): what sealing counts for it.
MOVED_POINT_BYTES = 2048
