"""Captioning throughput, and what the cost mart charges per 1,000 images at the seed prices.

    python -m benchmarks.captions [--images 32] [--batch 8] [--device cpu] [--beams 3]

Models measured, each through `models.captioning.LocalCaptioner` (the code ingest and the Modal
container run):
- `tiny`: the test suite's tiny random BLIP (tests/support/tiny_blip.py): the pipeline's own
  overhead;
- `base-arch`: a BLIP with `Salesforce/blip-image-captioning-base`'s architecture (BlipConfig's
  defaults: ViT-B/16 at 384 px, a 12-layer BERT decoder) and random weights, generating a fixed
  number of tokens (`--tokens`, about a real caption's length): the compute of the real model,
  measurable without its weights;
- `base`: the real weights, when the model cache holds them (`tessera refresh-models`).

On a GPU (`--device cuda`) the figures include GPU-seconds per 1,000 images and what
`fct_caption_cost` charges for them at each price in dbt/seeds/gpu_prices.csv. Results go to
benchmarks/results/captions.json and benchmarks/CAPTIONS.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

ROOT = Path(__file__).resolve().parent
PRICES = ROOT.parent / "dbt" / "seeds" / "gpu_prices.csv"


def _images(n: int, size: int = 480) -> list[bytes]:
    from PIL import Image

    out = []
    for seed in range(n):
        pixels = np.random.default_rng(seed).integers(0, 256, (size * 3 // 4, size, 3), np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _base_arch(target: Path) -> Path:
    """BLIP base's architecture with random weights, and its processor at 384 px."""
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    from tests.support.tiny_blip import WORDS

    torch.manual_seed(0)
    config = BlipConfig(vision_config={"image_size": 384})
    BlipForConditionalGeneration(config).save_pretrained(target)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "[DEC]", "[ENC]"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, bos_token="[DEC]",
                                  additional_special_tokens=["[ENC]"])
    BlipProcessor(BlipImageProcessorPil(size={"height": 384, "width": 384}),
                  tokenizer).save_pretrained(target)
    return target


def _measure(name: str, path: Path, images: list[bytes], device: str, batch: int, beams: int,
             tokens: int | None, rounds: int) -> dict[str, Any]:
    from models.captioning import Generation, LocalCaptioner
    from tests.support.tiny_blip import tiny_blip_spec

    spec = tiny_blip_spec(path, name)
    captioner = LocalCaptioner(spec, path, Generation(max_new_tokens=tokens or 30, num_beams=beams),
                               device, batch)
    start = time.perf_counter()
    captioner.load()
    load = time.perf_counter() - start
    if tokens:  # random weights never stop early: pin the length a real caption has
        original = captioner._model.generate

        def fixed(**kw: Any) -> Any:
            return original(**kw, min_new_tokens=tokens)

        captioner._model.generate = fixed
    captioner.caption(images[:batch])  # warm-up
    best = float("inf")
    for _ in range(rounds):
        captioner.stats.gpu_seconds = 0.0
        start = time.perf_counter()
        captioner.caption(images)
        best = min(best, time.perf_counter() - start)
    gpu_per_1k = captioner.stats.gpu_seconds / len(images) * 1000 if device != "cpu" else None
    import torch

    return {"model": name, "device": captioner.stats.device, "gpu": captioner.stats.gpu_type,
            "threads": torch.get_num_threads(),
            "images": len(images), "batch": batch, "beams": beams, "tokens": tokens,
            "load_seconds": round(load, 3), "seconds": round(best, 3),
            "images_per_second": round(len(images) / best, 3),
            "gpu_seconds_per_1k_images": round(gpu_per_1k, 3) if gpu_per_1k else None}


def _prices() -> dict[str, float]:
    with PRICES.open() as fh:
        return {row["gpu_type"]: float(row["usd_per_second"]) for row in csv.DictReader(fh)}


def main(argv: list[str] | None = None) -> None:
    """Measure, save results/captions.json and write CAPTIONS.md."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.captions")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=12, help="tokens per base-arch caption")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="tiny,base-arch,base")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own, one per core)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    images = _images(args.images)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from models.registry import BUILTIN, resolve_model_path
        from tessera.core.errors import EmbeddingError
        from tessera.core.settings import Settings
        from tests.support.tiny_blip import build_tiny_blip

        paths: dict[str, tuple[Path | None, int | None]] = {
            "tiny": (build_tiny_blip(Path(tmp) / "tiny"), None),
            "base-arch": (_base_arch(Path(tmp) / "base-arch"), args.tokens)}
        try:
            paths["base"] = (resolve_model_path(BUILTIN["blip-image-captioning-base"],
                                                Settings().model_cache_dir), None)
        except EmbeddingError:
            print("base: not in the model cache (tessera refresh-models); skipped")
        for name in [n.strip() for n in args.only.split(",") if n.strip() in paths]:
            path, tokens = paths[name]
            assert path is not None
            row = _measure(name, path, images, args.device, args.batch, args.beams, tokens,
                           args.rounds)
            print(json.dumps(row), flush=True)
            rows.append(row)
    prices = _prices()
    for row in rows:
        if row["gpu_seconds_per_1k_images"]:
            row["usd_per_1k_images"] = {gpu: round(row["gpu_seconds_per_1k_images"] * p, 6)
                                        for gpu, p in prices.items()}
    result = {"rows": rows, "machine": common.machine()}
    path = common.save_result("captions", result)
    saved = json.loads(path.read_text())  # save_result names benchmarks.run as the command
    saved["command"] = " ".join(["python -m benchmarks.captions", *(argv or sys.argv[1:])])
    path.write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")
    _write_report(result, prices)


def _write_report(result: dict[str, Any], prices: dict[str, float]) -> None:
    measured = [r for r in result["rows"] if r.get("usd_per_1k_images")]
    lines = ["# Captioning benchmark", "", "`python -m benchmarks.captions` (see its docstring). "
             "Machine: " + json.dumps(result["machine"]), "",
             "| model | device | threads | images | batch | beams | tokens | load s | images/s "
             "| GPU-s per 1k |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['gpu'] or r['device']} | {r.get('threads')} "
                     f"| {r['images']} | {r['batch']} "
                     f"| {r['beams']} | {r['tokens'] or 'until done'} | {r['load_seconds']} | "
                     f"{r['images_per_second']} | {r['gpu_seconds_per_1k_images'] or '-'} |")
    head = ["GPU", "USD per GPU-second"] + [f"USD per 1k captions, {r['model']} on {r['gpu']}"
                                            for r in measured]
    lines += ["", "What `fct_caption_cost` charges per 1,000 captions made is GPU-seconds per "
              "1,000 x the GPU's price per second (dbt/seeds/gpu_prices.csv):", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for gpu, price in prices.items():
        cells = [gpu, str(price)] + [str(r["usd_per_1k_images"][gpu]) for r in measured]
        lines.append("| " + " | ".join(cells) + " |")
    if not measured:
        lines += ["", "No GPU run yet: `python -m benchmarks.captions --device cuda` on a GPU "
                  "machine fills the GPU columns (GPU-seconds per 1,000 images x price)."]
    lines += ["", "Measured under the load shown in `loadavg`. On a loaded machine pass "
              "`--threads 1`: torch's one thread per core spins against the other processes "
              "(the tiny model made 0.97 images/s with 2 threads and 20.6 with 1, at a load "
              "of about 11 on 2 cores)."]
    (ROOT / "CAPTIONS.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
