"""Token-aware chunking with the model's tokenizer: bounded, overlapping, deterministic."""

from __future__ import annotations

import pytest

from flows.chunking import Chunker
from models.registry import BUILTIN, resolve_model_path
from tessera.types import Document


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    spec = BUILTIN["all-minilm-l6-v2"]
    return Chunker(resolve_model_path(spec), spec.max_length, overlap=32)


def _doc(text: str, doc_id: str = "d") -> Document:
    return Document(doc_id=doc_id, source="s", uri="u", modality="text", text=text)


def test_long_text_is_windowed_within_the_model_limit(chunker: Chunker) -> None:
    text = " ".join(f"token{i} alpha beta" for i in range(600))
    chunks = chunker.chunk([_doc(text)])["d"]
    assert len(chunks) > 3
    assert all(c.count == len(chunks) for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    # Re-tokenized chunk text fits the model (254 + [CLS] + [SEP] = 256).
    assert all(chunker.count_tokens(c.text) <= 254 for c in chunks)
    # Consecutive windows overlap: the start of each chunk appears at the end of the previous.
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        assert nxt.text.split()[0] in prev.text.split()[-40:]
    # Nothing dropped: the last word of the text is in the last chunk.
    assert chunks[-1].text.endswith("beta")


def test_chunking_is_deterministic_and_short_text_is_one_chunk(chunker: Chunker) -> None:
    text = "word " * 700
    assert chunker.chunk([_doc(text)]) == chunker.chunk([_doc(text)])
    (only,) = chunker.chunk([_doc("a short note")])["d"]
    assert (only.index, only.count, only.text) == (0, 1, "a short note")


def test_blank_text_has_no_chunks(chunker: Chunker) -> None:
    assert chunker.chunk([_doc("  \n ")])["d"] == []


def test_window_ids_are_what_the_chunk_text_tokenizes_to(chunker: Chunker) -> None:
    """The embedder takes the windows' ids instead of re-tokenizing: they must be the same ids."""
    text = " ".join(f"Résumé{i}, naïve café-style (p<0.05) ×{i} alpha" for i in range(300))
    chunks = chunker.chunk([_doc(text)])["d"]
    assert len(chunks) > 2
    for c in chunks:
        assert len(c.ids) == c.tokens
        assert list(c.ids) == chunker._tokenizer.encode(c.text, add_special_tokens=False).ids
