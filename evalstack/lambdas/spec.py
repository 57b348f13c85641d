"""A minimal EvaluationSpec writer for the trigger.

The Lambda asset cannot import ``evalstack.spec`` (it pulls in the catalog), so this emits the same
JSON document as ``EvaluationSpec.to_json``: every field, defaults filled, keys sorted, indent 2.
tests/test_lambdas_spec.py proves ``EvaluationSpec.from_json`` accepts it and re-serialises it identically.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SPEC_VERSION = 1
# Fields the deployment configures; the trigger fills in the model-related ones per evaluation.
TEMPLATE_FIELDS = (
    "eval_type", "name", "benchmark", "subtasks", "dataset", "metrics", "custom_scorer_uri", "judge",
    "hyperparameters", "mlflow", "evaluate_base_model",
)  # fmt: skip
_COLUMNS = {"prompt": "prompt", "response": "response", "reference": "reference", "context": "context"}
_MLFLOW = {"resource_arn": None, "experiment_name": None, "run_name": None}


def _dataset(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"uri": value["uri"], "format": value.get("format"), "columns": {**_COLUMNS, **value.get("columns", {})}}


def _judge(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    custom = [
        {
            "name": m["name"],
            "description": m["description"],
            "prompt_template": m["prompt_template"],
            "scale": list(m.get("scale", (1, 5))),
        }
        for m in value.get("custom_metrics", [])
    ]
    return {
        "evaluator_model": value["evaluator_model"],
        "builtin_metrics": list(value.get("builtin_metrics", [])),
        "custom_metrics": custom,
    }


def build_spec(
    template: dict[str, Any],
    *,
    model: str,
    base_model: str | None,
    model_package_group: str | None,
    kms_key_id: str | None,
) -> dict[str, Any]:
    """The full spec document for one evaluation of ``model``."""
    unknown = sorted(set(template) - set(TEMPLATE_FIELDS))
    if unknown:
        raise ValueError(f"SPEC_TEMPLATE: unknown field(s) {unknown}; allowed: {list(TEMPLATE_FIELDS)}")
    if "eval_type" not in template:
        raise ValueError("SPEC_TEMPLATE: eval_type is required")
    return {
        "version": SPEC_VERSION,
        "eval_type": template["eval_type"],
        "name": template.get("name", "evaluation"),
        "model": model,
        "base_model": base_model,
        "evaluate_base_model": bool(template.get("evaluate_base_model", False)),
        "benchmark": template.get("benchmark"),
        "subtasks": template.get("subtasks"),
        "dataset": _dataset(template.get("dataset")),
        "metrics": list(template.get("metrics", [])),
        "custom_scorer_uri": template.get("custom_scorer_uri"),
        "judge": _judge(template.get("judge")),
        "hyperparameters": dict(template.get("hyperparameters", {})),
        "mlflow": {**_MLFLOW, **(template.get("mlflow") or {})},
        "model_package_group": model_package_group,
        "kms_key_id": kms_key_id,
    }


def spec_json(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=True) + "\n"


def template_sha256(text: str) -> str:
    """The digest of a SPEC_TEMPLATE, over its canonical JSON so layout and key order do not count.

    The trigger records it in each marker and the gate compares it with its own SPEC_TEMPLATE: an
    execution is judged only if it ran the evaluation this deployment configured."""
    try:
        template = json.loads(text)
    except ValueError as err:
        raise ValueError(f"SPEC_TEMPLATE: not JSON ({err})") from err
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
