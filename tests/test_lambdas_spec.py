"""The trigger's minimal spec writer emits exactly what EvaluationSpec reads and writes."""

from __future__ import annotations

import hashlib
import json

import pytest

from evalstack.lambdas.spec import build_spec, spec_json, template_sha256
from evalstack.spec import EvaluationSpec

PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/models/3"
BASE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/models/2"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

TEMPLATES = {
    "benchmark": {
        "eval_type": "benchmark",
        "name": "nightly-mmlu",
        "benchmark": "MMLU",
        "subtasks": ["anatomy", "virology"],
        "evaluate_base_model": True,
    },
    "custom_scorer": {
        "eval_type": "custom_scorer",
        "dataset": {"uri": "s3://bucket/datasets/qa.jsonl", "columns": {"reference": "answer"}},
        "metrics": ["rouge", "bleu"],
    },
    "llm_as_judge": {
        "eval_type": "llm_as_judge",
        "dataset": {"uri": "s3://bucket/datasets/chat.jsonl", "format": "jsonl"},
        "judge": {
            "evaluator_model": "bedrock:anthropic.claude-3-haiku-20240307-v1:0",
            "builtin_metrics": ["correctness"],
            "custom_metrics": [
                {"name": "tone", "description": "Polite tone", "prompt_template": "Rate {{response}}", "scale": [1, 3]}
            ],
        },
        "mlflow": {"experiment_name": "judges"},
    },
}


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_evaluation_spec_reads_and_rewrites_the_lambda_spec_identically(kind: str) -> None:
    base = BASE if TEMPLATES[kind].get("evaluate_base_model") else None
    text = spec_json(
        build_spec(TEMPLATES[kind], model=PACKAGE, base_model=base, model_package_group="models", kms_key_id=KEY)
    )
    spec = EvaluationSpec.from_json(text, source="lambda spec.json")
    assert spec.to_json() == text
    assert (spec.eval_type, spec.model, spec.base_model, spec.model_package_group, spec.kms_key_id) == (
        kind,
        PACKAGE,
        base,
        "models",
        KEY,
    )


def test_unknown_template_field_is_named() -> None:
    with pytest.raises(ValueError, match=r"SPEC_TEMPLATE: unknown field\(s\) \['model'\]"):
        build_spec({"eval_type": "benchmark", "model": "x"}, model=PACKAGE, base_model=None,
                   model_package_group=None, kms_key_id=None)  # fmt: skip


def test_template_digest_ignores_layout_but_not_content() -> None:
    template = TEMPLATES["benchmark"]
    compact = json.dumps(template, separators=(",", ":"))
    reordered = json.dumps(dict(reversed(list(template.items()))), indent=4)
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    assert template_sha256(compact) == template_sha256(reordered) == hashlib.sha256(canonical.encode()).hexdigest()
    assert template_sha256(json.dumps({**template, "subtasks": ["anatomy"]})) != template_sha256(compact)


def test_template_digest_of_a_template_that_is_not_json_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"SPEC_TEMPLATE: not JSON"):
        template_sha256("{benchmark: mmlu}")
