"""``evalstack executions list|show|wait|stop|retry``: follow evaluations on the chosen backend.

An execution is named by its ARN, its id (the ARN's last part) or its name. The backend is chosen as
for the evaluators (``EVALSTACK_BACKEND``, ``--region``); see :mod:`evalstack.runtime.backend`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from evalstack.cli.kinds import eval_kind

if TYPE_CHECKING:
    from evalstack.runtime.execution import EvaluationPipelineExecution, StepDetail


def _step_line(step: StepDetail) -> str:
    line = f"  {step.name:<24} {step.status:<10} {step.start_time or '-':<32} {step.end_time or '-'}"
    if step.failure_reason:
        line += f"\n    {step.failure_reason.strip().splitlines()[-1]}"
    return line


def _list(args: argparse.Namespace) -> int:
    from evalstack.runtime.execution import EvaluationPipelineExecution

    executions = EvaluationPipelineExecution.get_all(args.type, region=args.region)[: args.limit]
    if not executions:
        print("no executions")
        return 0
    print(f"{'NAME':<56} {'TYPE':<13} {'STATUS':<10} {'CREATED':<26} ARN")
    for e in executions:
        created = e.creation_time.isoformat(timespec="seconds") if e.creation_time else "-"
        print(f"{e.name:<56} {e.eval_type:<13} {e.status:<10} {created:<26} {e.arn}")
    return 0


def _get(args: argparse.Namespace) -> EvaluationPipelineExecution:
    from evalstack.runtime.execution import EvaluationPipelineExecution

    return EvaluationPipelineExecution.get(args.execution, region=args.region)


def _show(args: argparse.Namespace) -> int:
    execution = _get(args)
    status = execution.get_status()
    print(f"Execution: {execution.name}")
    print(f"ARN:       {execution.arn}")
    print(f"Type:      {execution.eval_type}")
    print(f"Status:    {execution.status}")
    print(f"Output:    {execution.s3_output_path}")
    if execution.failure_reason:
        print(f"Failure:   {execution.failure_reason}")
    print("Steps:")
    for step in status.step_details:
        print(_step_line(step))
    return 0


class _Progress:
    """Prints each step once per status it reaches, as the execution advances."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, execution: EvaluationPipelineExecution) -> None:
        for step in execution.steps():
            if (step.name, step.status) not in self.seen:
                self.seen.add((step.name, step.status))
                print(_step_line(step), flush=True)


def _wait(args: argparse.Namespace) -> int:
    """Exit 0 when it succeeded; a failed or stopped execution raises FailedStatusError (exit 1)."""
    execution = _get(args)
    print(f"Waiting for {execution.name} ({execution.status})", flush=True)
    execution.wait(poll=args.poll, timeout=args.timeout, progress=_Progress())
    print(f"{execution.name}: {execution.status}; results in {execution.s3_output_path}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    execution = _get(args)
    if execution.status not in ("Executing", "Stopping"):
        raise ValueError(f"execution {execution.name} is {execution.status}; only an executing one can be stopped")
    execution.stop()
    print(f"{execution.name}: {execution.status}")
    return 0


def _retry(args: argparse.Namespace) -> int:
    execution = _get(args)
    if execution.status not in ("Failed", "Stopped"):
        raise ValueError(
            f"execution {execution.name} is {execution.status}; only a failed or stopped one can be retried"
        )
    execution.retry()
    print(f"{execution.name}: {execution.status} (retried; finished steps are kept)")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("executions", help="list, show, wait for, stop or retry evaluation executions")
    sub = group.add_subparsers(required=True)

    listing = sub.add_parser("list", help="executions, newest first")
    listing.add_argument("--type", type=eval_kind, help="only this kind (benchmark, custom_scorer, llm_as_judge)")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=_list)

    show = sub.add_parser("show", help="status and steps of one execution")
    show.set_defaults(handler=_show)

    wait = sub.add_parser("wait", help="wait for an execution, printing step progress")
    wait.add_argument("--poll", type=float, default=30, help="steady polling interval in seconds")
    wait.add_argument("--timeout", type=float, help="give up after this many seconds")
    wait.set_defaults(handler=_wait)

    stop = sub.add_parser("stop", help="stop an executing execution")
    stop.set_defaults(handler=_stop)

    retry = sub.add_parser("retry", help="retry a failed or stopped execution (finished steps are kept)")
    retry.set_defaults(handler=_retry)

    for parser in (show, wait, stop, retry):
        parser.add_argument("execution", help="execution name, id or ARN")
    for parser in (listing, show, wait, stop, retry):
        parser.add_argument("--region", help="AWS region (SageMaker backend)")
