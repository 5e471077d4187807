"""The suite's data live in the repo: SciFact unpacks to the official bytes, and no test reads a
folder outside the repo (a user's clone has no `../shared`)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tessera.core import beir
from tessera.core.errors import SourceError
from tests.support.paths import REPO, SCIFACT_PACKED

# The official BEIR scifact.zip contents (tests/data/scifact/README.md).
SHA256 = {
    "corpus.jsonl": "dec31c8182f3d744c7d2c09423756fd1d17cbef75808db13ba01cc0aab4d1ac6",
    "queries.jsonl": "8ff84a7c903f722981cd8d595c022660140c51867b27608a6d4910db86080313",
    "qrels/test.tsv": "0864bb985e0ca2367ba217977e72004d549054b2b06666ed9d4825ac7c21284c",
    "qrels/train.tsv": "a53f2114831916c096b6c37d9e54da68cef4efdcdbd5ed46533601af972acf1d",
}


def test_scifact_unpacks_to_the_official_bytes(tmp_path: Path) -> None:
    """Every file of the unpacked set has the sha256 BEIR's own files have."""
    folder = beir.unpack(SCIFACT_PACKED, tmp_path / "scifact")
    for rel, digest in SHA256.items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest, rel
    queries, qrels = beir.load_test_set(folder)
    assert (len(queries), sum(len(d) for d in qrels.values())) == (300, 339)
    assert not list(folder.rglob("*.part")) and not (folder / "README.md").exists()


def test_unpack_keeps_finished_files_and_refuses_an_incomplete_set(tmp_path: Path) -> None:
    """A second unpack rewrites nothing it already wrote; a set missing a file is refused."""
    folder = beir.unpack(SCIFACT_PACKED, tmp_path / "scifact")
    corpus = folder / "corpus.jsonl"
    before = corpus.stat().st_mtime_ns
    assert beir.unpack(SCIFACT_PACKED, folder) == folder
    assert corpus.stat().st_mtime_ns == before
    partial = tmp_path / "partial"
    (partial / "qrels").mkdir(parents=True)
    (partial / "corpus.jsonl").write_text("{}\n")
    with pytest.raises(SourceError, match="queries.jsonl is missing"):
        beir.unpack(partial, tmp_path / "out")


def test_no_test_reads_a_folder_beside_the_repo() -> None:
    """The suite names no path outside the repo: `../shared` exists on developers' machines only."""
    outside = re.compile(r"""parents\[2\]|REPO\.parent|["']shared["']|shared/datasets""")
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in (REPO / "tests").rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if outside.search(line) and p.name != "test_datasets.py"]
    assert offenders == []
