"""Checks every batch before it can reach the index; bad rows are quarantined, never lost."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from flows.errors import ContractViolation
from flows.sources.base import Document, Quarantined

if TYPE_CHECKING:
    from flows.chunking import Chunk
    from flows.events import EventLog
    from flows.settings import Settings
    from models.registry import ModelSpec


class ContractRunner:
    """Runs the document, chunk and embedding contracts for one ingest run."""

    def __init__(self, settings: Settings, spec: ModelSpec, events: EventLog) -> None:
        self.settings = settings
        self.spec = spec
        self.events = events

    def _q(self, doc: Document, suite: str, expectation: str, reason: str,
           observed: object = None) -> Quarantined:
        return Quarantined(source=doc.source, doc_id=doc.doc_id, uri=doc.uri, reason=reason,
                           expectation=expectation, suite=suite,
                           observed=None if observed is None else str(observed),
                           content_hash=doc.content_hash)

    def check_documents(self, docs: list[Document]) -> tuple[list[Document], list[Quarantined]]:
        """Unique ids, text within bounds."""
        limits = self.settings.contracts
        dupes = {k for k, n in Counter(d.doc_id for d in docs).items() if n > 1}
        kept, bad = [], []
        for doc in docs:
            size = len(doc.text.strip())
            if doc.doc_id in dupes:
                bad.append(self._q(doc, "documents", "doc_id_unique",
                                   f"doc_id {doc.doc_id!r} appears more than once in this batch; "
                                   "give each record its own id", doc.doc_id))
            elif doc.modality == "text" and size < limits.min_text_chars:
                bad.append(self._q(doc, "documents", "text_length_within_bounds",
                                   "the document has no text to embed", size))
            elif doc.modality == "text" and size > limits.max_text_chars:
                bad.append(self._q(doc, "documents", "text_length_within_bounds",
                                   f"the text is {size:,} characters, over the limit of "
                                   f"{limits.max_text_chars:,} (contracts.max_text_chars); split it",
                                   size))
            else:
                kept.append(doc)
        return kept, bad

    def check_chunks(self, docs: list[Document], chunks: dict[str, list[Chunk]]
                     ) -> tuple[list[Document], list[Quarantined]]:
        """Every document has at least one chunk."""
        kept, bad = [], []
        for doc in docs:
            if not chunks.get(doc.doc_id):
                bad.append(self._q(doc, "chunks", "has_chunks", "the text holds no tokens to embed", 0))
            else:
                kept.append(doc)
        return kept, bad

    def check_embeddings(self, docs: list[Document], vectors: dict[str, np.ndarray]
                         ) -> tuple[list[Document], list[Quarantined]]:
        """Right dimension (fatal), finite, unit norm for normalizing models, not all zero."""
        kept, bad = [], []
        for doc in docs:
            vecs = vectors[doc.doc_id]
            if vecs.ndim != 2 or vecs.shape[1] != self.spec.dimension:
                raise ContractViolation(
                    f"the model returned {vecs.shape[-1]}-dim vectors but collection expects "
                    f"{self.spec.dimension}; nothing was written. Check the model files and "
                    f"[models.{self.spec.name}].dimension"
                )
            if not np.isfinite(vecs).all():
                bad.append(self._q(doc, "embeddings", "values_finite",
                                   "the model returned NaN or infinite values for this document",
                                   "non-finite"))
                continue
            norms = np.linalg.norm(vecs, axis=1)
            if (norms == 0).any():
                bad.append(self._q(doc, "embeddings", "not_all_zero",
                                   "the model returned an all-zero vector", 0.0))
            elif self.spec.normalize and (np.abs(norms - 1) > self.settings.contracts.norm_tolerance).any():
                bad.append(self._q(doc, "embeddings", "unit_norm",
                                   "vector norm outside [0.99, 1.01] for a normalizing model",
                                   float(norms.max())))
            else:
                kept.append(doc)
        return kept, bad
