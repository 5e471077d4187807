"""Model cache: manifest hashes, the probe vector, atomic downloads, events, clear failures."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from flows.nightly import refresh_models_flow
from models.cache import (
    CacheReport,
    Manifest,
    cache_target,
    download_atomic,
    fill_modal_volume,
    find_manifest,
    local_loader,
    manifest_paths,
    refresh_model,
)
from models.registry import BUILTIN, resolve_model_path
from tessera.core.errors import EmbeddingError
from tessera.core.events import read_events
from tessera.core.settings import load_settings

pytestmark = pytest.mark.usefixtures("prefect_server")

SPEC = BUILTIN["all-minilm-l6-v2"]
BUNDLED = resolve_model_path(SPEC)




def _copy_model(target: Path) -> Path:
    shutil.copytree(BUNDLED, target, ignore=shutil.ignore_patterns("README.md"))
    return target


def test_bundled_model_matches_shipped_manifest(make_config: Callable[..., Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The package's files hash as recorded and embed the probe as recorded; an event says so."""
    from tessera.cli.main import main

    config = make_config()
    assert main(["refresh-models", "--json", "--config", str(config)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (model,) = out["models"]
    assert model["status"] == "ok" and model["model_id"] == SPEC.id
    assert model["revision"] == SPEC.revision and model["files"] >= 5
    assert model["probe_cosine"] >= 0.999 and model["load_seconds"] is not None
    (row,) = read_events(load_settings(config).events_dir, "model_cache_events")
    hashes = json.loads(row["files_sha256"])
    assert {"model.safetensors", "tokenizer.json", "vocab.txt", "config.json"} <= set(hashes)
    assert row["status"] == "ok" and row["revision"] == SPEC.revision


def test_tampered_cache_fails_with_the_file_named(make_config: Callable[..., Path]) -> None:
    """A cached copy whose tokenizer changed is a mismatch: the run fails and says which file."""
    config = make_config()
    settings = load_settings(config)
    copy = _copy_model(cache_target(SPEC, settings.model_cache_dir))  # preferred over the package
    with (copy / "tokenizer.json").open("a") as fh:
        fh.write(" ")
    with pytest.raises(EmbeddingError, match=r"tokenizer\.json has sha256 .* the manifest says"):
        refresh_models_flow(config=str(config))
    (row,) = read_events(settings.events_dir, "model_cache_events")
    assert row["status"] == "mismatch" and "tokenizer.json" in row["message"]
    assert row["path"] == str(copy)


def test_declared_model_records_then_checks_its_probe(make_config: Callable[..., Path],
                                                      tmp_path: Path) -> None:
    """No shipped manifest: the first run records one; a changed probe vector then fails."""
    copy = _copy_model(tmp_path / "mini")
    config = make_config(model="mini")
    config.write_text(config.read_text() + f'\n[models.mini]\nid = "local/mini"\npath = "{copy}"\n'
                      "dimension = 384\n")
    settings = load_settings(config)
    first = refresh_models_flow(config=str(config))
    assert first["models"][0]["status"] == "ok"
    assert "recorded" in first["models"][0]["message"]
    spec = replace(SPEC, name="mini", id="local/mini", revision="local", package=None, path=copy)
    recorded = manifest_paths(spec, settings.model_cache_dir)[1]
    assert find_manifest(spec, settings.model_cache_dir) is not None

    second = refresh_models_flow(config=str(config))
    assert second["models"][0]["probe_cosine"] >= 0.999

    manifest = Manifest.read(recorded)
    manifest.probe_vector = [-x for x in manifest.probe_vector]
    manifest.write(recorded)
    with pytest.raises(EmbeddingError, match=r"probe text at cosine -1\.0000"):
        refresh_models_flow(config=str(config))
    assert [r["status"] for r in read_events(settings.events_dir, "model_cache_events")].count("mismatch") == 1


def test_download_is_all_or_nothing(tmp_path: Path) -> None:
    """A failed fetch leaves no cache entry and no temp dir; a good one is renamed into place."""
    cache = tmp_path / "models"
    spec = replace(SPEC, name="hub-mini", id="org/hub-mini", revision="0123abcd", package=None)

    def broken(_spec: Any, target: Path) -> None:
        shutil.copy(BUNDLED / "config.json", target / "config.json")
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        download_atomic(spec, cache, broken)
    assert list(cache.iterdir()) == []

    def fetch(_spec: Any, target: Path) -> None:
        shutil.copytree(BUNDLED, target, dirs_exist_ok=True)

    report = refresh_model(spec, cache, loader=local_loader("cpu"), fetch=fetch)
    assert report.status == "downloaded", report.message
    assert report.path == str(cache_target(spec, cache))
    assert sorted(p.name for p in cache.iterdir()) == ["hub-mini", "manifests"]

    # A corrupted cache is fetched again and checked against the manifest recorded above.
    (cache_target(spec, cache) / "vocab.txt").write_text("broken")
    again = refresh_model(spec, cache, loader=local_loader("cpu"), fetch=fetch)
    assert again.status == "downloaded" and again.probe_cosine is not None
    assert again.probe_cosine >= 0.999
    # Offline (no fetcher), the same corruption is a mismatch naming the file.
    (cache_target(spec, cache) / "vocab.txt").write_text("broken")
    offline = refresh_model(spec, cache, loader=local_loader("cpu"))
    assert offline.failed and "vocab.txt" in offline.message


def test_missing_model_is_reported_not_loaded(tmp_path: Path) -> None:
    """A model with no files anywhere and no reachable source is `missing`, with what to do."""
    spec = BUILTIN["clip-vit-base-patch32"]

    def never(*_a: Any) -> Any:
        raise AssertionError("nothing to load")

    report = refresh_model(spec, tmp_path, loader=never)
    assert report.status == "missing" and "HF_HUB_OFFLINE=0" in report.message


def test_modal_volume_seam_maps_rows_to_reports() -> None:
    """refresh-models with the Modal backend goes through one seam: the app's fill function."""
    spec = BUILTIN["clip-vit-base-patch32"]
    calls: list[Any] = []

    def filler(specs: list[Any], config: Any) -> list[dict[str, Any]]:
        calls.append((specs, config))
        return [{"model_id": spec.id, "revision": spec.revision, "path": "vol:/models/clip",
                 "files_sha256": json.dumps({"model.safetensors": "ab"}), "status": "downloaded",
                 "message": "1 files", "probe_cosine": None, "load_seconds": 3.0}]

    (report,) = fill_modal_volume([spec], "cfg", filler=filler)
    assert isinstance(report, CacheReport) and calls == [([spec], "cfg")]
    assert (report.model, report.status, report.files_sha256) == (
        "clip-vit-base-patch32", "downloaded", {"model.safetensors": "ab"})
    assert report.event()["message"].startswith("Modal Volume:")


def test_modal_backend_without_credentials_fails_fast_and_clearly(
        make_config: Callable[..., Path]) -> None:
    """Backend "modal": an unreachable Volume fails the run (no retries: credentials are missing)."""
    config = make_config(embedding={"backend": "modal"})
    with pytest.raises(EmbeddingError, match=r"Modal Volume 'tessera-model-cache'.*modal token new"):
        refresh_models_flow(config=str(config))
    rows = read_events(load_settings(config).events_dir, "model_cache_events")
    assert [r["status"] for r in rows] == ["ok", "missing"]


def test_auto_backend_records_an_unreachable_volume_without_failing(
        make_config: Callable[..., Path]) -> None:
    """Backend "auto" embeds locally below the threshold, so the Volume is reported, not fatal."""
    config = make_config(embedding={"backend": "auto"})
    out = refresh_models_flow(config=str(config))
    assert [m["status"] for m in out["models"]] == ["ok", "missing"]


def test_openvino_runtime_is_verified_through_its_export(make_config: Callable[..., Path]) -> None:
    """With runtime = "openvino", the probe runs through the derived export, which it makes."""
    pytest.importorskip("openvino")
    config = make_config(embedding={"runtime": "openvino", "precision": "bf16"})
    out = refresh_models_flow(config=str(config))
    (model,) = out["models"]
    assert model["status"] == "ok" and model["probe_cosine"] >= 0.999
    export = load_settings(config).model_cache_dir / "derived" / SPEC.vector_name / "openvino"
    assert (export / "meta.json").exists()
