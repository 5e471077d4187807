"""How the pipeline's steps run. The pipeline names each step and says whether it is I/O; the
caller decides what running a step means: a plain call here (`PlainSteps`, for the CLI and any
script), or a Prefect task with retries and artifacts (`flows.steps.PrefectSteps`, for flows).

Every I/O step retries on the one policy (`tessera.core.retry`): up to three retries after 2, 5
and 15 s, and only for a `TransientError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, Protocol, TypeVar

from tessera.core.retry import DEFAULT_POLICY, RetryPolicy, call

T = TypeVar("T")


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

    def __init__(self, policy: RetryPolicy = DEFAULT_POLICY,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.policy = policy if sleep is None else replace(policy, sleep=sleep)
        self.reports: dict[str, str] = {}

    def run(self, name: str, fn: Callable[..., T], *args: Any, io: bool = False,
            **kwargs: Any) -> T:
        """Call `fn`; an I/O step is retried per the policy."""
        if not io:
            return fn(*args, **kwargs)
        return call(partial(fn, *args, **kwargs), self.policy, name)

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
