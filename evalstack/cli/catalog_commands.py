"""``evalstack benchmarks ...`` and ``evalstack metrics ...``: what can be evaluated."""

from __future__ import annotations

import argparse
import json

from evalstack.catalog import BENCHMARKS, JUDGE_METRICS, BuiltInMetric, get_benchmark_properties
from evalstack.catalog.hyperparameters import SCHEMAS
from evalstack.cli.kinds import eval_kind


def _list_benchmarks(args: argparse.Namespace) -> None:
    width = max(len(b.value) for b in BENCHMARKS)
    for bench, info in BENCHMARKS.items():
        counts = f"{info.num_samples:>6} samples  {len(info.subtasks):>2} subtasks"
        print(f"{bench.value:<{width}}  {counts}  {info.description}")


def _show_benchmark(args: argparse.Namespace) -> None:
    print(json.dumps(get_benchmark_properties(args.name), indent=2))


def _list_metrics(args: argparse.Namespace) -> None:
    print("Preset metrics (CustomScorerEvaluator):")
    for metric in BuiltInMetric:
        print(f"  {metric.value}")
    print("Built-in judge metrics (LLMAsJudgeEvaluator):")
    for info in JUDGE_METRICS.values():
        ref = " (uses the reference)" if info.needs_reference else ""
        print(f"  {info.name:<13} {info.scale:<6} {info.description}{ref}")


def _hyperparameters(args: argparse.Namespace) -> None:
    for name, param in SCHEMAS[args.kind].items():
        print(f"{name:<22} default={param.default!r:<12} {param.help}")


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("benchmarks", help="list or describe benchmarks").add_subparsers(required=True)
    bench.add_parser("list", help="list the benchmarks").set_defaults(handler=_list_benchmarks)
    show = bench.add_parser("show", help="describe one benchmark")
    show.add_argument("name")
    show.set_defaults(handler=_show_benchmark)
    metrics = commands.add_parser("metrics", help="list preset and judge metrics").add_subparsers(required=True)
    metrics.add_parser("list", help="list the metrics").set_defaults(handler=_list_metrics)
    hps = commands.add_parser("hyperparameters", help="list the hyperparameters of an evaluation kind")
    hps.add_argument("kind", type=eval_kind, help=f"one of {', '.join(sorted(SCHEMAS))} (- or _)")
    hps.set_defaults(handler=_hyperparameters)
