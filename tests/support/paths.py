"""Where the suite's files are: the repository, the sample corpus, the bundled SciFact."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

# The nearest folder above holding pyproject.toml: the checkout this suite belongs to.
REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
EXAMPLES = REPO / "examples" / "corpus"
# BEIR SciFact kept in the repo (xz-compressed; see its README): a clone needs nothing beside it.
SCIFACT_PACKED = REPO / "tests" / "data" / "scifact"


@cache
def scifact_dir() -> Path:
    """The SciFact set as a plain BEIR folder, unpacked once per session into a temp dir."""
    from tessera.core.beir import unpack

    dest = Path(tempfile.mkdtemp(prefix="tessera-tests-scifact-"))
    atexit.register(shutil.rmtree, dest, True)
    return unpack(SCIFACT_PACKED, dest)
