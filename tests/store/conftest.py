"""Every store test runs on both stores: the embedded Qdrant Edge and a Qdrant server's client
(qdrant-client's local mode standing in for the server, which cannot run here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.core.settings import StoreConfig
from tessera.store.base import VectorStore
from tessera.store.edge import EdgeStore
from tessera.store.server import ServerStore


@pytest.fixture(params=["edge", "qdrant-local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    s: VectorStore
    if request.param == "edge":
        s = EdgeStore(tmp_path / "edge")
    else:
        s = ServerStore(StoreConfig(kind="qdrant", path=tmp_path / "local"))
    yield s
    s.close()
