"""A tiny random text model in sentence-transformers layout, for tests that need a second model.

It reuses the bundled all-MiniLM-L6-v2's tokenizer (so chunking works the same way) over a random
one-layer BERT (hidden size 32): it loads in well under a second and, being untrained, retrieves
badly, which is what a test of a quality gate needs from "a worse model". Tests load it through
the real path (`SentenceTransformer(dir)` via models.local), as a user's declared model would be.
"""

from __future__ import annotations

from pathlib import Path

DIMENSION = 32
MAX_LENGTH = 128


def build_tiny_text(target: Path, seed: int = 0) -> Path:
    """Save a random tiny sentence-transformers text model under `target` and return it."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st
    from transformers import AutoTokenizer, BertConfig, BertModel

    from models.registry import BUILTIN, resolve_model_path

    minilm = resolve_model_path(BUILTIN["all-minilm-l6-v2"])
    hf = target.parent / f".{target.name}-hf"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=DIMENSION,
                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=MAX_LENGTH + 2)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(hf))
    tokenizer.save_pretrained(str(hf))
    word = st.Transformer(str(hf), max_seq_length=MAX_LENGTH)
    model = SentenceTransformer(modules=[word, st.Pooling(DIMENSION, "mean"), st.Normalize()],
                                device="cpu")
    model.save(str(target))
    return target


def tiny_text_toml(path: Path, name: str = "tiny-text") -> str:
    """The [models.NAME] table a user would write for these files."""
    return (f'\n[models.{name}]\nid = "tests/{name}"\npath = "{path}"\ndimension = {DIMENSION}\n'
            f"max_length = {MAX_LENGTH}\n")
