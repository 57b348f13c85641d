"""``evalstack pipeline definition KIND``: print the SageMaker pipeline definition JSON of a kind."""

from __future__ import annotations

import argparse
import sys

from evalstack.pipeline.definition import COMPARISONS, QualityGate, definition_json
from evalstack.spec import EVAL_TYPES


def _definition(args: argparse.Namespace) -> int:
    gate = None
    if args.gate_metric is not None or args.gate_threshold is not None:
        if args.gate_metric is None or args.gate_threshold is None:
            raise ValueError("--gate-metric and --gate-threshold go together")
        gate = QualityGate(args.gate_metric, args.gate_threshold, args.gate_comparison)
    text = definition_json(
        args.kind.replace("-", "_"), role_arn=args.role_arn, quality_gate=gate, kms_key_id=args.kms_key_id
    )
    sys.stdout.write(text)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("pipeline", help="the pipeline definitions evalstack runs").add_subparsers(
        required=True
    )
    definition = group.add_parser("definition", help="print the definition JSON (Version 2020-12-01) of a kind")
    definition.add_argument(
        "kind", choices=list(dict.fromkeys([*EVAL_TYPES, *(k.replace("_", "-") for k in EVAL_TYPES)]))
    )
    definition.add_argument("--role-arn", help="embed this processing role (default: ExecutionRoleArn parameter)")
    definition.add_argument("--kms-key-id", help="KMS key for processing volumes and outputs")
    definition.add_argument("--gate-metric", help="quality gate: JSON path into evaluation.json, e.g. metrics.accuracy")
    definition.add_argument("--gate-threshold", type=float, help="quality gate threshold")
    definition.add_argument("--gate-comparison", choices=COMPARISONS, default="GreaterThanOrEqualTo")
    definition.set_defaults(handler=_definition)
