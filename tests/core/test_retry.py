"""The one retry policy (tessera.core.retry): what waits how long, what is retried, what is
raised; sleeps are recorded, never slept."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tessera.core.errors import PipelineError, StoreUnavailableError, TransientError
from tessera.core.retry import DELAYS, RetryPolicy, call, is_transient, retry_failed


def _policy(**kwargs: Any) -> tuple[RetryPolicy, list[float]]:
    slept: list[float] = []
    return RetryPolicy(sleep=slept.append, **kwargs), slept


def _flaky(errors: list[BaseException], result: str = "done") -> Any:
    """A call that raises each of `errors` in turn, then returns `result`."""
    def fn() -> str:
        if errors:
            raise errors.pop(0)
        return result
    return fn


def test_the_default_policy_is_three_retries_after_2_5_and_15_s() -> None:
    policy = RetryPolicy()
    assert (policy.delays, policy.retries) == (DELAYS, 3) == ((2.0, 5.0, 15.0), 3)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 9)] == [2.0, 5.0, 15.0, 15.0, 15.0]
    assert RetryPolicy(delays=()).delay(1) == 0.0
    assert is_transient(StoreUnavailableError("down")) and not is_transient(PipelineError("bad"))


def test_call_retries_a_transient_failure_after_each_delay(
        caplog: pytest.LogCaptureFixture) -> None:
    policy, slept = _policy()
    with caplog.at_level(logging.WARNING, logger="tessera.core.retry"):
        assert call(_flaky([TransientError("a"), TransientError("b")]), policy, "upsert") == "done"
    assert slept == [2.0, 5.0]
    assert [r.getMessage() for r in caplog.records] == [
        "upsert failed (a); retrying in 2 s", "upsert failed (b); retrying in 5 s"]


def test_call_raises_the_last_failure_when_the_retries_run_out() -> None:
    policy, slept = _policy(retries=2)
    errors: list[BaseException] = [TransientError(str(n)) for n in range(5)]
    with pytest.raises(TransientError, match="^2$"):
        call(_flaky(errors), policy, "upsert")
    assert slept == [2.0, 5.0] and len(errors) == 2


def test_call_raises_a_failure_that_is_not_retryable_at_once() -> None:
    policy, slept = _policy()
    with pytest.raises(PipelineError, match="wrong dimension"):
        call(_flaky([PipelineError("wrong dimension")]), policy, "upsert")
    assert slept == []
    picky, slept = _policy(retryable=lambda exc: isinstance(exc, KeyError))
    assert call(_flaky([KeyError("k")]), picky, "x") == "done" and slept == [2.0]


def _attempts(fail: dict[int, int], log: list[list[int]]) -> Any:
    """An attempt over item indices: item i fails `fail[i]` times (with OSError), then doubles."""
    def attempt(indices: list[int]) -> list[Any]:
        log.append(list(indices))
        out: list[Any] = []
        for i in indices:
            if fail.get(i, 0) > 0:
                fail[i] -= 1
                out.append(OSError(f"item {i} lost"))
            else:
                out.append(i * 2)
        return out
    return attempt


def _give_up(index: int, error: BaseException, tries: int) -> Exception:
    return PipelineError(f"item {index}: {tries} tries, the last: {error}")


def test_retry_failed_keeps_the_successes_and_retries_only_the_failed() -> None:
    policy, slept = _policy(retryable=lambda exc: isinstance(exc, OSError))
    sent: list[list[int]] = []
    retried: list[int] = []

    out = retry_failed(5, _attempts({1: 2, 4: 1}, sent), policy, give_up=_give_up, window=2,
                       on_retry=retried.append)

    assert out == [0, 2, 4, 6, 8]  # in input order
    # Windows of two; the failed go first into the next window; the delay follows the item
    # retried most often in that window.
    assert sent == [[0, 1], [1, 2], [1, 3], [4], [4]]
    assert slept == [2.0, 5.0, 2.0] and retried == [1, 1, 1]


def test_retry_failed_without_a_window_sends_all_pending_at_once() -> None:
    policy, slept = _policy(retryable=lambda exc: isinstance(exc, OSError))
    sent: list[list[int]] = []

    assert retry_failed(3, _attempts({0: 1, 2: 2}, sent), policy, give_up=_give_up) == [0, 2, 4]
    assert sent == [[0, 1, 2], [0, 2], [2]] and slept == [2.0, 5.0]
    assert retry_failed(0, _attempts({}, sent), policy, give_up=_give_up) == []


def test_retry_failed_gives_up_with_the_callers_message() -> None:
    policy, slept = _policy(retries=2, retryable=lambda exc: isinstance(exc, OSError))

    with pytest.raises(PipelineError, match="item 1: 3 tries, the last: item 1 lost") as err:
        retry_failed(3, _attempts({1: 99}, []), policy, give_up=_give_up)
    assert slept == [2.0, 5.0] and isinstance(err.value.__cause__, OSError)


def test_retry_failed_raises_a_failure_that_is_not_retryable_at_once() -> None:
    policy, slept = _policy(retryable=lambda exc: not isinstance(exc, KeyError))

    def attempt(indices: list[int]) -> list[Any]:
        return [KeyError("no token") if i == 1 else i for i in indices]

    with pytest.raises(PipelineError, match="item 1: 1 tries"):
        retry_failed(2, attempt, policy, give_up=_give_up)
    assert slept == []


def test_prefect_tasks_take_the_delays_and_the_rule_from_the_policy() -> None:
    """`PrefectSteps` hands Prefect the same delays, count and retryable rule."""
    from prefect.states import Failed

    from flows.steps import _retry_if_transient, as_task

    def store_write() -> None:
        """A step."""

    io, plain = as_task("upsert", store_write, io=True), as_task("parse", store_write)
    assert (io.retries, io.retry_delay_seconds) == (3, [2.0, 5.0, 15.0])
    assert io.retry_condition_fn is _retry_if_transient and plain.retries == 0
    assert _retry_if_transient(io, None, Failed(data=StoreUnavailableError("down")))
    assert not _retry_if_transient(io, None, Failed(data=PipelineError("bad input")))
