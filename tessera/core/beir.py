"""BEIR-layout sets (corpus.jsonl, queries.jsonl, qrels/<split>.tsv): the one reader of them.

Reads stream: the corpus is never held whole, so a set of any size costs one record of memory.
Query `metadata` (SciFact keeps its evidence labels there) is never read.
"""

from __future__ import annotations

import csv
import json
import lzma
import os
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tessera.core.errors import SourceError

LAYOUT = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")


def check_layout(path: Path, needed: tuple[str, ...] = LAYOUT) -> Path:
    """`path` as a BEIR folder, or a SourceError naming the missing file."""
    path = Path(path)
    for rel in needed:
        if not (path / rel).is_file():
            raise SourceError(f"{path} is not a BEIR-layout set: {rel} is missing "
                              f"(need {', '.join(needed)})")
    return path


def unpack(packed: Path, dest: Path) -> Path:
    """A plain BEIR folder at `dest` from one whose files may be xz-compressed (`name.xz`).

    Files already unpacked are kept; each is written beside its final name and renamed into
    place, so an interrupted unpack never leaves a truncated set that looks whole.
    """
    packed, dest = Path(packed), Path(dest)
    for src in sorted(p for p in packed.rglob("*") if p.is_file() and p.name != "README.md"):
        rel = src.relative_to(packed)
        target = dest / (rel.with_suffix("") if src.suffix == ".xz" else rel)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        opener = lzma.open if src.suffix == ".xz" else open
        with opener(src, "rb") as fin, open(partial, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        os.replace(partial, target)
    return check_layout(dest)


def read_corpus(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line of corpus.jsonl; raises on a bad line."""
    with (Path(path) / "corpus.jsonl").open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                yield lineno, json.loads(line)


def read_qrels(path: Path, split: str = "test") -> dict[str, dict[str, int]]:
    """query id -> {doc id: relevance} from qrels/<split>.tsv (header row skipped)."""
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with (Path(path) / "qrels" / f"{split}.tsv").open(encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels[row[0]][row[1]] = int(row[2])
    return dict(qrels)


def read_queries(path: Path, only: set[str] | None = None) -> dict[str, str]:
    """query id -> text (only the ids in `only`, when given)."""
    texts: dict[str, str] = {}
    with (Path(path) / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                qid = str(rec["_id"])
                if only is None or qid in only:
                    texts[qid] = str(rec["text"])
    return texts


def load_test_set(path: Path, split: str = "test") -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The judged queries of a split and their judgements; refuses a set missing a judged query."""
    check_layout(path)
    qrels = read_qrels(path, split)
    queries = read_queries(path, set(qrels))
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise SourceError(f"{path}: {len(missing)} judged queries are not in queries.jsonl "
                          f"(first: {missing[0]}); the set is incomplete")
    return queries, qrels
