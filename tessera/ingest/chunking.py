"""Token-aware chunking with the model's own tokenizer: deterministic windows with overlap."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tessera.core.errors import EmbeddingError
from tessera.core.types import Chunk, Document

# [CLS] and [SEP] (or CLIP's start/end tokens) take two of the model's positions.
_SPECIAL_TOKENS = 2
# A "word" longer than this is cut into pieces before tokenizing. WordPiece turns a word over 100
# characters into one [UNK] token whose text is the whole word: a 1 MB run of letters would be
# one 1 MB point, and its [UNK] vector matches unrelated queries.
MAX_WORD_CHARS = 64
_LONG_WORD = re.compile(r"\S{" + str(MAX_WORD_CHARS + 1) + ",}")
# A chunk's payload text is at most this many characters per window token (whitespace runs
# between tokens are the only way past it once long words are cut).
MAX_CHARS_PER_TOKEN = 32


def window_tokens(model_max_length: int, max_tokens: int | None) -> int:
    """Tokens per window: the configured size, capped by what the model can see."""
    limit = model_max_length - _SPECIAL_TOKENS
    return min(max_tokens or limit, limit)


def signature(model_max_length: int, max_tokens: int | None, overlap: int) -> str:
    """Identifies how documents were cut; recorded on points so a change re-chunks them."""
    return f"tokens={window_tokens(model_max_length, max_tokens)};overlap={overlap}"


class Chunker:
    """Splits text into windows of at most `max_tokens` model tokens, overlapping by `overlap`."""

    def __init__(self, tokenizer_dir: Path, model_max_length: int, max_tokens: int | None = None,
                 overlap: int = 32) -> None:
        self.max_tokens = window_tokens(model_max_length, max_tokens)
        if overlap >= self.max_tokens:
            raise EmbeddingError(f"chunking.overlap ({overlap}) must be smaller than the window "
                                 f"({self.max_tokens} tokens)")
        self.overlap = overlap
        self.tokenizer_dir = Path(tokenizer_dir)
        self._tokenizer = _load_tokenizer(tokenizer_dir)

    def chunk(self, docs: list[Document]) -> dict[str, list[Chunk]]:
        """Chunks for each document (images: one chunk holding the caption)."""
        out: dict[str, list[Chunk]] = {}
        texts = [d for d in docs if d.modality == "text"]
        bodies = [cut_long_words(d.text) for d in texts]
        encodings = self._tokenizer.encode_batch(bodies, add_special_tokens=False)
        for doc, body, enc in zip(texts, bodies, encodings, strict=True):
            out[doc.doc_id] = self._windows(doc.doc_id, body, enc.ids, enc.offsets, enc.word_ids)
        for doc in docs:
            if doc.modality != "text":
                out[doc.doc_id] = [Chunk(doc.doc_id, 0, 1, doc.text, 0)]
        return out

    def _windows(self, doc_id: str, text: str, ids: list[int], offsets: list[tuple[int, int]],
                 words: list[int | None]) -> list[Chunk]:
        n = len(offsets)
        spans: list[tuple[int, int]] = []
        start = 0
        # A window may end early at a word boundary, but never shrink below half its size.
        floor = max(1, self.max_tokens // 2)
        while start < n:
            end = min(start + self.max_tokens, n)
            while (end < n and end - 1 > start + floor and words[end] is not None
                   and words[end] == words[end - 1]):
                end -= 1
            spans.append((start, end))
            if end >= n:
                break
            nxt = max(end - self.overlap, start + 1)
            while nxt > start + 1 and words[nxt] is not None and words[nxt] == words[nxt - 1]:
                nxt -= 1
            start = nxt
        count = len(spans)
        limit = self.max_tokens * MAX_CHARS_PER_TOKEN
        return [
            Chunk(doc_id, i, count, _bounded(text[offsets[a][0]:offsets[b - 1][1]], limit), b - a,
                  tuple(ids[a:b]))
            for i, (a, b) in enumerate(spans)
        ]


def cut_long_words(text: str) -> str:
    """`text` with every run of over MAX_WORD_CHARS non-space characters cut by spaces."""
    if not _LONG_WORD.search(text):
        return text
    return _LONG_WORD.sub(lambda m: " ".join(m.group(0)[i:i + MAX_WORD_CHARS]
                                             for i in range(0, len(m.group(0)), MAX_WORD_CHARS)),
                          text)


def _bounded(text: str, limit: int) -> str:
    """A window's text, its whitespace runs collapsed if that is what makes it too long."""
    if len(text) <= limit:
        return text
    return " ".join(text.split())[:limit]


def _load_tokenizer(model_dir: Path) -> Any:
    """The fast tokenizer from tokenizer.json (cheap to import), else transformers' loader."""
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if path.exists():
        tok = Tokenizer.from_file(str(path))
        tok.no_truncation()
        tok.no_padding()
        return tok
    raise EmbeddingError(f"no tokenizer.json in {model_dir}; save the model with a fast tokenizer")
