"""``evalstack evaluate ...``: start an evaluation from the terminal and print its results."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tqdm import tqdm

from evalstack import storage
from evalstack.engine.run import read_progress
from evalstack.results.writer import EvaluationResult, render_table
from evalstack.runtime.evaluators import BenchMarkEvaluator, CustomScorerEvaluator, LLMAsJudgeEvaluator
from evalstack.runtime.execution import EvaluationPipelineExecution


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
        "evaluate_base_model": args.base_model is not None,
        "base_model": args.base_model,
        "base_eval_name": args.name,
        "mlflow_experiment_name": args.mlflow_experiment,
        "mlflow_run_name": args.mlflow_run,
    }


def _apply_hyperparameters(evaluator: Any, args: argparse.Namespace) -> None:
    for key, value in _pairs(args.hp, "--hp").items():
        try:
            setattr(evaluator.hyperparameters, key, value)
        except AttributeError as err:  # an unknown name is a usage error on the command line
            raise ValueError(str(err)) from err
    if args.limit is not None:
        evaluator.hyperparameters.limit = args.limit


class _ProgressBar:
    """A bar over the items every shard has finished, read from the shards' progress files."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, execution: EvaluationPipelineExecution) -> None:
        done, total = read_progress(execution.s3_output_path)
        if not total:
            return
        if self.bar is None:
            self.bar = tqdm(total=total, desc=execution.name, unit="item", file=sys.stderr)
        self.bar.total = max(self.bar.total, total)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _finish(execution: EvaluationPipelineExecution) -> int:
    bar = _ProgressBar()
    try:
        execution.wait(poll=5, progress=bar)
    finally:
        bar.close()
    results = execution.results()
    comparison = results.pop("comparison", None)
    print(render_table(EvaluationResult(**results), comparison))
    print(f"Execution: {execution.name} ({execution.status})")
    print(f"Results:   {storage.join(execution.s3_output_path, 'results.json')}")
    print(f"Samples:   {storage.join(execution.s3_output_path, 'samples.jsonl')}")
    print(f"Report:    {storage.join(execution.s3_output_path, 'report.md')}")
    return 0


def _custom_scorer(args: argparse.Namespace) -> int:
    evaluator = CustomScorerEvaluator(
        evaluator=args.metric, dataset=args.dataset, columns=_pairs(args.column, "--column"), **_common(args)
    )
    _apply_hyperparameters(evaluator, args)
    return _finish(evaluator.evaluate())


def _benchmark(args: argparse.Namespace) -> int:
    evaluator = BenchMarkEvaluator(args.benchmark, subtasks=args.subtask or None, **_common(args))
    _apply_hyperparameters(evaluator, args)
    return _finish(evaluator.evaluate())


def _judge(args: argparse.Namespace) -> int:
    evaluator = LLMAsJudgeEvaluator(
        evaluator_model=args.judge,
        dataset=args.dataset,
        builtin_metrics=args.metric,
        columns=_pairs(args.column, "--column"),
        **_common(args),
    )
    _apply_hyperparameters(evaluator, args)
    return _finish(evaluator.evaluate())


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model reference (see docs/models.md)")
    parser.add_argument("--base-model", help="also evaluate this base model and compare")
    parser.add_argument("--output", help="output path or s3:// prefix (default: $EVALSTACK_HOME/results)")
    parser.add_argument("--name", help="evaluation name (base_eval_name)")
    parser.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="hyperparameter")
    parser.add_argument("--limit", type=int, help="evaluate at most N samples")
    parser.add_argument("--mlflow-experiment", help="MLflow experiment name")
    parser.add_argument("--mlflow-run", help="MLflow run name")


def register(commands: argparse._SubParsersAction) -> None:
    kinds = commands.add_parser("evaluate", help="run an evaluation").add_subparsers(required=True)

    scorer = kinds.add_parser("custom-scorer", help="score a dataset with preset metrics")
    scorer.add_argument("--dataset", required=True, help="JSONL, CSV or Parquet; path, file:// or s3://")
    scorer.add_argument("--metric", action="append", required=True, help="preset metric (repeatable)")
    scorer.add_argument("--column", action="append", default=[], metavar="ROLE=COLUMN", help="column mapping")
    _add_common(scorer)
    scorer.set_defaults(handler=_custom_scorer)

    bench = kinds.add_parser("benchmark", help="run a benchmark")
    bench.add_argument("benchmark")
    bench.add_argument("--subtask", action="append", default=[], help="subtask (repeatable; default: all)")
    _add_common(bench)
    bench.set_defaults(handler=_benchmark)

    judge = kinds.add_parser("judge", help="LLM-as-judge over a dataset")
    judge.add_argument("--dataset", required=True)
    judge.add_argument("--judge", required=True, help="judge model reference, e.g. bedrock:<model id>")
    judge.add_argument("--metric", action="append", required=True, help="built-in judge metric (repeatable)")
    judge.add_argument("--column", action="append", default=[], metavar="ROLE=COLUMN", help="column mapping")
    _add_common(judge)
    judge.set_defaults(handler=_judge)
