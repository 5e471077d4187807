"""A serving process settles its heap once it is ready, so full collections stay short."""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import REPO

_CHILD = """
import gc, weakref
import tessera.service.app  # what a serving process holds: FastAPI, the engine, the model code
before = len(gc.get_objects())
from tessera.service.startup import settle_heap
settle_heap()
after = len(gc.get_objects())

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle made after start-up: still the collector's to free
gone = weakref.ref(a)
del a, b
gc.collect()
print(before, after, gc.get_freeze_count(), gone() is None)
"""


def test_settling_the_heap_leaves_full_collections_little_to_walk() -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    before, after, frozen = (int(v) for v in out[:3])
    assert before > 50_000 and after < before // 20 and frozen > before // 2
    assert out[3] == "True"
