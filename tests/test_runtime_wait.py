"""wait(): adaptive polling on a simulated clock (no real sleeping), through a real botocore client."""

from __future__ import annotations

import pytest

from tests.support.simulated_sagemaker import simulated_execution


def test_starts_fast_then_backs_off_to_poll() -> None:
    execution, service = simulated_execution(duration=23)
    execution.wait(poll=8)
    clock = service.clock
    # 1, 2, 4, then `poll`; the execution ends at t=23 and the check at t=23 sees it.
    assert clock.sleeps == [1, 2, 4, 8, 8]
    assert service.calls == [0, 1, 3, 7, 15, 23]
    assert execution.status == "Succeeded"


@pytest.mark.parametrize("poll", [1, 5, 30, 60, 120])
def test_a_two_hour_run_costs_at_most_60_describe_calls(poll: float) -> None:
    execution, service = simulated_execution(duration=2 * 3600)
    execution.wait(poll=poll)
    assert len(service.calls) <= 60
    assert service.calls[-1] >= 7200 > service.calls[-2]  # the last check is the first one after the end


def test_timeout_raises_at_the_deadline() -> None:
    execution, service = simulated_execution(duration=3600)
    with pytest.raises(TimeoutError, match="still Executing after 10s"):
        execution.wait(poll=8, timeout=10)
    assert service.clock.sleeps == [1, 2, 4, 3]  # the last sleep ends exactly at the deadline
    assert len(service.calls) == 5


def test_poll_must_be_positive() -> None:
    execution, _ = simulated_execution(duration=1)
    with pytest.raises(ValueError, match="poll: must be positive, got 0"):
        execution.wait(poll=0)
