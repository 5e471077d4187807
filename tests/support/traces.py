"""The spans this test process makes, kept in memory (the SDK's own exporter): the provider is
one per process, so one exporter is added once and each test reads the traces it made."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def exporter() -> Any:
    """The in-memory exporter every span of this process also goes to."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tessera.core import telemetry

    memory = InMemorySpanExporter()
    telemetry.add_processor(SimpleSpanProcessor(memory))
    return memory


def trace_of(trace_id: str) -> list[Any]:
    """The finished spans of one trace (hex id), in the order they ended."""
    return [s for s in exporter().get_finished_spans()
            if f"{s.context.trace_id:032x}" == trace_id]


def children(spans: list[Any], parent: Any) -> list[Any]:
    """The spans of `spans` whose parent is `parent`."""
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def named(spans: list[Any], name: str) -> list[Any]:
    """The spans called `name`."""
    return [s for s in spans if s.name == name]


def finished_trace(trace_id: str, root: str, seconds: float = 10.0) -> list[Any]:
    """The trace once its span `root` has ended: a server ends a request's span after the
    response went out, so the client can read the answer before the span is finished."""
    import time

    deadline = time.monotonic() + seconds
    while not named(spans := trace_of(trace_id), root) and time.monotonic() < deadline:
        time.sleep(0.02)
    return spans
