"""The entrypoint of every Processing step: ``python -m evalstack.pipeline.step evaluate|report ...``.

``evaluate`` runs this instance's shard of the items; the shard comes from the host list in the
job's resource config (``/opt/ml/config/resourceconfig.json``: sorted ``hosts``, ``current_host``),
so InstanceCount N splits the work N ways. ``report`` merges every shard, writes results and the
comparison, and writes the property file the quality gate reads.

Container paths (``/opt/ml/...``) are used as given on SageMaker; the local backend sets
``EVALSTACK_OPT_ML_ROOT`` to the folder that stands in for ``/opt/ml`` of one instance.
``EVALSTACK_SHARD_INDEX``/``EVALSTACK_SHARD_COUNT`` override the resource config.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from evalstack import storage
from evalstack.masking import mask
from evalstack.results.timings import now, record_step_time
from evalstack.results.tracking import log_to_mlflow, wants_tracking
from evalstack.spec import EVAL_TYPES, EvaluationSpec

OPT_ML = "/opt/ml"
RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"


FAILURE_MESSAGE = "/opt/ml/output/message"
MAX_FAILURE_MESSAGE = 1024  # the length SageMaker keeps of a FailureReason


def container_path(path: str) -> Path:
    """``path`` inside this instance: ``/opt/ml/...`` is re-rooted at ``$EVALSTACK_OPT_ML_ROOT`` when set."""
    root = os.environ.get("EVALSTACK_OPT_ML_ROOT")
    if root and (path == OPT_ML or path.startswith(OPT_ML + "/")):
        return Path(root) / path[len(OPT_ML) :].lstrip("/")
    return Path(path)


@dataclass(frozen=True)
class Shard:
    index: int
    count: int


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"{name}: must be an integer, got {value!r}") from err


def current_shard() -> Shard:
    """This instance's shard: env overrides, else the resource config, else the only shard."""
    index, count = _env_int("EVALSTACK_SHARD_INDEX"), _env_int("EVALSTACK_SHARD_COUNT")
    if index is not None or count is not None:
        if index is None or count is None:
            raise ValueError("EVALSTACK_SHARD_INDEX and EVALSTACK_SHARD_COUNT must be set together")
        shard = Shard(index, count)
    else:
        path = container_path(RESOURCE_CONFIG)
        if not path.exists():
            return Shard(0, 1)
        try:
            config = json.loads(path.read_text())
            hosts = sorted(config["hosts"])
            shard = Shard(hosts.index(config["current_host"]), len(hosts))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a valid resource config (current_host, hosts): {err}") from err
    if not 0 <= shard.index < shard.count:
        raise ValueError(f"shard index {shard.index} is outside 0..{shard.count - 1}")
    return shard


def load_spec(spec_uri: str, eval_type: str) -> EvaluationSpec:
    spec = EvaluationSpec.from_json(storage.read_text(spec_uri), source=spec_uri)
    if spec.eval_type != eval_type:
        raise ValueError(f"{spec_uri}: eval_type is {spec.eval_type!r} but this pipeline evaluates {eval_type!r}")
    return spec


def evaluate(spec_uri: str, eval_type: str, role: str, output_uri: str) -> str:
    from evalstack.engine.run import run_shard

    spec = load_spec(spec_uri, eval_type)
    shard = current_shard()
    started = now()
    uri = run_shard(spec, role, shard.index, shard.count, output_uri)
    record_step_time(output_uri, role, shard.index, shard.count, started, now(), spec.kms_key_id)
    return uri


def report(spec_uri: str, eval_type: str, output_uri: str, property_file: str, with_base: bool) -> dict:
    """Merge shards and write the property file; ``with_base`` says whether the base step ran."""
    from evalstack.engine.run import report as merge_report
    from evalstack.results.html_report import write_report_html

    started = now()
    spec = dataclasses.replace(load_spec(spec_uri, eval_type), evaluate_base_model=with_base)
    merged = merge_report(spec, output_uri)
    summary = merged.summary()
    storage.write_text(storage.join(output_uri, "spec.json"), spec.to_json(), kms_key_id=spec.kms_key_id)
    write_report_html(output_uri, started, kms_key_id=spec.kms_key_id, digest=merged.digest)
    if wants_tracking(spec):
        log_to_mlflow(spec, merged, output_uri)
    storage.write_text(str(container_path(property_file)), json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evalstack.pipeline.step")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("evaluate", "report"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--eval-type", required=True, choices=EVAL_TYPES)
        cmd.add_argument("--spec-uri", required=True)
        cmd.add_argument("--output-uri", required=True)
    sub.choices["evaluate"].add_argument("--role", required=True, choices=("candidate", "base"))
    sub.choices["report"].add_argument("--property-file", required=True)
    sub.choices["report"].add_argument("--with-base", action="store_true")
    return parser


def _masked_excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """The traceback of an uncaught error, masked: an error may quote an answer that echoes a key."""
    sys.stderr.write(mask("".join(traceback.format_exception(kind, value, tb))))


def main(argv: list[str] | None = None) -> int:
    sys.excepthook = _masked_excepthook
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except Exception as err:
        # SageMaker Processing reports this file as the job's FailureReason; the traceback stays in the log.
        message = container_path(FAILURE_MESSAGE)
        message.parent.mkdir(parents=True, exist_ok=True)
        message.write_text(mask(f"{type(err).__name__}: {err}")[:MAX_FAILURE_MESSAGE], encoding="utf-8")
        raise


def _run(args: argparse.Namespace) -> int:
    # What is loaded by now (the scientific stack: millions of objects) lives as long as the step, so the
    # collector need not walk it again each time the records streamed through the step fill a generation.
    gc.freeze()
    if args.command == "evaluate":
        uri = evaluate(args.spec_uri, args.eval_type, args.role, args.output_uri)
        print(f"wrote {uri}")
    else:
        summary = report(args.spec_uri, args.eval_type, args.output_uri, args.property_file, args.with_base)
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
