"""Captions: a tiny BLIP built from a config, loaded the real way; the cache; the ingest step;
the payload contract; `tessera caption`; the Modal container (`.local()`) and client."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.caption_cache import CaptionCache, image_hash
from models.captioning import CaptionError, Generation, LocalCaptioner, cache_key, caption_each
from tessera.core.errors import ConfigError
from tessera.core.events import read_events
from tessera.core.settings import load_settings
from tessera.ingest import captioning as captions_step
from tessera.ingest.run import run_ingest
from tests.support.tiny_blip import build_tiny_blip, tiny_blip_spec, tiny_blip_toml

pytestmark = [pytest.mark.usefixtures("prefect_server"),
              pytest.mark.filterwarnings("ignore::UserWarning:transformers.*")]


def png(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def animated_gif() -> bytes:
    from PIL import Image

    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))


@pytest.fixture(scope="module")
def blip(blip_dir: Path) -> LocalCaptioner:
    """The tiny BLIP through the local backend's real loading path, greedy for speed."""
    captioner = LocalCaptioner(tiny_blip_spec(blip_dir), blip_dir,
                               Generation(max_new_tokens=12, num_beams=1), "cpu", 8)
    captioner.load()
    return captioner


class Recording:
    """Wraps a real captioner: records every image it is given, and fails on `poison`."""

    def __init__(self, inner: Any, poison: set[bytes] | None = None) -> None:
        self.inner, self.poison = inner, poison or set()
        self.spec, self.generation, self.stats = inner.spec, inner.generation, inner.stats
        self.seen: list[bytes] = []

    def caption(self, images: list[bytes]) -> list[str]:
        self.seen += images
        if self.poison & set(images):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return list(self.inner.caption(images))

    def close(self) -> None:
        pass


class Fixed(Recording):
    """The backend protocol with fixed captions (the tiny model's words are random)."""

    def __init__(self, inner: Any, texts: dict[bytes, str]) -> None:
        super().__init__(inner)
        self.texts = texts

    def caption(self, images: list[bytes]) -> list[str]:
        self.seen += images
        return [self.texts[data] for data in images]


# --- the backend and the cache -------------------------------------------------------------

def test_tiny_blip_captions_images_in_words_of_its_vocabulary(blip: LocalCaptioner) -> None:
    from tests.support.tiny_blip import WORDS

    texts = blip.caption([png(i) for i in range(4)])

    assert len(texts) == 4 and all(texts) and len(set(texts)) > 1
    assert all(set(t.split()) <= set(WORDS) for t in texts)
    assert blip.caption([png(0)]) == texts[:1]  # deterministic
    assert blip.stats.device == "cpu" and blip.stats.gpu_seconds == 0


def test_cache_reuses_by_content_and_keys_on_generation_settings(tmp_path: Path,
                                                                 blip: LocalCaptioner) -> None:
    cache = CaptionCache(tmp_path / "captions.sqlite")
    spy = Recording(blip)
    images = [png(1), png(2), png(1)]  # the same bytes twice

    first = captions_step.caption_with_cache(spy, cache, images)
    again = captions_step.caption_with_cache(spy, cache, [png(2), png(1)])

    assert len(spy.seen) == 2  # each distinct image captioned once, then never again
    assert [r.cached for r in first] == [False, False, True]
    assert first[0].caption == first[2].caption and all(r.cached for r in again)
    assert [r.caption for r in again] == [first[1].caption, first[0].caption]
    # Other generation settings are another captioner: nothing is reused.
    beams = LocalCaptioner(blip.spec, blip.path, Generation(max_new_tokens=12, num_beams=2), "cpu")
    beams._model, beams._processor = blip._model, blip._processor
    assert cache_key(beams.spec, beams.generation) != cache_key(blip.spec, blip.generation)
    assert not any(r.cached for r in captions_step.caption_with_cache(beams, cache, [png(1)]))


def test_cache_survives_two_writers_and_an_unwritable_home(tmp_path: Path) -> None:
    path = tmp_path / "c" / "captions.sqlite"

    def write(offset: int) -> None:
        cache = CaptionCache(path)
        for i in range(20):
            assert cache.put_many({f"{offset + i:064x}": f"caption {offset + i}"}, "k")
        cache.close()

    threads = [threading.Thread(target=write, args=(n * 100,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert CaptionCache(path).count("k") == 40

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    broken = CaptionCache(blocked / "captions.sqlite")  # its folder cannot be made
    assert broken.get_many(["ab"], "k") == {}  # reads as empty: caption again
    assert broken.put_many({"ab": "x"}, "k") is False  # a warning, not a failed run


def test_two_writers_opening_a_new_cache_at_the_same_moment_both_store(tmp_path: Path) -> None:
    """Switching a new cache to WAL could fail at once with "database is locked" (no busy wait)
    when another writer opened it at the same moment: its captions were not stored (about 1 in
    75 tries before the fix)."""
    lost: list[int] = []
    for rep in range(150):
        path = tmp_path / str(rep) / "captions.sqlite"
        start = threading.Barrier(2)

        def write(offset: int, path: Path = path, start: threading.Barrier = start) -> None:
            cache = CaptionCache(path)
            start.wait()
            if not cache.put_many({f"{offset:064x}": "a caption"}, "k"):
                lost.append(offset)
            cache.close()

        threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert lost == []


def test_a_failing_image_is_found_by_halving_and_the_rest_are_captioned(blip: LocalCaptioner) -> None:
    images = [png(i) for i in range(5)]
    spy = Recording(blip, poison={images[3]})

    outcomes = caption_each(spy, images)

    assert [text is not None for text, _ in outcomes] == [True, True, True, False, True]
    assert "illegal memory access" in str(outcomes[3][1])
    assert [t for t, _ in outcomes if t] == [blip.caption([im])[0] for i, im in enumerate(images)
                                             if i != 3]


def test_a_missing_captioner_is_raised_not_blamed_on_images(tmp_path: Path) -> None:
    from tessera.core.errors import EmbeddingError

    absent = LocalCaptioner(tiny_blip_spec(tmp_path), tmp_path, Generation(), "cpu")
    with pytest.raises(EmbeddingError, match="could not load the captioner") as err:
        caption_each(absent, [png(0), png(1)])
    assert not isinstance(err.value, CaptionError)


# --- ingest --------------------------------------------------------------------------------

@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        (folder / f"p{i}.png").write_bytes(png(10 + i))
    return folder


def _config(make_config: Callable[..., Path], blip_dir: Path, photos: Path, extra: str = "",
            name: str = "tessera.toml", **options: Any) -> Path:
    cfg = make_config(name=name, sources=[{"name": "photos", "kind": "images", "path": str(photos),
                                "modality": "image", "collection": "words",
                                "options": {"caption": "model", "captioner": "tiny-blip",
                                            **options}}],
                      captioning={"max_new_tokens": 12, "num_beams": 1, "device": "cpu"})
    cfg.write_text(cfg.read_text() + tiny_blip_toml(blip_dir) + extra)
    return cfg


def _points(settings: Any, collection: str) -> dict[str, dict[str, Any]]:
    from tessera.core.types import Match
    from tessera.store import open_store

    fields = ["doc_id", "text", "caption", "caption_source", "captioner", "modality"]
    store = open_store(settings)
    try:
        if store.get_collection(collection) is None:
            return {}
        return {p["doc_id"]: p for _, p in store.scan(collection, Match(), fields)}
    finally:
        store.close()


def test_model_captions_reach_the_payload_once_per_image(make_config: Callable[..., Path],
                                                         blip_dir: Path, photos: Path,
                                                         blip: LocalCaptioner) -> None:
    """A text-only (MiniLM) collection indexes an images source by its model captions; a
    re-ingest captions 0 images, and so does a migration to another embedding model."""
    from tests.support.tiny_clip import DIMENSION, build_tiny_clip

    clip_dir = build_tiny_clip(photos.parent / "clip")
    other = (f'\n[models.tiny-clip]\nid = "tests/tiny-clip"\nkind = "clip"\npath = "{clip_dir}"\n'
             f'dimension = {DIMENSION}\nmodalities = ["text", "image"]\nmax_length = 77\n')
    cfg = _config(make_config, blip_dir, photos, other)
    settings = load_settings(cfg)

    first = run_ingest(settings)
    points = _points(settings, "words")
    second = run_ingest(settings)
    # The migration: the same source into a new collection, embedded by another model.
    migrated = load_settings(cfg)
    migrated.sources[0].collection, migrated.sources[0].model = "words-clip", "tiny-clip"
    third = run_ingest(migrated)

    assert (first["indexed"], first["captions_made"], first["captions_reused"]) == (4, 4, 0)
    expected = dict(zip([f"photos/p{i}.png" for i in range(4)],
                        blip.caption([png(10 + i) for i in range(4)]), strict=True))
    assert {d: p["text"] for d, p in points.items()} == expected
    assert {p["caption_source"] for p in points.values()} == {"model"}
    assert all(p["caption"] == p["text"] and p["captioner"] == "tests/tiny-blip"
               and p["modality"] == "image" for p in points.values())
    assert (second["unchanged"], second["captions_made"], second["captions_reused"]) == (4, 0, 0)
    assert (third["indexed"], third["captions_made"], third["captions_reused"]) == (4, 0, 4)
    assert {p["text"] for p in _points(migrated, "words-clip").values()} == set(expected.values())
    rows = read_events(settings.events_dir, "caption_runs")
    assert sorted((r["made"], r["reused"], r["failed"]) for r in rows) == [
        (0, 0, 0), (0, 4, 0), (4, 0, 0)]
    assert all(r["captioner"] == "tests/tiny-blip" and r["gpu_seconds"] == 0 for r in rows)


@pytest.mark.slow
def test_the_cost_mart_counts_captions_made_and_reused(make_config: Callable[..., Path],
                                                       blip_dir: Path, photos: Path) -> None:
    import duckdb

    from tessera.jobs.marts import build_marts

    settings = load_settings(_config(make_config, blip_dir, photos))
    run_ingest(settings)
    (photos / "p9.png").write_bytes(png(99))
    run_ingest(settings)

    build_marts(settings)

    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    rows = con.execute("select captions_made, captions_reused, gpu_seconds, estimated_cost_usd, "
                       "captioner_model_id from fct_caption_cost order by recorded_at").fetchall()
    con.close()
    assert rows == [(4, 0, 0.0, 0.0, "tests/tiny-blip"), (1, 0, 0.0, 0.0, "tests/tiny-blip")]


def test_a_new_captioner_setting_captions_and_embeds_again(make_config: Callable[..., Path],
                                                          blip_dir: Path, photos: Path) -> None:
    settings = load_settings(_config(make_config, blip_dir, photos))
    run_ingest(settings)
    settings.captioning.max_new_tokens = 6

    again = run_ingest(settings)

    assert (again["indexed"], again["unchanged"], again["captions_made"]) == (4, 0, 4)


def test_bad_images_never_reach_the_captioner_and_a_failure_costs_one_image(
        make_config: Callable[..., Path], blip_dir: Path, photos: Path, blip: LocalCaptioner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    good = png(10)
    (photos / "corrupt.png").write_bytes(good[: len(good) // 2])
    (photos / "huge.png").write_bytes(png(3, (400, 300)))
    (photos / "anim.gif").write_bytes(animated_gif())
    poison = (photos / "p2.png").read_bytes()
    spy = Recording(blip, poison={poison})
    monkeypatch.setattr(captions_step, "make_captioner", lambda settings, spec: spy)
    cfg = _config(make_config, blip_dir, photos, max_image_pixels=100_000)
    settings = load_settings(cfg)

    from flows.ingest import ingest_flow

    summary = ingest_flow(config=str(cfg))  # as a Prefect flow: the caption step is a task

    assert (summary["seen"], summary["indexed"], summary["quarantined"]) == (7, 3, 4)
    assert set(spy.seen) <= {(photos / f"p{i}.png").read_bytes() for i in range(4)}
    rows = {r["doc_id"]: r for r in read_events(settings.events_dir, "quarantine")}
    assert set(rows) == {"photos/corrupt.png", "photos/huge.png", "photos/anim.gif",
                         "photos/p2.png"}
    assert rows["photos/anim.gif"]["expectation"] == "image_not_animated"
    assert "2 frames" in rows["photos/anim.gif"]["reason"]
    assert rows["photos/huge.png"]["expectation"] == "image_pixels_within_limit"
    assert rows["photos/corrupt.png"]["expectation"] == "image_decodable"
    assert (rows["photos/p2.png"]["suite"], rows["photos/p2.png"]["expectation"]) == (
        "caption", "caption_generated")
    assert "illegal memory access" in rows["photos/p2.png"]["reason"]
    assert set(_points(settings, "words")) == {"photos/p0.png", "photos/p1.png", "photos/p3.png"}


def test_an_image_without_sidecar_is_found_by_words(make_config: Callable[..., Path],
                                                    blip_dir: Path, photos: Path,
                                                    blip: LocalCaptioner,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tessera.service.search import search

    texts = {(photos / f"p{i}.png").read_bytes(): t for i, t in enumerate(
        ["a red car parked on a city street", "a grey cat asleep on a sofa",
         "waves breaking on a sandy beach at sunset", "a bowl of ramen with a boiled egg"])}
    monkeypatch.setattr(captions_step, "make_captioner", lambda settings, spec: Fixed(blip, texts))
    (photos / "p0.txt").write_text("my old car")  # a sidecar: "both" keeps it beside the caption
    settings = load_settings(_config(make_config, blip_dir, photos, caption="both"))

    run_ingest(settings)
    hits = search(settings, query="kitten sleeping on the couch", k=2, collection="words")
    car = search(settings, query="automobile", k=1, collection="words")

    assert hits[0]["doc_id"] == "photos/p1.png" and hits[0]["modality"] == "image"
    assert hits[0]["text"] == "a grey cat asleep on a sofa"
    assert car[0]["doc_id"] == "photos/p0.png"
    assert car[0]["text"] == "my old car\na red car parked on a city street"
    # The caption is the payload's text, which the BM25 sparse vector is computed from.
    ramen = search(settings, query="ramen", k=1, collection="words", mode="sparse")
    assert ramen[0]["doc_id"] == "photos/p3.png"


def test_blank_captions_are_quarantined_and_one_caption_for_everything_stops_the_run(
        make_config: Callable[..., Path], blip_dir: Path, photos: Path, blip: LocalCaptioner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tessera.core.errors import ContractViolation

    images = [(photos / f"p{i}.png").read_bytes() for i in range(4)]
    varied = dict(zip(images, ["   ", "a dog", "a cat", "a bird"], strict=True))
    monkeypatch.setattr(captions_step, "make_captioner", lambda s, spec: Fixed(blip, varied))
    settings = load_settings(_config(make_config, blip_dir, photos))
    settings.contracts.same_caption_min_batch = 4

    summary = run_ingest(settings)

    assert (summary["indexed"], summary["quarantined"]) == (3, 1)
    (blank,) = read_events(settings.events_dir, "quarantine")
    assert (blank["doc_id"], blank["expectation"]) == ("photos/p0.png", "caption_not_empty")
    assert "gave this image an empty caption" in blank["reason"]

    for i in range(4, 8):
        (photos / f"p{i}.png").write_bytes(png(10 + i))
    same = {(photos / f"p{i}.png").read_bytes(): "a blurry photo" for i in range(8)}
    monkeypatch.setattr(captions_step, "make_captioner", lambda s, spec: Fixed(blip, same))
    settings = load_settings(_config(make_config, blip_dir, photos, name="same.toml"))
    settings.home = photos.parent / "home-same"
    settings.contracts.same_caption_min_batch = 8
    # Equal captions embed to equal vectors, which the embeddings contract also refuses; lift
    # that limit to show the caption check on its own.
    settings.contracts.max_duplicate_vector_rate = 1.0

    with pytest.raises(ContractViolation, match="captions_not_all_the_same"):
        run_ingest(settings)
    assert _points(settings, "words") == {}


def test_config_mistakes_are_refused_before_any_work(make_config: Callable[..., Path],
                                                     blip_dir: Path, photos: Path) -> None:
    from tessera.cli.main import main
    from tessera.core.errors import EmbeddingError

    not_a_captioner = _config(make_config, blip_dir, photos, captioner="all-minilm-l6-v2")
    assert main(["ingest", "--config", str(not_a_captioner)]) == 2
    no_weights = _config(make_config, photos.parent / "no-such-blip", photos, name="nw.toml")
    assert main(["ingest", "--config", str(no_weights)]) == 2
    with pytest.raises(EmbeddingError, match="does not exist"):
        run_ingest(load_settings(no_weights))
    with pytest.raises(ConfigError, match="not a captioner"):
        run_ingest(load_settings(not_a_captioner))
    sidecar_only = make_config(sources=[{"name": "photos", "kind": "images", "path": str(photos),
                                         "modality": "image"}], name="plain.toml")
    with pytest.raises(ConfigError, match='options.caption = "model"'):
        run_ingest(load_settings(sidecar_only))
    bad_entry = make_config(name="bad.toml")
    bad_entry.write_text(bad_entry.read_text() + '\n[models.x]\nid = "y"\n')
    with pytest.raises(ConfigError, match="dimension"):
        load_settings(bad_entry)
    assert not (photos.parent / "home" / "captions").exists()


def test_refresh_models_verifies_a_captioner_used_by_a_source(
        make_config: Callable[..., Path], blip_dir: Path, photos: Path, tmp_path: Path) -> None:
    import shutil

    from tessera.core.errors import EmbeddingError
    from tessera.jobs.model_cache import configured_models, run_refresh_models

    copy = shutil.copytree(blip_dir, tmp_path / "blip-copy")
    settings = load_settings(_config(make_config, copy, photos))
    assert "tiny-blip" in configured_models(settings)

    first = {m["model"]: m for m in run_refresh_models(settings)["models"]}["tiny-blip"]
    second = {m["model"]: m for m in run_refresh_models(settings)["models"]}["tiny-blip"]
    from safetensors.torch import load_file, save_file

    weights = load_file(copy / "model.safetensors")
    name = next(k for k in weights if "vision_model" in k and k.endswith("weight"))
    weights[name] = weights[name] * 0.5
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})

    assert "recorded one" in first["message"] and first["status"] == "ok"
    assert second["status"] == "ok" and second["probe_cosine"] == pytest.approx(1.0)
    with pytest.raises(EmbeddingError, match="tiny-blip"):
        run_refresh_models(settings)


# --- tessera caption -------------------------------------------------------------------------

def test_caption_command(make_config: Callable[..., Path], blip_dir: Path, photos: Path,
                         capsys: pytest.CaptureFixture[str], blip: LocalCaptioner) -> None:
    from tessera.cli.main import main

    cfg = _config(make_config, blip_dir, photos)
    (photos / "bad.png").write_bytes(b"not an image")
    args = ["caption", str(photos / "p0.png"), str(photos / "bad.png"), str(photos / "p0.png"),
            "--captioner", "tiny-blip", "--config", str(cfg), "--json"]

    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)

    ok, bad, dup = first["captions"]
    assert ok["caption"] == blip.caption([png(10)])[0] and ok["cached"] is False
    assert dup["caption"] == ok["caption"] and dup["cached"] is True
    assert "not a readable image" in bad["error"] and ok["sha256"] == image_hash(png(10))
    assert (first["made"], first["reused"], first["failed"]) == (1, 1, 1)
    assert (second["made"], second["reused"]) == (0, 2)
    assert main(["caption", str(photos / "nope.png"), "--config", str(cfg), "--json"]) == 2
    assert "no such file" in json.loads(capsys.readouterr().out)["message"]


def test_caption_exits_2_when_no_file_was_an_image(
        make_config: Callable[..., Path], blip_dir: Path, photos: Path,
        capsys: pytest.CaptureFixture[str], blip: LocalCaptioner) -> None:
    """Every image failed its checks: the input's fault, so exit 2, naming each file and why;
    one good image among them is exit 0, with the others' failures listed."""
    from tessera.cli.main import main

    cfg = _config(make_config, blip_dir, photos)
    (photos / "notes.txt").write_text("words, not pixels")
    (photos / "bad.png").write_bytes(b"not an image either")
    bad = [str(photos / "notes.txt"), str(photos / "bad.png")]
    assert main(["caption", *bad, "--captioner", "tiny-blip", "--config", str(cfg), "--json"]) == 2
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert answer["error"] == "UsageError" and err.strip() == f"error: {answer['message']}"
    assert all(p in answer["message"] for p in bad) and "not a readable image" in answer["message"]
    assert main(["caption", str(photos / "p1.png"), *bad, "--captioner", "tiny-blip",
                 "--config", str(cfg)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"{photos / 'p1.png'}: ")
    assert all(line.startswith(f"{p}: error: ") for p, line in zip(bad, lines[1:], strict=True))


# --- Modal: the container's own code, and the client --------------------------------------

@pytest.mark.filterwarnings("ignore:The .* function is executing locally:UserWarning")
def test_container_captions_like_the_local_backend(blip_dir: Path, blip: LocalCaptioner) -> None:
    import base64

    import infra.modal_app as modal_app
    from models.modal_backend import spec_to_json

    images = [png(i) for i in range(3)]
    captioner = modal_app.Captioner(model_spec=spec_to_json(tiny_blip_spec(blip_dir)),
                                    generation=blip.generation.key(), device="cpu")

    batch = captioner.caption.local(images)
    web = captioner.web.local({"images": [base64.b64encode(b).decode() for b in images]
                               + ["%%%", base64.b64encode(b"junk").decode()]})

    assert batch["captions"] == blip.caption(images)
    assert (batch["device"], batch["gpu"]) == ("cpu", None) and batch["seconds"] > 0
    assert [r.get("caption") for r in web["captions"][:3]] == batch["captions"]
    assert web["captions"][3] == {"error": "not base64"}
    assert "cannot be decoded" in web["captions"][4]["error"]
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as err:
        captioner.web.local({"images": []})
    assert err.value.status_code == 400


class _FakeCls:
    """Modal's deployed class, faked at its boundary: `.map` over batches."""

    def __init__(self, outputs: list[list[Any]]) -> None:
        self.outputs, self.calls = outputs, []

    def __call__(self, **params: Any) -> Any:
        self.params = params
        return self

    @property
    def caption(self) -> Any:
        return self

    def map(self, batches: Any, kwargs: Any = None, order_outputs: bool = True,
            return_exceptions: bool = False) -> Any:
        assert set(kwargs or {}) <= {"trace"}  # the caller's trace context, nothing else
        self.calls.append(list(batches))
        return self.outputs.pop(0)


def test_modal_client_retries_passing_failures_and_reports_gpu_seconds(blip_dir: Path) -> None:
    from models.caption_modal import ModalCaptioner
    from tessera.core.settings import ModalConfig

    ok = {"captions": ["a", "b"], "seconds": 1.5, "device": "cuda", "gpu": "NVIDIA L4"}
    fake = _FakeCls([[ConnectionError("reset"), ok], [{**ok, "captions": ["c", "d"]}]])
    sleeps: list[float] = []
    client = ModalCaptioner(tiny_blip_spec(blip_dir), Generation(), ModalConfig(), batch_size=2,
                            lookup=lambda app, cls: fake, sleep=sleeps.append)

    texts = client.caption([b"1", b"2", b"3", b"4"])

    assert texts == ["c", "d", "a", "b"] and sleeps == [2.0]
    assert fake.params["model_spec"] and "path" in json.loads(fake.params["model_spec"])
    assert json.loads(fake.params["model_spec"])["path"] is None
    assert (client.stats.gpu_seconds, client.stats.gpu_type, client.stats.retries) == (
        3.0, "NVIDIA L4", 1)
    poisoned = ModalCaptioner(tiny_blip_spec(blip_dir), Generation(), ModalConfig(),
                              lookup=lambda app, cls: _FakeCls([[CaptionError("bad image")]]))
    with pytest.raises(CaptionError, match="bad image"):
        poisoned.caption([b"1"])


def test_modal_client_without_a_token_says_what_to_do(blip_dir: Path) -> None:
    import modal.exception

    from models.caption_modal import ModalCaptioner
    from tessera.core.errors import EmbeddingError
    from tessera.core.settings import ModalConfig

    def no_token(app: str, cls: str) -> Any:
        raise modal.exception.AuthError("Token missing")

    client = ModalCaptioner(tiny_blip_spec(blip_dir), Generation(), ModalConfig(), lookup=no_token)
    with pytest.raises(EmbeddingError, match="modal token new") as err:
        caption_each(client, [b"1", b"2"])  # not blamed on the images
    assert not isinstance(err.value, CaptionError)
