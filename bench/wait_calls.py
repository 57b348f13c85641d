"""The DescribePipelineExecution calls ``execution.wait()`` makes over a simulated 2-hour execution.

    python -m bench.wait_calls                 # poll=30 (the default), call by call, then a summary
    python -m bench.wait_calls --poll 60 --hours 3

The clock is simulated (tests/support/simulated_sagemaker.py): no real sleeping, and the calls go
through a real botocore client whose DescribePipelineExecution answers come from the simulation.
"""

from __future__ import annotations

import argparse

from tests.support.simulated_sagemaker import simulated_execution

SUMMARY_POLLS = (1, 5, 30, 60, 120)


def describe_calls(duration: float, poll: float) -> list[float]:
    execution, service = simulated_execution(duration)
    execution.wait(poll=poll)
    return service.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--poll", type=float, default=30)
    parser.add_argument("--hours", type=float, default=2)
    args = parser.parse_args()
    duration = args.hours * 3600
    calls = describe_calls(duration, args.poll)
    print(f"wait(poll={args.poll:g}) on an execution that runs {duration:.0f} s: {len(calls)} describe calls")
    print(f"{'call':>4}  {'at (s)':>8}  {'interval (s)':>12}")
    previous = None
    for i, at in enumerate(calls, 1):
        interval = "" if previous is None else f"{at - previous:12.1f}"
        print(f"{i:>4}  {at:8.1f}  {interval:>12}")
        previous = at
    print(f"finished noticed {calls[-1] - duration:.1f} s after the end ({(calls[-1] - duration) / duration:.1%})")
    print()
    print(f"{'poll':>6}  {'calls':>5}  {'noticed after end (s)':>21}")
    for poll in SUMMARY_POLLS:
        found = describe_calls(duration, poll)
        print(f"{poll:>6g}  {len(found):>5}  {found[-1] - duration:>21.1f}")


if __name__ == "__main__":
    main()
