"""The pipeline's steps as Prefect tasks: what `PlainSteps` does, visible in the Prefect UI.

Each named step becomes a task run; I/O steps retry on the one policy (`tessera.core.retry`), and
reports become artifacts. Arguments reach the task unchanged and unwalked (`quote`): Prefect
would otherwise visit every element of a batch looking for futures (0.76 s for one batch's
1,846 chunk texts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from tessera.core.retry import DEFAULT_POLICY

T = TypeVar("T")
_TASKS: dict[tuple[Callable[..., Any], str, bool], Task[Any, Any]] = {}


def _retry_if_transient(_task: Any, _run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - only inspecting why it failed
        return DEFAULT_POLICY.retryable(exc)
    return False


def as_task(name: str, fn: Callable[..., T], io: bool = False) -> Task[Any, T]:
    """The Prefect task for one named step (made once per process)."""
    key = (fn, name, io)
    if key not in _TASKS:
        options: dict[str, Any] = {"name": name, "cache_policy": NO_CACHE}
        if io:
            retries = DEFAULT_POLICY.retries
            options |= {"retries": retries, "retry_condition_fn": _retry_if_transient,
                        "retry_delay_seconds": [DEFAULT_POLICY.delay(n + 1) for n in range(retries)]}
        _TASKS[key] = task(fn, **options)
    return _TASKS[key]


class PrefectSteps:
    """Steps as Prefect task runs of the current flow run."""

    def run(self, name: str, fn: Callable[..., T], *args: Any, io: bool = False,
            **kwargs: Any) -> T:
        """Run the step as a task run (retried per the policy when `io`)."""
        result: T = as_task(name, fn, io)(*[quote(a) for a in args],
                                          **{k: quote(v) for k, v in kwargs.items()})
        return result

    def report(self, key: str, markdown: str, description: str) -> None:
        """A markdown artifact on the flow run."""
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key=key, markdown=markdown, description=description)

    def table(self, key: str, rows: list[dict[str, Any]], description: str) -> None:
        """A table artifact on the flow run."""
        from prefect.artifacts import create_table_artifact

        create_table_artifact(key=key, table=rows, description=description)
