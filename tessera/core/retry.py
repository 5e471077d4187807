"""One retry policy, for every step that crosses a network or waits on a lock: the plain steps
(`tessera.core.steps`), the Prefect tasks (`flows.steps`) and both Modal clients.

By default: up to three retries, after 2, 5 and 15 s, and only for a `TransientError` (a server
restarting, a timeout, a lock held by another run). Anything else fails the same way on a retry,
only later, so it is raised at once. A caller may name its own rule (the Modal clients retry
whatever Modal cannot explain) and its own count (`embedding.modal.retries`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tessera.core.errors import TransientError

T = TypeVar("T")
DELAYS: tuple[float, ...] = (2.0, 5.0, 15.0)
logger = logging.getLogger(__name__)

# Given (item index, its last error, how many times it failed): the exception to raise instead.
GiveUp = Callable[[int, BaseException, int], BaseException]


def is_transient(exc: BaseException) -> bool:
    """True for the failures a retry can fix."""
    return isinstance(exc, TransientError)


@dataclass(frozen=True)
class RetryPolicy:
    """How many retries, the wait before each (the last one repeats), what is worth retrying,
    and how to wait (a test passes `sleep=slept.append`)."""

    delays: tuple[float, ...] = DELAYS
    retries: int = len(DELAYS)
    retryable: Callable[[BaseException], bool] = is_transient
    sleep: Callable[[float], None] = time.sleep

    def delay(self, retry: int) -> float:
        """The wait before retry number `retry` (counted from 1)."""
        return self.delays[min(retry, len(self.delays)) - 1] if self.delays else 0.0

    def wait(self, retry: int, why: str) -> None:
        """Say why and for how long, then wait before retry number `retry`."""
        delay = self.delay(retry)
        logger.warning("%s; retrying in %.0f s", why, delay)
        self.sleep(delay)


DEFAULT_POLICY = RetryPolicy()


def call(fn: Callable[[], T], policy: RetryPolicy, name: str) -> T:
    """`fn()`, retried per `policy`; a failure it does not retry, or the last one, is raised."""
    retry = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            retry += 1
            if retry > policy.retries or not policy.retryable(exc):
                raise
            policy.wait(retry, f"{name} failed ({exc})")


def retry_failed(count: int, attempt: Callable[[list[int]], Sequence[Any]], policy: RetryPolicy,
                 *, give_up: GiveUp, window: int = 0, what: str = "item(s)",
                 on_retry: Callable[[int], None] | None = None) -> list[Any]:
    """Run items 0..count-1 through `attempt`, `window` at a time (0: all pending at once), and
    retry the failed ones, first in the next window, until each succeeds or the policy runs out.

    `attempt(indices)` returns one outcome per index: its result, or the exception it failed
    with. A failure the policy does not retry, or one out of retries, is raised as
    `give_up(index, error, times failed)`. The results come back in input order.
    """
    results: dict[int, Any] = {}
    tries = [0] * count
    pending = list(range(count))
    size = max(1, window or count)
    while pending:
        now, pending = pending[:size], pending[size:]
        failed = _settle(now, attempt(now), results, tries, policy, give_up)
        if failed:
            if on_retry is not None:
                on_retry(len(failed))
            policy.wait(max(tries[i] for i in failed), f"{len(failed)} {what} failed")
            pending = failed + pending
    return [results[i] for i in range(count)]


def _settle(indices: list[int], outcomes: Sequence[Any], results: dict[int, Any],
            tries: list[int], policy: RetryPolicy, give_up: GiveUp) -> list[int]:
    """Keep the results; count the failures and return their indices (or raise, per policy)."""
    failed = []
    for index, outcome in zip(indices, outcomes, strict=True):
        if not isinstance(outcome, BaseException):
            results[index] = outcome
            continue
        tries[index] += 1
        if not policy.retryable(outcome) or tries[index] > policy.retries:
            raise give_up(index, outcome, tries[index]) from outcome
        failed.append(index)
    return failed
