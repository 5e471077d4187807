"""Token-aware chunking with the model's tokenizer: bounded, overlapping, deterministic."""

from __future__ import annotations

import pytest

from models.registry import BUILTIN, resolve_model_path
from tessera.core.types import Document
from tessera.ingest.chunking import Chunker


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    spec = BUILTIN["all-minilm-l6-v2"]
    return Chunker(resolve_model_path(spec), spec.max_length, overlap=32)


def _tokens(chunker: Chunker, text: str) -> int:
    return len(chunker._tokenizer.encode(text, add_special_tokens=False).ids)


def _doc(text: str, doc_id: str = "d") -> Document:
    return Document(doc_id=doc_id, source="s", uri="u", modality="text", text=text)


def test_long_text_is_windowed_within_the_model_limit(chunker: Chunker) -> None:
    text = " ".join(f"token{i} alpha beta" for i in range(600))
    chunks = chunker.chunk([_doc(text)])["d"]
    assert len(chunks) > 3
    assert all(c.count == len(chunks) for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    # Re-tokenized chunk text fits the model (254 + [CLS] + [SEP] = 256).
    assert all(_tokens(chunker, c.text) <= 254 for c in chunks)
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


def test_a_megabyte_word_is_cut_by_tokens_and_its_chunks_stay_small(chunker: Chunker) -> None:
    """WordPiece makes any word over 100 characters one [UNK] token spanning the whole word: one
    1 MB chunk. Long runs are cut first, so windows fill by tokens and payload text is bounded."""
    word = "".join(chr(ord("a") + (i * 7919) % 26) for i in range(1_000_000))
    chunks = chunker.chunk([_doc(f"Intro sentence. {word} Closing sentence.")])["d"]
    assert len(chunks) > 100  # ~1,000,000 characters of subword tokens, 254 to a window
    assert max(len(c.text) for c in chunks) <= 254 * 32
    assert all(c.tokens <= 254 for c in chunks)
    assert chunks[0].text.startswith("Intro sentence.") and chunks[-1].text.endswith("Closing sentence.")
    unk = chunker._tokenizer.token_to_id("[UNK]")
    assert all(unk not in c.ids for c in chunks)


def test_whitespace_cannot_make_a_chunk_huge(chunker: Chunker) -> None:
    (only,) = chunker.chunk([_doc("start" + " " * 500_000 + "end")])["d"]
    assert only.text == "start end" and only.tokens == 2
