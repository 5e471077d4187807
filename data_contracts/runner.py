"""Runs the suites on every batch: failing rows are quarantined, fatal failures stop the run.

Each `check_*` validates the whole batch once (one GE validation, run as the step
`contract-<suite>` of whoever runs the pipeline's steps) and returns (documents kept, quarantine
rows). A document is quarantined once, for the
first expectation it breaks in suite order. Every expectation's result becomes a
`contract_results` event; `publish` turns a batch's results into a markdown artifact.
"""

from __future__ import annotations

import logging
import math
import string
import time
from typing import TYPE_CHECKING, Any

from data_contracts import engine, frames
from data_contracts.engine import Outcome, Severity
from tessera.core.errors import ConfigError, ContractViolation
from tessera.core.steps import PlainSteps, Steps
from tessera.core.types import Document, Quarantined

if TYPE_CHECKING:
    import numpy as np

    from models.registry import ModelSpec
    from tessera.core.events import EventLog
    from tessera.core.settings import Settings, SourceConfig
    from tessera.core.types import Chunk, PointRecord

logger = logging.getLogger(__name__)

# [CLS]/[SEP] (or CLIP's start/end) take two of the model's positions; chunk token counts exclude them.
_SPECIAL_TOKENS = 2
_MAX_OBSERVED = 200


class ContractRunner:
    """Runs the documents, chunks, embeddings and payload suites for one ingest run."""

    def __init__(self, settings: Settings, events: EventLog, steps: Steps | None = None) -> None:
        self.settings = settings
        self.events = events
        self.steps: Steps = steps or PlainSteps()
        self.severity = _severities(settings)
        self._batch: list[tuple[str, str, Outcome, Severity]] = []  # for the artifact

    # -- the four suites -------------------------------------------------------------------

    def check_documents(self, docs: list[Document], spec: ModelSpec,
                        source: SourceConfig | None = None
                        ) -> tuple[list[Document], list[Quarantined]]:
        """Ids present and unique, source and modality allowed, text length, extension, images, times."""
        rows = frames.document_rows(docs, _image_check(source))
        c = self.settings.contracts
        names = {s.name for s in self.settings.sources} | ({source.name} if source else set())
        params = {
            "sources": sorted(names or {d.source for d in docs}),
            "modalities": _modalities(spec, source),
            "min_text_chars": c.min_text_chars, "max_text_chars": c.max_text_chars,
            "allowed_extensions": sorted({e.lower() for e in c.allowed_extensions}),
            **self._time_bounds(),
        }
        return self._run("documents", spec, docs, rows, params, source)

    def check_chunks(self, docs: list[Document], chunks: dict[str, list[Chunk]], spec: ModelSpec,
                     source: SourceConfig | None = None) -> tuple[list[Document], list[Quarantined]]:
        """Each document has tokens, every chunk fits the model, chunk indexes run 0..n-1."""
        params = {"max_chunk_tokens": spec.max_length - _SPECIAL_TOKENS}
        return self._run("chunks", spec, docs, frames.chunk_rows(docs, chunks), params, source)

    def check_embeddings(self, docs: list[Document], vectors: dict[str, np.ndarray],
                         spec: ModelSpec, chunks: dict[str, list[Chunk]] | None = None,
                         source: SourceConfig | None = None
                         ) -> tuple[list[Document], list[Quarantined]]:
        """Right dimension and count (fatal), finite, not zero, unit norm, few duplicates (fatal)."""
        tol = self.settings.contracts.norm_tolerance
        params = {"dimension": spec.dimension, "min_norm": 1 - tol, "max_norm": 1 + tol,
                  "max_duplicate_vector_rate": self.settings.contracts.max_duplicate_vector_rate}
        rows = frames.vector_rows(docs, vectors, chunks, spec.normalize)
        return self._run("embeddings", spec, docs, rows, params, source)

    def check_payloads(self, docs: list[Document], points: dict[str, list[PointRecord]],
                       spec: ModelSpec, source: SourceConfig | None = None
                       ) -> tuple[list[Document], list[Quarantined]]:
        """Required payload keys with the right types; expires_at after ingested_at; model
        captions not empty, not too long, and not one caption for a whole batch."""
        required = engine.load_spec("payload").meta["required_keys"]
        rows = frames.payload_rows(docs, points, required)
        c = self.settings.contracts
        captions = sum(r["caption"] is not None for r in rows)
        params = {**self._time_bounds(), "max_caption_chars": c.max_caption_chars,
                  "min_distinct_captions": 2 if captions >= c.same_caption_min_batch else 0}
        return self._run("payload", spec, docs, rows, params, source,
                         object_columns=tuple(required))

    # -- running one suite -----------------------------------------------------------------

    def _run(self, suite: str, spec: ModelSpec, docs: list[Document], rows: list[frames.Row],
             params: dict[str, Any], source: SourceConfig | None,
             object_columns: tuple[str, ...] = ()) -> tuple[list[Document], list[Quarantined]]:
        if not rows:
            return list(docs), []
        source_name = source.name if source else docs[0].source
        frame = frames.to_frame(rows, object_columns)
        outcomes = self.steps.run(f"contract-{suite}", engine.validate, suite, frame, params)
        _log(suite, len(frame), outcomes)
        context = {**self._context(spec, params), **params}
        self._record(suite, source_name, outcomes)
        fatal = [o for o in outcomes if not o.success and
                 (o.error or self.severity[suite][o.spec.name] == "fatal")]
        if fatal:
            raise ContractViolation("; ".join(self._fatal_message(suite, o, rows, context)
                                              for o in fatal))
        bad: dict[int, Quarantined] = {}
        for o in outcomes:
            if o.success:
                continue
            if not o.unexpected_rows:
                logger.warning("%s/%s failed for the batch as a whole (severity error): %s",
                               suite, o.spec.name, _reason(o, None, context))
            for label in o.unexpected_rows:
                row = rows[label]
                if row["_doc"] not in bad:
                    bad[row["_doc"]] = self._quarantined(docs[row["_doc"]], suite, o, row, context)
        return [d for i, d in enumerate(docs) if i not in bad], [bad[i] for i in sorted(bad)]

    def _quarantined(self, doc: Document, suite: str, o: Outcome, row: frames.Row,
                     context: dict[str, Any]) -> Quarantined:
        observed = _observed(o, row)
        return Quarantined(source=doc.source, doc_id=doc.doc_id, uri=doc.uri,
                           reason=_reason(o, row, context), expectation=o.spec.name, suite=suite,
                           observed=observed, content_hash=doc.content_hash)

    def _fatal_message(self, suite: str, o: Outcome, rows: list[frames.Row],
                       context: dict[str, Any]) -> str:
        if o.error:
            return (f"the {suite} contract could not evaluate {o.spec.name} ({o.error}); nothing "
                    f"of this batch was written. Check data_contracts/suites/{suite}.json")
        row = rows[o.unexpected_rows[0]] if o.unexpected_rows else None
        count = f" ({o.unexpected_count} of {o.element_count} rows)" if o.unexpected_rows else ""
        return f"contract {suite}/{o.spec.name} failed{count}: {_reason(o, row, context)}"

    def _record(self, suite: str, source: str, outcomes: list[Outcome]) -> None:
        from tessera.core.events import utcnow

        now = utcnow()
        for o in outcomes:
            severity = self.severity[suite][o.spec.name]
            self._batch.append((suite, source, o, severity))
            self.events.add("contract_results", source=source, suite=suite,
                            expectation=o.spec.name, column=",".join(o.spec.columns),
                            severity=severity, success=o.success, element_count=o.element_count,
                            unexpected_count=o.unexpected_count, recorded_at=now)

    def _time_bounds(self) -> dict[str, Any]:
        c = self.settings.contracts
        return {"earliest_timestamp": c.earliest_timestamp,
                "latest_timestamp": int(time.time()) + c.max_clock_skew_seconds}

    def _context(self, spec: ModelSpec, params: dict[str, Any]) -> dict[str, Any]:
        """Values a reason may quote besides the row's own."""
        return {
            "model": spec.name, "model_id": spec.id,
            "max_clock_skew_seconds": self.settings.contracts.max_clock_skew_seconds,
            "earliest_text": frames.iso(self.settings.contracts.earliest_timestamp),
            **{f"{k}_list": ", ".join(map(str, v)) for k, v in params.items() if isinstance(v, list)},
        }

    # -- reporting -------------------------------------------------------------------------

    def publish(self, source: str, batch_index: int) -> str | None:
        """This batch's suite results as a markdown report (an artifact inside a flow run)."""
        batch, self._batch = self._batch, []
        if not batch:
            return None
        md = batch_markdown(source, batch_index, batch)
        key = "contracts-" + "".join(ch if ch.isalnum() else "-" for ch in source.lower())
        try:
            self.steps.report(key, md, f"data contracts, {source} batch {batch_index}")
        except Exception as exc:  # noqa: BLE001 - a report must never fail the batch it reports on
            logger.warning("could not publish the data-contracts report: %s", exc)
        return md


def batch_markdown(source: str, batch_index: int,
                   batch: list[tuple[str, str, Outcome, Severity]]) -> str:
    """A table per suite: each expectation, its severity, and how many rows broke it."""
    lines = [f"## Data contracts: `{source}`, batch {batch_index}", ""]
    suites = list(dict.fromkeys(s for s, *_ in batch))
    for suite in suites:
        mine = [(o, sev) for s, _, o, sev in batch if s == suite]
        failed = sum(not o.success for o, _ in mine)
        verdict = "passed" if not failed else f"{failed} of {len(mine)} expectations failed"
        lines += [f"### {suite}: {verdict}", "",
                  "| expectation | severity | result | rows | unexpected |", "|---|---|---|---|---|"]
        for o, sev in mine:
            result = "ok" if o.success else ("**error**" if o.error else "**failed**")
            unexpected = o.unexpected_count if o.unexpected_count is not None else (
                "-" if o.observed is None else f"observed {_short(o.observed)}")
            lines.append(f"| {o.spec.name} | {sev} | {result} | {o.element_count} | {unexpected} |")
        lines.append("")
    return "\n".join(lines)


def _severities(settings: Settings) -> dict[str, dict[str, Severity]]:
    """Each expectation's severity: the suite file's, unless contracts.severity overrides it."""
    out: dict[str, dict[str, Severity]] = {}
    for name in engine.SUITE_NAMES:
        out[name] = {e.name: e.severity for e in engine.load_spec(name).expectations}
    for suite, overrides in settings.contracts.severity.items():
        if suite not in out:
            raise ConfigError(f"contracts.severity.{suite}", suite,
                              f"no such suite; suites are {', '.join(engine.SUITE_NAMES)}")
        for name, severity in overrides.items():
            if name not in out[suite]:
                raise ConfigError(f"contracts.severity.{suite}.{name}", name,
                                  f"no such expectation in data_contracts/suites/{suite}.json; "
                                  f"it has {', '.join(out[suite])}")
            out[suite][name] = severity
    return out


def _log(suite: str, rows: int, outcomes: list[Outcome]) -> None:
    failed = [f"{o.spec.name} ({o.unexpected_count if o.unexpected_count is not None else 'batch'})"
              for o in outcomes if not o.success]
    logger.info("%s: %d rows, %d expectations, %s", suite, rows, len(outcomes),
                "all passed" if not failed else "failed: " + ", ".join(failed))


def _modalities(spec: ModelSpec, source: SourceConfig | None) -> list[str]:
    """What the model embeds; images too for a text model that embeds their model captions."""
    found: list[str] = list(spec.modalities)
    if (source is not None and source.kind == "images" and "image" not in found
            and source.options.caption in ("model", "both")):
        found.append("image")
    return found


def _image_check(source: SourceConfig | None) -> frames.ImageCheck | None:
    from data_contracts.images import check_image

    options = source.options if source else None
    return lambda data: check_image(data, options)


def _observed(o: Outcome, row: frames.Row | None) -> str | None:
    if row is None or not o.spec.columns:
        return None if o.observed is None else _short(o.observed)
    values = [f"{c}={_short(row.get(c))}" for c in o.spec.columns]
    return _short(row.get(o.spec.columns[0])) if len(values) == 1 else ", ".join(values)


def _short(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        text = str(int(value)) if value.is_integer() else f"{value:.6g}"
    else:
        text = str(value)
    return text if len(text) <= _MAX_OBSERVED else text[:_MAX_OBSERVED] + "..."


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def _reason(o: Outcome, row: frames.Row | None, context: dict[str, Any]) -> str:
    """The suite's reason template filled with the row, the parameters and the observed value."""
    first = row.get(o.spec.columns[0]) if row and o.spec.columns else o.observed
    fields = _Fields({**context, **(row or {}), "observed": first})
    try:
        return string.Formatter().vformat(o.spec.reason, (), fields)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return f"{o.spec.reason} (observed: {_short(first)})"
