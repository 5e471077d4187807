"""Images end to end: an images source and a text source share one CLIP space in one collection;
ingest, then text->image, image->image and modality-filtered search through the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flows.ingest import ingest_flow
from tessera.core.errors import ConfigError
from tests.support.images import png_bytes
from tests.support.tiny_clip import DIMENSION

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def config(make_config: Callable[..., Path], tmp_path: Path, clip_dir: Path) -> Path:
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(5):
        (pics / f"img{i}.png").write_bytes(png_bytes(i, size=(32, 32)))
    (pics / "img0-copy.png").write_bytes(png_bytes(0, size=(32, 32)))
    (pics / "img1.txt").write_text("caption for image one")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "note.txt").write_text("a short text note embedded in the image space")
    cfg = make_config(sources=[
        {"name": "pics", "kind": "images", "path": str(pics), "modality": "image",
         "collection": "media", "model": "tiny"},
        {"name": "notes", "path": str(notes), "collection": "media", "model": "tiny"},
    ])
    cfg.write_text(cfg.read_text() + (
        f'\n[models.tiny]\nid = "tests/tiny-clip"\nkind = "clip"\npath = "{clip_dir}"\n'
        f'dimension = {DIMENSION}\nmodalities = ["text", "image"]\nmax_length = 77\n'))
    return cfg


def _cli(*args: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    from tessera.cli.main import main

    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_images_and_text_share_one_clip_collection(config: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    summary = ingest_flow(config=str(config))
    assert summary["seen"] == 7 and summary["indexed"] == 7 and summary["quarantined"] == 0

    # image -> image: the query image and its exact copy are the two top hits.
    query = tmp_path / "query.png"
    query.write_bytes(png_bytes(0, size=(32, 32)))
    res = _cli("search", "--image", str(query), "-k", "3", "--collection", "media",
               "--modality", "image", "--config", str(config), capsys=capsys)["results"]
    assert {res[0]["doc_id"], res[1]["doc_id"]} == {"pics/img0.png", "pics/img0-copy.png"}
    assert res[0]["score"] == pytest.approx(1.0, abs=1e-4) and res[2]["score"] < res[1]["score"]
    assert all(r["modality"] == "image" for r in res)

    # text -> image, and image -> text: the modality filter holds both ways.
    text_hits = _cli("search", "caption for image one", "-k", "6", "--collection", "media", "--modality",
                     "image", "--config", str(config), capsys=capsys)["results"]
    assert text_hits and all(r["modality"] == "image" for r in text_hits)
    to_text = _cli("search", "--image", str(query), "--collection", "media", "--modality", "text",
                   "--config", str(config), capsys=capsys)["results"]
    assert [r["doc_id"] for r in to_text] == ["notes/note.txt"]
    captioned = next(r for r in text_hits if r["doc_id"] == "pics/img1.png")
    assert captioned["text"] == "caption for image one"


def test_an_images_source_with_a_text_only_model_is_refused(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    pics = tmp_path / "p"
    pics.mkdir()
    (pics / "a.png").write_bytes(png_bytes(1, size=(32, 32)))
    cfg = make_config(sources=[{"name": "pics", "kind": "images", "path": str(pics),
                                "modality": "image"}], name="text-only.toml")
    with pytest.raises(ConfigError, match="embeds text only"):
        ingest_flow(config=str(cfg))
