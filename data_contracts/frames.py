"""One row per thing a suite checks, as plain dicts; the suite files name the columns.

Every row carries `_doc`, the position of its document in the batch, so a failing row maps back
to the document to quarantine (doc ids are not unique in a bad batch). Rows hold what the
expectations read and what a reason quotes: never a vector, and no text but a payload's own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from tessera.core.types import Chunk, Document, PointRecord

Row = dict[str, Any]
ImageCheck = Callable[[bytes], "str | None"]


def to_frame(rows: list[Row], object_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """The rows as a DataFrame; `object_columns` keep Python values as they are (for type checks)."""
    import pandas as pd

    frame = pd.DataFrame.from_records(rows)
    for col in object_columns:
        frame[col] = pd.Series([r.get(col) for r in rows], dtype=object)
    return frame


def extension(doc: Document) -> str:
    """The document's file extension, lower case ('' when it has none)."""
    path = doc.metadata.get("path") or doc.uri.split("#", 1)[0]
    return PurePath(str(path)).suffix.lower()


def epoch_seconds(value: Any) -> float | None:
    """A record's timestamp as epoch seconds: None when absent, -1 when it cannot be read."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return -1.0
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def iso(seconds: float | None) -> str:
    """Epoch seconds for a reason a person reads."""
    if seconds is None:
        return "none"
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g} (epoch seconds)"


def document_rows(docs: list[Document], image_check: ImageCheck | None) -> list[Row]:
    """documents suite: one row per loaded document."""
    copies = Counter(d.doc_id for d in docs)
    rows = []
    for i, doc in enumerate(docs):
        is_image = doc.modality == "image"
        modified = epoch_seconds(doc.metadata.get("modified_at"))
        rows.append({
            "_doc": i,
            "doc_id": doc.doc_id or None,
            "copies": copies[doc.doc_id],
            "source": doc.source,
            "modality": doc.modality,
            "text_chars": None if is_image else len(doc.text.strip()),
            "extension": extension(doc),
            "modified_at": modified,
            "modified_at_text": iso(modified),
            "image_problem": image_check(doc.data or b"") if is_image and image_check else None,
        })
    return rows


def chunk_rows(docs: list[Document], chunks: dict[str, list[Chunk]]) -> list[Row]:
    """chunks suite: one row per chunk; a document with no chunk gets one row that says so."""
    rows: list[Row] = []
    for i, doc in enumerate(docs):
        mine = chunks.get(doc.doc_id) or []
        is_text = doc.modality == "text"
        doc_tokens = sum(c.tokens for c in mine) if is_text else None
        base = {"_doc": i, "doc_id": doc.doc_id, "chunks_in_doc": len(mine), "doc_tokens": doc_tokens}
        if not mine:
            rows.append({**base, "chunk_index": None, "position": None, "chunk_count": None,
                         "tokens": None})
        for pos, chunk in enumerate(mine):
            rows.append({**base, "chunk_index": chunk.index, "position": pos,
                         "chunk_count": chunk.count, "tokens": chunk.tokens if is_text else None})
    return rows


def vector_rows(docs: list[Document], vectors: dict[str, np.ndarray],
                chunks: dict[str, list[Chunk]] | None, normalizing: bool) -> list[Row]:
    """embeddings suite: the statistics of each vector, not the vector."""
    rows: list[Row] = []
    first_hash: dict[bytes, str] = {}  # vector bytes -> content hash of the first doc that had it
    for i, doc in enumerate(docs):
        vecs = np.asarray(vectors.get(doc.doc_id, np.zeros((0, 0), np.float32)), dtype=np.float32)
        if vecs.ndim == 1:
            vecs = vecs[None, :]
        expected = len(chunks.get(doc.doc_id) or []) if chunks is not None else len(vecs)
        base = {"_doc": i, "doc_id": doc.doc_id, "vectors_in_doc": len(vecs), "chunks_in_doc": expected}
        if len(vecs) == 0:
            rows.append({**base, "vector_index": None, "dim": None, "nonfinite": None,
                         "norm": None, "unit_norm": None, "duplicate": 0})
            continue
        finite = np.isfinite(vecs)
        nonfinite = (~finite).sum(axis=1)
        norms = np.linalg.norm(np.where(finite, vecs, 0.0), axis=1)
        vecs = np.ascontiguousarray(vecs)
        for j in range(len(vecs)):
            seen = first_hash.setdefault(vecs[j].tobytes(), doc.content_hash)
            norm = float(norms[j]) if nonfinite[j] == 0 else None
            rows.append({**base, "vector_index": j, "dim": int(vecs.shape[1]),
                         "nonfinite": int(nonfinite[j]), "norm": norm,
                         "unit_norm": norm if normalizing else None,
                         "duplicate": int(seen != doc.content_hash)})
    return rows


def _whole_number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def payload_rows(docs: list[Document], points: dict[str, list[PointRecord]],
                 required: dict[str, str]) -> list[Row]:
    """payload suite: the required keys of each point's payload (None when missing)."""
    rows: list[Row] = []
    for i, doc in enumerate(docs):
        for point in points.get(doc.doc_id, []):
            row: Row = {"_doc": i}
            row.update({key: point.payload.get(key) for key in required})
            for key in ("chunk_index", "chunk_count", "ingested_at", "expires_at"):
                row[f"{key}_number"] = _whole_number(point.payload.get(key))
            caption = point.payload.get("caption")
            text = caption.strip() if isinstance(caption, str) else None
            row["caption"] = text or None  # blank captions are counted by caption_chars
            row["caption_chars"] = len(text) if text is not None else None
            row["captioner"] = point.payload.get("captioner")
            rows.append(row)
    return rows
