"""wait(): adaptive polling on a simulated clock (no real sleeping), through a real botocore client,
and the local backend's prompt return, measured on a real local execution."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from evalstack.runtime.execution import (
    LOCAL_POLL_SECONDS,
    MAX_POLL_SECONDS,
    FailedStatusError,
    TimeoutExceededError,
)
from tests.support.simulated_sagemaker import simulated_execution


def test_starts_fast_then_backs_off_to_poll() -> None:
    execution, service = simulated_execution(duration=23)
    execution.wait(poll=8)
    clock = service.clock
    # 1, 2, 4, then `poll`; the execution ends at t=23 and the check at t=23 sees it.
    assert clock.sleeps == [1, 2, 4, 8, 8]
    assert service.calls == [0, 1, 3, 7, 15, 23]
    assert execution.status == "Succeeded"


@pytest.mark.parametrize("poll", [1, 5, 30, 60, 120, 600])
def test_a_two_hour_run_costs_at_most_60_describe_calls(poll: float) -> None:
    execution, service = simulated_execution(duration=2 * 3600)
    execution.wait(poll=poll)
    assert len(service.calls) <= 60
    assert service.calls[-1] >= 7200 > service.calls[-2]  # the last check is the first one after the end


@pytest.mark.parametrize("poll", [1, 60, 120, 600])
def test_never_polls_less_often_than_max_of_poll_and_five_minutes(poll: float) -> None:
    execution, service = simulated_execution(duration=10 * 3600)
    execution.wait(poll=poll)
    assert max(service.clock.sleeps) <= max(poll, MAX_POLL_SECONDS)
    # The end is noticed within that bound, not 15 minutes late.
    assert service.calls[-1] - 10 * 3600 <= max(poll, MAX_POLL_SECONDS)
    # Any two-hour window of a long run stays within the 60-call budget.
    calls = service.calls
    assert max(sum(1 for c in calls if t <= c < t + 7200) for t in calls) <= 60


def test_timeout_raises_at_the_deadline() -> None:
    execution, service = simulated_execution(duration=3600)
    with pytest.raises(TimeoutError, match="still Executing after 10s") as raised:
        execution.wait(poll=8, timeout=10)
    assert isinstance(raised.value, TimeoutExceededError)
    assert service.clock.sleeps == [1, 2, 4, 3]  # the last sleep ends exactly at the deadline
    assert len(service.calls) == 5


def test_reference_positional_form_is_poll_then_timeout() -> None:
    execution, service = simulated_execution(duration=3600)
    with pytest.raises(TimeoutExceededError):
        execution.wait(8, 10)
    assert service.clock.sleeps == [1, 2, 4, 3]


def test_target_status_returns_when_reached() -> None:
    execution, service = simulated_execution(duration=30)
    execution.wait(target_status="Executing", poll=5)
    assert execution.status == "Executing"
    assert len(service.calls) == 1


def test_ending_in_another_status_raises_failed_status_error() -> None:
    execution, _ = simulated_execution(duration=5)
    with pytest.raises(RuntimeError, match="ended Succeeded, not Stopped") as raised:
        execution.wait(target_status="Stopped", poll=1)
    assert isinstance(raised.value, FailedStatusError)
    assert raised.value.status == "Succeeded"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"poll": 0}, "poll: must be a positive number of seconds, got 0"),
        ({"poll": -1}, "poll: must be a positive number of seconds, got -1"),
        ({"target_status": "Done"}, "target_status: must be one of"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    execution, service = simulated_execution(duration=1)
    with pytest.raises(ValueError, match=message):
        execution.wait(**kwargs)
    assert service.calls == []


class RecordingClock:
    """The real clock, recording each pause wait() takes."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(seconds)


def test_local_wait_checks_every_50_ms_whatever_poll_says(tmp_path: Path) -> None:
    """The runner records the end in the local store; wait() sees it at its next 50 ms check, so it
    returns within 100 ms of the end (bench/local_wait_latency.py measures it; tests assert no wall time)."""
    from evalstack.evaluate import CustomScorerEvaluator

    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "response": "a", "reference": "a"}}\n' for i in range(12)))
    execution = CustomScorerEvaluator(evaluator="accuracy", dataset=str(data), model="listed").evaluate()
    clock = RecordingClock()
    execution._clock = clock
    execution.wait(poll=30)
    assert execution.status == "Succeeded"
    assert clock.sleeps and set(clock.sleeps) == {LOCAL_POLL_SECONDS}
