"""A tiny random CLIP, saved in the layout of the Hugging Face repo openai/clip-vit-base-patch32.

No CLIP weights can be downloaded in tests, so this builds one from a config (hidden size 32,
one layer, 32x32 images, 16-dim projection) and saves it the way the Hub repo is laid out
(config.json, weights, tokenizer files, preprocessor_config.json). Tests then load it through
the real path (`SentenceTransformer(dir)` via models.local), as they would the real weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.registry import ModelSpec

DIMENSION = 16


def build_tiny_clip(target: Path, seed: int = 0) -> Path:
    """Save a random tiny CLIP under `target` and return it."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    target.mkdir(parents=True, exist_ok=True)
    # Byte-level BPE over printable ASCII, no merges: every character is one token.
    vocab: dict[str, int] = {}
    for char in map(chr, range(33, 127)):
        vocab[char] = len(vocab)
    for char in list(vocab):
        vocab[char + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    ids = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
           "pad_token_id": vocab["<|endoftext|>"]}
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "max_position_embeddings": 77, **layers, **ids},
        vision_config={"image_size": 32, "patch_size": 8, **layers},
        projection_dim=DIMENSION,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    CLIPImageProcessorPil(size={"shortest_edge": 32},
                          crop_size={"height": 32, "width": 32}).save_pretrained(target)
    # The Hub repo names the processor the old way; load what users will load.
    pre = target / "preprocessor_config.json"
    data = json.loads(pre.read_text())
    data.pop("image_processor_type", None)
    data["feature_extractor_type"] = "CLIPFeatureExtractor"
    pre.write_text(json.dumps(data, indent=2))
    return target


def tiny_clip_spec(path: Path | None, name: str = "tiny-clip") -> ModelSpec:
    """The registry entry a user would write for these files ([models.tiny-clip])."""
    return ModelSpec(name=name, id="tests/tiny-clip", kind="clip", dimension=DIMENSION,
                     modalities=("text", "image"), max_length=77, path=path)
