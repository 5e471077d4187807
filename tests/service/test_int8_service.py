"""`api.query_precision = "int8"` in a serving process: queries go through an int8 copy of the
model calibrated on the collection's own chunks, and search answers as usual."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("nncf", reason="api.query_precision = 'int8' needs nncf")

from models.optimized import export_dir  # noqa: E402
from models.registry import BUILTIN  # noqa: E402
from tessera.core.settings import load_settings  # noqa: E402
from tessera.service.schemas import SearchRequest  # noqa: E402
from tessera.service.service import SearchService  # noqa: E402
from tessera.store.edge import EdgeStore  # noqa: E402
from tests.support import shards  # noqa: E402


def test_a_service_calibrates_int8_queries_on_its_collection(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = EdgeStore(home / "qdrant")
    store.create_collection(shards.collection())
    store.upsert("c", shards.points(range(40)))
    store.close()
    config = tmp_path / "tessera.toml"
    config.write_text(f'home = "{home}"\ncollection = "c"\n\n[embedding]\nruntime = "openvino"\n'
                      'device = "cpu"\n\n[api]\nquery_precision = "int8"\n', encoding="utf-8")
    settings = load_settings(config)
    service = SearchService(settings)
    try:
        answer, _ = service.search(SearchRequest(query="vitamin bone protein", k=3))
        assert len(answer["results"]) == 3
        embedder = service.embedder(service.info("c"))
        assert embedder.cache.namespace.endswith("(OpenVINOBackend int8 queries)")
    finally:
        service.close()
    made = export_dir(BUILTIN["all-minilm-l6-v2"], settings.model_cache_dir).parent
    meta = json.loads((made / "openvino-int8" / "meta.json").read_text())
    assert meta["calibration_texts"] == 40  # every chunk the collection held, up to 300
