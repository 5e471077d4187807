"""A tiny random BLIP captioner, saved in the layout of Salesforce/blip-image-captioning-base.

No BLIP weights can be downloaded in tests, so this builds one from a config (hidden size 32,
one layer, 32x32 images, a 50-word WordPiece vocabulary) and saves it as the Hub repo is laid
out (config.json, weights, processor and tokenizer files). Tests then load it through the real
path (`models.captioning.LocalCaptioner`), as they would the real weights. Its weights are drawn
with a large spread so that different images get different (random, English-word) captions.
"""

from __future__ import annotations

from pathlib import Path

from models.registry import ModelSpec

WORDS = ["a", "an", "the", "photo", "picture", "of", "cat", "dog", "bird", "car", "tree", "sea", "sky", "red", "blue", "green", "grey", "white", "black", "on", "in", "with", "and", "sitting", "standing", "next", "to", "sofa", "road", "beach", "field", "house", "man", "woman", "child", "flower", "mountain"]


def build_tiny_blip(target: Path, seed: int = 0, spread: float = 0.5) -> Path:
    """Save a random tiny BLIP captioner under `target` and return it."""
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    target.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "[DEC]", "[ENC]"]
    ids = {word: i for i, word in enumerate(vocab)}
    # BLIP's tokenizer is BERT's with [DEC] as the start of every caption.
    tokenizer = BertTokenizerFast(vocab=ids, do_lower_case=True, bos_token="[DEC]",
                                  additional_special_tokens=["[ENC]"], model_max_length=512)
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2}
    config = BlipConfig(
        text_config={"vocab_size": len(vocab), "max_position_embeddings": 64,
                     "bos_token_id": ids["[DEC]"], "sep_token_id": ids["[SEP]"],
                     "eos_token_id": ids["[SEP]"], "pad_token_id": ids["[PAD]"], **layers},
        vision_config={"image_size": 32, "patch_size": 8, **layers},
        projection_dim=16, image_text_hidden_size=16,
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    draw = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:  # BLIP's own init is so narrow that every image reads the same
                param.copy_(torch.randn(param.shape, generator=draw) * spread)
    model.save_pretrained(target)
    BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}),
                  tokenizer).save_pretrained(target)
    return target


def tiny_blip_spec(path: Path | None, name: str = "tiny-blip") -> ModelSpec:
    """The registry entry a user would write for these files ([models.tiny-blip])."""
    return ModelSpec(name=name, id="tests/tiny-blip", kind="captioner", dimension=0,
                     modalities=("image",), max_length=512, path=path, normalize=False)


def tiny_blip_toml(path: Path, name: str = "tiny-blip") -> str:
    """The `[models.NAME]` table for these files."""
    return (f'\n[models.{name}]\nid = "tests/tiny-blip"\nkind = "captioner"\npath = "{path}"\n'
            'modalities = ["image"]\n')
