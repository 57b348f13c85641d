"""``evalstack evaluate ...``: start an evaluation from the terminal and print its results.

Every argument of the Python API has a flag (hyphens or underscores): the model and base model, the
region, MLflow, KMS, the model package group, sharding, hyperparameters (``--hp KEY=VALUE``), subtasks
(a name, repeated, or ALL), custom judge metrics from a JSON file, and ``--dry-run``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

    from evalstack.runtime.execution import EvaluationPipelineExecution

# The evaluators and what prints their results are imported by the handlers: building the parser
# (``evalstack --help``) must not load the evaluation stack.


def _pairs(values: list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            raise ValueError(f"{what}: expected KEY=VALUE, got {value!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _common(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "s3_output_path": args.output,
        "evaluate_base_model": args.evaluate_base_model or args.base_model is not None,
        "base_model": args.base_model,
        "base_eval_name": args.name,
        "region": args.region,
        "mlflow_resource_arn": args.mlflow_resource_arn,
        "mlflow_experiment_name": args.mlflow_experiment,
        "mlflow_run_name": args.mlflow_run,
        "kms_key_id": args.kms_key_id,
        "model_package_group": args.model_package_group,
        "instance_count": args.instance_count,
        "instance_type": args.instance_type,
    }


def _apply_hyperparameters(evaluator: Any, args: argparse.Namespace) -> None:
    for key, value in _pairs(args.hp, "--hp").items():
        try:
            setattr(evaluator.hyperparameters, key.replace("-", "_"), value)
        except AttributeError as err:  # an unknown name is a usage error on the command line
            raise ValueError(str(err)) from err
    if args.limit is not None:
        evaluator.hyperparameters.limit = args.limit


class _ProgressBar:
    """A bar over the items every shard has finished, read from the shards' progress files.

    Shown only when stderr is a terminal. Items already done when the bar first appears are its
    starting point, not counted in its rate, so the rate is items per second actually seen."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.enabled = sys.stderr.isatty()

    def __call__(self, execution: EvaluationPipelineExecution) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        from evalstack.engine.run import read_progress

        done, total = read_progress(execution.s3_output_path)
        if not total:
            return
        if self.bar is None:
            self.bar = tqdm(total=total, initial=done, desc=execution.name, unit="item", file=sys.stderr, smoothing=0)
        self.bar.total = max(self.bar.total, total)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _finish(evaluator: Any, args: argparse.Namespace, **evaluate: Any) -> int:
    from evalstack import storage
    from evalstack.results.summary import summary_text
    from evalstack.runtime.evaluators import DryRun

    started = evaluator.evaluate(dry_run=args.dry_run, **evaluate)
    if isinstance(started, DryRun):
        print(json.dumps({"spec": started.spec, "pipeline_definition": started.pipeline_definition}, indent=2))
        return 0
    execution: EvaluationPipelineExecution = started
    print(f"Execution: {execution.name} ({execution.arn})", flush=True)
    if args.no_wait:
        return 0
    bar = _ProgressBar()
    try:
        execution.wait(poll=5, progress=bar)  # a failed or stopped execution raises: exit 1
    finally:
        bar.close()
    print(summary_text(execution.results()))
    print(f"Status:    {execution.status}")
    print(f"Results:   {storage.join(execution.s3_output_path, 'results.json')}")
    print(f"Samples:   {storage.join(execution.s3_output_path, 'samples.jsonl')}")
    print(f"Report:    {storage.join(execution.s3_output_path, 'report.html')} (and report.md)")
    return 0


def _runner_first(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """On the local backend, start the execution's runner before the handler imports and checks, so the
    runner's warm parent imports the step stack meanwhile (evalstack.pipeline.local.standby)."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from evalstack.runtime.backend import picks_local

        if args.dry_run or not picks_local(region=args.region):
            return handler(args)
        from evalstack import storage
        from evalstack.pipeline.local import standby

        standby.start(storage.evalstack_home())
        try:
            return handler(args)
        finally:
            standby.discard()  # unused when the handler failed before it started the execution

    return run


@_runner_first
def _custom_scorer(args: argparse.Namespace) -> int:
    from evalstack.runtime.evaluators import CustomScorerEvaluator

    evaluator = CustomScorerEvaluator(
        evaluator=args.metric, dataset=args.dataset, columns=_pairs(args.column, "--column"), **_common(args)
    )
    _apply_hyperparameters(evaluator, args)
    return _finish(evaluator, args)


@_runner_first
def _benchmark(args: argparse.Namespace) -> int:
    from evalstack.runtime.evaluators import BenchMarkEvaluator

    subtasks = [s for value in args.subtask for s in value.split(",") if s] or None
    evaluator = BenchMarkEvaluator(args.benchmark, subtasks=subtasks, **_common(args))
    _apply_hyperparameters(evaluator, args)
    return _finish(evaluator, args)


def _custom_metrics(path: str | None) -> list[dict[str, Any]]:
    """A JSON list of {name, description, prompt_template[, scale]} objects, as the Python API takes."""
    if path is None:
        return []
    text = Path(path).read_text(encoding="utf-8")  # FileNotFoundError: exit 3, "not found"
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}") from err
    if not isinstance(metrics, list) or not all(isinstance(m, dict) for m in metrics):
        raise ValueError(f"{path}: expected a JSON list of objects with name, description and prompt_template")
    return metrics


@_runner_first
def _judge(args: argparse.Namespace) -> int:
    from evalstack.runtime.evaluators import LLMAsJudgeEvaluator

    evaluator = LLMAsJudgeEvaluator(
        evaluator_model=args.judge,
        dataset=args.dataset,
        builtin_metrics=args.metric,
        custom_metrics=_custom_metrics(args.custom_metrics),
        columns=_pairs(args.column, "--column"),
        **_common(args),
    )
    _apply_hyperparameters(evaluator, args)
    return _finish(evaluator, args)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model reference (see docs/models.md)")
    parser.add_argument("--base-model", help="also evaluate this base model and compare")
    parser.add_argument(
        "--evaluate-base-model", action="store_true", help="compare with the base model (from --base-model or lineage)"
    )
    parser.add_argument("--output", "--s3-output-path", help="output path or s3:// prefix")
    parser.add_argument("--name", "--base-eval-name", help="evaluation name (base_eval_name)")
    parser.add_argument("--region", help="AWS region (SageMaker backend, Bedrock and SageMaker models)")
    parser.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="hyperparameter")
    parser.add_argument("--limit", type=int, help="evaluate at most N samples")
    parser.add_argument("--mlflow-resource-arn", help="SageMaker MLflow tracking server ARN")
    parser.add_argument("--mlflow-experiment", "--mlflow-experiment-name", help="MLflow experiment name")
    parser.add_argument("--mlflow-run", "--mlflow-run-name", help="MLflow run name")
    parser.add_argument("--kms-key-id", help="KMS key for the evaluation's outputs")
    parser.add_argument("--model-package-group", help="model package group the evaluation belongs to")
    parser.add_argument("--instance-count", type=int, help="shard over this many Processing instances")
    parser.add_argument("--instance-type", help="Processing instance type")
    parser.add_argument("--dry-run", action="store_true", help="check everything, print spec and definition")
    parser.add_argument("--no-wait", action="store_true", help="start and print the execution, do not wait")


def register(commands: argparse._SubParsersAction) -> None:
    kinds = commands.add_parser("evaluate", help="run an evaluation").add_subparsers(required=True)

    scorer = kinds.add_parser("custom-scorer", help="score a dataset with preset metrics")
    scorer.add_argument("--dataset", required=True, help="JSONL, CSV or Parquet; path, file:// or s3://")
    scorer.add_argument("--metric", "--evaluator", action="append", required=True, help="preset metric (repeatable)")
    scorer.add_argument("--column", action="append", default=[], metavar="ROLE=COLUMN", help="column mapping")
    _add_common(scorer)
    scorer.set_defaults(handler=_custom_scorer)

    bench = kinds.add_parser("benchmark", help="run a benchmark")
    bench.add_argument("benchmark")
    bench.add_argument(
        "--subtask", "--subtasks", action="append", default=[], help="subtask, comma list or ALL (repeatable)"
    )
    _add_common(bench)
    bench.set_defaults(handler=_benchmark)

    judge = kinds.add_parser("llm-as-judge", aliases=["judge"], help="LLM-as-judge over a dataset")
    judge.add_argument("--dataset", required=True)
    judge.add_argument(
        "--judge", "--evaluator-model", required=True, help="judge model: a Bedrock model id or a model reference"
    )
    judge.add_argument(
        "--metric", "--builtin-metric", action="append", default=[], help="built-in judge metric (repeatable)"
    )
    judge.add_argument("--custom-metrics", metavar="FILE", help="JSON list of custom judge metrics")
    judge.add_argument("--column", action="append", default=[], metavar="ROLE=COLUMN", help="column mapping")
    _add_common(judge)
    judge.set_defaults(handler=_judge)
