"""What one ingest run carries, at the bottom of the ingest so the steps above can take it: the
run context (`IngestRun`: events, counts, contracts, loaded models), each source resolved into a
`Target`, one `Batch` as it moves through the steps, and the `BatchResult` it comes back as."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from data_contracts import ContractRunner
from models import EmbeddingBackend, make_backend, resolve_model_path
from models.registry import ModelSpec
from tessera.core import telemetry
from tessera.core.events import EventLog, new_run_id, utcnow
from tessera.core.settings import ChunkingConfig, Settings, SourceConfig
from tessera.core.sparse import Bm25Encoder, config_from_identity, sparse_signature
from tessera.core.steps import Steps
from tessera.core.types import Quarantined
from tessera.ingest.captioning import RunCaptions
from tessera.ingest.chunking import Chunker
from tessera.ingest.points import Existing, RunCounts
from tessera.store.writers import WriterSection

STAGES = ("discover", "load", "chunk", "diff", "embed", "sparse", "upsert", "delete")
# What a progress bar says the run is doing, by the stage it is in.
PHASES = {"discover": "listing files", "load": "reading", "diff": "comparing", "chunk": "chunking",
          "embed": "embedding", "sparse": "embedding", "upsert": "writing", "delete": "writing",
          "refresh": "writing", "caption": "captioning"}


@dataclass(frozen=True)
class Tick:
    """Where a run is, for a progress bar. `files_total` is every file of every source's listing
    (all are listed before the first is read), so a bar's total never moves; `files_done` moves
    inside a batch with its documents embedded (a fraction of the batch's files)."""

    phase: str  # listing files, loading model, reading, embedding, writing, ...
    files_done: float
    files_total: int
    documents: int  # documents seen so far (finished batches plus the batch in hand)
    chunks: int  # chunks embedded so far


# Called with a Tick when the phase changes, after each batch, and inside a batch's embed step
# after every model call of the token-id path (batch.PROGRESS_CHUNKS: every 64 documents or
# fewer at the default batch size), so a bar drawn from it moves while a batch is embedded.
Progress = Callable[[Tick], None]



@dataclass(frozen=True)
class Target:
    """One source of a run, resolved: where its points go, which model, how long they live."""

    source: SourceConfig
    items: list[str] | None  # None: the source's whole listing (missing documents are deleted)
    collection: str
    spec: ModelSpec
    chunking: str  # chunking signature, recorded on points
    now: int
    expires_at: int
    chunk_config: ChunkingConfig | None = None  # the collection's chunking (None: the config's)
    # The collection's BM25 config (tessera.core.sparse.sparse_identity), None: dense only.
    sparse: dict[str, Any] | None = None

    @property
    def sparse_signature(self) -> str:
        """Recorded on points: a change re-indexes them like a model change."""
        return sparse_signature(self.sparse)


@dataclass(frozen=True)
class Outcome:
    """What became of one document (a `documents_indexed` row), when it was decided."""

    doc_id: str
    outcome: str  # indexed | unchanged | quarantined | deleted
    content_hash: str | None = None
    chunk_count: int | None = None
    modality: str | None = None
    bytes: int | None = None
    recorded_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class BatchResult:
    """What one batch (or one page of skipped or removed documents) did: its documents'
    outcomes and its work. The source pass adds it to the run's counts and events."""

    outcomes: tuple[Outcome, ...] = ()
    seen: int = 0  # records read (documents and quarantined); 0 for removals
    chunks_embedded: int = 0
    points_upserted: int = 0
    sparse_written: int = 0

    def count(self, outcome: str) -> int:
        """Documents with this outcome."""
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    @property
    def indexed(self) -> int:
        return self.count("indexed")

    @property
    def unchanged(self) -> int:
        return self.count("unchanged")

    @property
    def quarantined(self) -> int:
        return self.count("quarantined")


@dataclass
class Batch:
    """The documents of one batch as they move through the steps, and what they did so far
    (`result()`: what `process_batch` returns, or what a batch that raised got done)."""

    target: Target
    existing: dict[str, Existing]
    remaining: float  # batches of this size still to come in the source, this one included
    records: int = 0  # records loaded into this batch (documents and quarantined)
    quarantined: list[Quarantined] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    chunks_embedded: int = 0
    points_upserted: int = 0
    sparse_written: int = 0

    @property
    def name(self) -> str:
        return self.target.source.name

    def result(self) -> BatchResult:
        """The batch's outcomes and work, frozen."""
        return BatchResult(tuple(self.outcomes), self.records, self.chunks_embedded,
                           self.points_upserted, self.sparse_written)



class IngestRun:
    """What one run carries across its sources: events, counts, contracts, loaded models."""

    def __init__(self, settings: Settings, steps: Steps, ttl: str | None, flow: str,
                 progress: Progress | None, run_id: str | None = None,
                 verify: bool = False) -> None:
        self.settings = settings
        self.steps = steps
        self.ttl = ttl
        self.flow = flow  # "ingest", or "quality" when the quality flow indexes its corpus
        self.progress = progress
        self.run_id = run_id or new_run_id()
        self.events = EventLog(settings.events_dir, self.run_id)
        self.contracts = ContractRunner(settings, self.events, steps)
        self.counts = RunCounts()
        self.started = utcnow()
        self.targets: list[Target] = []
        self.batch_index = 0
        self.done = 0  # documents of finished batches
        self.phase = "starting"
        self.files_total = 0  # files in every source's listing
        self.files_done = 0  # files of finished batches
        self.batch_files = (0, 0)  # (files, records) of the batch in hand
        self.in_batch = (0, 0)  # (documents, chunks) of it reported, until it is accounted
        self._backends: dict[str, EmbeddingBackend] = {}
        self._chunkers: dict[tuple[str, int | None, int], Chunker] = {}
        self.sections: list[WriterSection] = []  # writer sections of the aliases it writes
        self.captions = RunCaptions(settings)
        self._bm25: dict[str, Bm25Encoder] = {}
        self.verify = verify  # read and hash every file, trusting no recorded stat
        self.state_rebuilt: list[str] = []  # "source: why" for each diff state rebuilt

    def bm25(self, identity: dict[str, Any]) -> Bm25Encoder:
        """The BM25 encoder for a collection's recorded sparse config."""
        key = sparse_signature(identity)
        if key not in self._bm25:
            self._bm25[key] = Bm25Encoder(config_from_identity(identity))
        return self._bm25[key]

    def backend(self, spec: ModelSpec, pending_chunks: int) -> EmbeddingBackend:
        """The model's backend, chosen (local or Modal, for `auto`) when it is first needed."""
        if spec.name not in self._backends:
            self.set_phase("loading model")
            self._backends[spec.name] = make_backend(self.settings, spec, pending_chunks)
        return self._backends[spec.name]

    def chunker(self, spec: ModelSpec, cfg: ChunkingConfig | None = None) -> Chunker:
        """The model's tokenizer-based chunker, with these chunking settings (default: config)."""
        cfg = cfg or self.settings.chunking
        key = (spec.name, cfg.max_tokens, cfg.overlap)
        if key not in self._chunkers:
            model_dir = resolve_model_path(spec, self.settings.model_cache_dir)
            self._chunkers[key] = Chunker(model_dir, spec.max_length, cfg.max_tokens, cfg.overlap)
        return self._chunkers[key]

    def report(self, docs_in_batch: int = 0, chunks_in_batch: int = 0) -> None:
        """Tell the progress callback where the run is: finished batches plus this much of the
        batch in hand (documents estimated, chunks exact)."""
        if self.progress is None:
            return
        self.in_batch = (docs_in_batch, chunks_in_batch)
        files, records = self.batch_files
        part = files * min(1.0, docs_in_batch / records) if records else 0.0
        self.progress(Tick(self.phase, self.files_done + part, self.files_total,
                           self.done + docs_in_batch, self.counts.chunks_embedded + chunks_in_batch))

    def set_phase(self, phase: str) -> None:
        """Say what the run does now (a progress bar shows it)."""
        if phase != self.phase:
            self.phase = phase
            self.report(*self.in_batch)

    def stage_done(self, source: str, stage: str, items: int, seconds: float) -> None:
        """Account for one stage of one batch."""
        self.counts.add_time(stage, seconds)
        self.events.add("ingest_batches", source=source, stage=stage, batch_index=self.batch_index,
                        items=items, seconds=seconds, recorded_at=utcnow())

    def timed(self, source: str, stage: str, items: int, name: str, fn: Callable[..., Any],
              *args: Any, io: bool = False) -> Any:
        """Run one step (a span of the run's trace, named after it) and record the time its
        stage took."""
        self.set_phase(PHASES.get(stage, stage))
        start = time.perf_counter()
        try:
            with telemetry.span(name, stage=stage, source=source, items=items):
                return self.steps.run(name, fn, *args, io=io)
        finally:
            self.stage_done(source, stage, items, time.perf_counter() - start)

    def summary(self) -> dict[str, Any]:
        """The run's counts, as `tessera ingest --json` prints them."""
        c = self.counts
        out = {"run_id": self.run_id, "seen": c.seen, "indexed": c.indexed,
               "unchanged": c.unchanged, "quarantined": c.quarantined, "deleted": c.deleted,
               "chunks_embedded": c.chunks_embedded, "points_upserted": c.points_upserted,
               "sparse_written": c.sparse_written,
               "seconds": round((utcnow() - self.started).total_seconds(), 3),
               "diff_state_rebuilt": list(self.state_rebuilt)}
        if self.captions.sources:  # only runs with a source that captions with a model
            out |= self.captions.summary()
        return out
