"""How the pipeline's steps run. The pipeline names each step and says whether it is I/O; the
caller decides what running a step means: a plain call here (`PlainSteps`, for the CLI and any
script), or a Prefect task with retries and artifacts (`flows.steps.PrefectSteps`, for flows).

One retry policy for every I/O step: up to three retries after 2, 5 and 15 s, and only for a
`TransientError` (a server restarting, a timeout, a lock held by another run). Anything else
fails the same way on a retry, only later, so it is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from tessera.core.errors import TransientError

T = TypeVar("T")
RETRY_DELAYS: tuple[float, ...] = (2.0, 5.0, 15.0)
logger = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """True for the failures a retry can fix."""
    return isinstance(exc, TransientError)


class Steps(Protocol):
    """Runs the pipeline's named steps and publishes its reports."""

    def run(self, name: str, fn: Callable[..., T], *args: Any, io: bool = False,
            **kwargs: Any) -> T:
        """Run one step; an `io` step is retried on transient errors."""
        ...

    def report(self, key: str, markdown: str, description: str) -> None:
        """Publish a markdown report (a Prefect artifact inside a flow run)."""
        ...

    def table(self, key: str, rows: list[dict[str, Any]], description: str) -> None:
        """Publish a table report."""
        ...


class PlainSteps:
    """Steps as plain calls in this process: no orchestrator, same retry policy."""

    def __init__(self, delays: tuple[float, ...] = RETRY_DELAYS,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.delays = delays
        self.sleep = sleep
        self.reports: dict[str, str] = {}

    def run(self, name: str, fn: Callable[..., T], *args: Any, io: bool = False,
            **kwargs: Any) -> T:
        """Call `fn`; retry an I/O step after each delay while it fails transiently."""
        for delay in (*self.delays, None) if io else (None,):
            try:
                return fn(*args, **kwargs)
            except TransientError as exc:
                if delay is None:
                    raise
                logger.warning("%s failed (%s); retrying in %.0f s", name, exc, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def report(self, key: str, markdown: str, description: str) -> None:
        """Keep the latest report per key (the CLI has no artifact store to send it to)."""
        self.reports[key] = markdown

    def table(self, key: str, rows: list[dict[str, Any]], description: str) -> None:
        """Keep the table as markdown, like `report`."""
        if rows:
            head = list(rows[0])
            lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(str(r.get(h)) for h in head) + " |" for r in rows]
            self.reports[key] = "\n".join(lines)
