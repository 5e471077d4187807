"""Traces with the OpenTelemetry SDK: where a search's or a run's time went, joined to its events.

Every process that does work (the CLI, `tessera api`, `tessera mcp`, a Prefect worker's flow run)
makes spans with one SDK tracer provider: a search is a trace (request, search, query embedding
with its queue wait and model time as attributes, engine query), an ingest run is a trace (run,
source, batch, each step with its counts). Each event row written inside a span carries its `trace_id` and `span_id`, so a slow
day in the marts leads to its traces.

Off by default in the sense that matters: no exporter, so spans are made (ids for the events,
a few microseconds each) and dropped in the process. `[telemetry] exporter = "otlp"` (or the
standard `OTEL_TRACES_EXPORTER=otlp`, or an `OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT`) sends them
over OTLP/HTTP; the SDK's own `OTEL_*` variables (endpoint, headers, service name, sampler)
apply as documented upstream. Query text is never put on a span unless `api.log_queries`.

The SDK is imported on first use: `tessera --help` and `--version` do not load it.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Concatenate, ParamSpec, TypeVar

from tessera.core import env
from tessera.core.settings import Settings, TelemetryConfig

TRACER = "tessera"
P = ParamSpec("P")
R = TypeVar("R")


_lock = threading.Lock()
_provider: Any = None
_tracer: Any = None  # the provider's tracer, made once (get_tracer took ~15 µs a call)
# The Prefect flow run this work belongs to (set by flows/, which alone may import Prefect):
# every span started under it carries `prefect.flow_run.id`.
flow_run_id: ContextVar[str | None] = ContextVar("tessera_flow_run_id", default=None)


def _flow_run_stamp() -> Any:
    """A span processor that stamps each new span with the current flow run's id."""
    from opentelemetry.sdk.trace import SpanProcessor

    class FlowRunIds(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            found = flow_run_id.get()
            if found:
                span.set_attribute("prefect.flow_run.id", found)

    return FlowRunIds()


def setup(config: TelemetryConfig | None = None, role: str = "cli") -> Any:
    """The process's tracer provider, made on the first call (later calls return it: one
    provider per process, as OpenTelemetry's global is set once)."""
    global _provider, _tracer
    if _provider is not None:  # every search calls this: no lock once it is made
        return _provider
    with _lock:
        if _provider is not None:
            return _provider
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        config = config or TelemetryConfig()
        otel = env.otel_variables()
        resource = Resource.create({"service.name": otel.get("OTEL_SERVICE_NAME")
                                    or config.service_name, "tessera.process": role})
        provider = TracerProvider(resource=resource, sampler=_sampler(config, otel))
        provider.add_span_processor(_flow_run_stamp())
        exporter = _exporter(config, otel)
        if exporter is not None:
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _tracer = provider.get_tracer(TRACER)
        _provider = provider
        return provider


def _sampler(config: TelemetryConfig, otel: dict[str, str]) -> Any:
    """None lets the SDK read OTEL_TRACES_SAMPLER; else parent-based at the configured ratio."""
    if otel.get("OTEL_TRACES_SAMPLER"):
        return None
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    return ParentBased(TraceIdRatioBased(config.sample_ratio))


def _exporter(config: TelemetryConfig, otel: dict[str, str]) -> Any:
    """The span exporter the config and the OTEL_* variables ask for, or None."""
    chosen = otel.get("OTEL_TRACES_EXPORTER", "").split(",")[0].strip().lower() or None
    if chosen is None and (otel.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                           or otel.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        chosen = "otlp"
    chosen = chosen or config.exporter
    if chosen == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if chosen == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)
    return None


def add_processor(processor: Any) -> None:
    """Send this process's spans to `processor` too (tests: an in-memory exporter)."""
    setup().add_span_processor(processor)


def shutdown() -> None:
    """Flush what the exporter holds (a process about to exit)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: None dropped, other values as they are or as text;
    our names under `tessera.`, dotted (semantic convention) names as given."""
    return {k if "." in k else f"tessera.{k}":
            v if isinstance(v, (str, bool, int, float)) else str(v)
            for k, v in attributes.items() if v is not None}


def traced(name: str) -> Callable[[Callable[Concatenate[Settings, P], R]],
                                   Callable[Concatenate[Settings, P], R]]:
    """Run a job (its first argument: the Settings) as the span `name`: its own trace, or a
    child of the command or flow that started it."""
    def wrap(job: Callable[Concatenate[Settings, P], R]) -> Callable[Concatenate[Settings, P], R]:
        @functools.wraps(job)
        def run(settings: Settings, /, *args: P.args, **kwargs: P.kwargs) -> R:
            setup(settings.telemetry, role="worker")  # a no-op where the process set it up
            with span(name):
                return job(settings, *args, **kwargs)
        return run
    return wrap


@contextmanager
def span(name: str, server: bool = False, **attributes: Any) -> Iterator[Any]:
    """A span around the block, child of the current one (a new trace when there is none);
    `server`: a request this process answers. An exception leaving the block marks the span as
    an error, with `tessera.error.kind` (our error class) beside the recorded exception."""
    from opentelemetry.trace import SpanKind

    setup()
    kind = SpanKind.SERVER if server else SpanKind.INTERNAL
    with _tracer.start_as_current_span(name, kind=kind, attributes=_clean(attributes),
                                      record_exception=True, set_status_on_exception=True) as s:
        try:
            yield s
        except BaseException as exc:
            s.set_attribute("tessera.error.kind", type(exc).__name__)
            raise


@contextmanager
def step(name: str, **attributes: Any) -> Iterator[Any]:
    """The span the caller made (a request, a tool call, a command), given these attributes,
    when there is one; otherwise a span `name` of its own. A search under a request adds no
    span of its own: each exported span costs it ~80 µs of CPU (benchmarks/REPORT.md)."""
    from opentelemetry import trace

    setup()
    current = trace.get_current_span()
    if not current.is_recording():
        with span(name, **attributes) as own:
            yield own
        return
    current.set_attributes(_clean(attributes))
    try:
        yield current
    except BaseException as exc:
        current.set_attribute("tessera.error.kind", type(exc).__name__)
        raise


def set_attributes(**attributes: Any) -> None:
    """Add attributes (counts known at the end of a step) to the current span."""
    if "opentelemetry.trace" in sys.modules:
        from opentelemetry import trace

        trace.get_current_span().set_attributes(_clean(attributes))


def mark_error(kind: str, message: str, failed: bool = True, span: Any = None) -> None:
    """Give the current span (or `span`) our error kind (an error answered as JSON, no exception leaving
    the block); `failed` also sets its status to error (a 5xx: the server's fault; a refused
    request keeps an unset status, as OpenTelemetry's HTTP conventions say for a 4xx)."""
    if "opentelemetry.trace" in sys.modules:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        current = span or trace.get_current_span()  # `span`: this one, not the current
        current.set_attribute("tessera.error.kind", kind)
        if failed:
            current.set_status(Status(StatusCode.ERROR, message))


def current_ids() -> tuple[str | None, str | None]:
    """The current span's (trace id, span id) as hex, or (None, None) outside a span (and
    without loading the SDK when nothing made a span yet)."""
    if "opentelemetry.trace" not in sys.modules:
        return None, None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


@contextmanager
def remote_parent(headers: dict[str, str]) -> Iterator[None]:
    """Make spans in the block children of a W3C `traceparent` in `headers` (a request from a
    traced client, a call into a Modal container); nothing changes without one."""
    if not any(k.lower() == "traceparent" for k in headers):
        yield
        return
    from opentelemetry import context as otel_context
    from opentelemetry.propagate import extract

    token = otel_context.attach(extract({k.lower(): v for k, v in headers.items()}))
    try:
        yield
    finally:
        otel_context.detach(token)


def traceparent() -> dict[str, str]:
    """The current span as W3C trace context headers (`traceparent`), to pass with a call."""
    setup()
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


class TraceIds(logging.Filter):
    """Puts the current trace and span ids on each log record (`trace_id`, `span_id`; None
    outside a span), for a formatter to print."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id, record.span_id = current_ids()
        return True


class JsonLines(logging.Formatter):
    """One JSON object per log record: time (UTC, ISO 8601), level, logger, message, and the
    trace and span ids when the record was logged inside a span (`--log-format json`)."""

    def format(self, record: logging.LogRecord) -> str:
        from datetime import UTC, datetime

        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        for key in ("trace_id", "span_id"):
            if getattr(record, key, None):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
