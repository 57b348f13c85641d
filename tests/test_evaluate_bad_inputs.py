"""The bad-input corpus through the public evaluator: each case raises a clear error and writes nothing.

Datasets (tests/test_data_bad_inputs.py), constructor arguments (model references among them:
control characters, ports, timeouts, secrets) and hyperparameters (NaN and infinity included).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalstack.evaluate import CustomScorerEvaluator
from evalstack.spec import DatasetSpec, EvaluationSpec, SpecError
from tests.test_data_bad_inputs import CASES, Case, write_case

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "truthfulqa_answers.jsonl"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_dataset_raises_and_leaves_no_output(case: Case, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    uri = str(write_case(case, data))
    out = tmp_path / "out"
    evaluator = CustomScorerEvaluator(
        evaluator="rouge",
        dataset=DatasetSpec(uri, format=case.format, columns=case.columns),
        model="m",
        s3_output_path=str(out),
    )
    with pytest.raises(ValueError) as caught:
        evaluator.evaluate()
    assert str(caught.value) == case.message.format(uri=uri)
    assert not out.exists()


ARGUMENT_CASES = [
    ({"evaluator": "f2"}, "Unknown preset metric 'f2'. Valid values: accuracy, f1"),
    ({"evaluator": 42}, "evaluator: expected a preset metric name"),
    ({"evaluator": ["rouge", "sari"]}, "Unknown preset metric 'sari'"),
    ({"model": ""}, "model: a model reference is required"),
    ({"model": "openai:http://localhost:8000/v1"}, "invalid model reference"),
    ({"model": "ftp://host/model"}, "invalid model reference"),
    ({"dataset": ""}, "dataset: a dataset URI or path is required"),
    ({"columns": {"answer": "response"}}, "columns: .*unexpected keyword argument 'answer'"),
    ({"evaluate_base_model": True}, "base_model: evaluate_base_model=True needs a base model, or a model package ARN"),
    ({"evaluate_base_model": "yes"}, "evaluate_base_model: must be a bool"),
    ({"networking": {"subnets": ["s"]}}, "networking: expected an evalstack VpcConfig"),
    ({"columns": {"prompt": 5}}, r"^columns.prompt: must be a column name \(a non-empty string\), got int 5$"),
    ({"columns": {"prompt": ""}}, r"^columns.prompt: must be a column name \(a non-empty string\), got an empty"),
    ({"columns": {"reference": None}}, r"^columns.reference: must be a column name .*got NoneType None$"),
    ({"columns": {"context": ["a"]}}, r"^columns.context: must be a column name .*got list \['a'\]$"),
    ({"columns": ["prompt"]}, r"^columns: .*must be a mapping, not list; valid keys: prompt, response"),
    ({"model": "openai:http://h/v1?model=m\r\nX-Injected: 1"}, r"control characters \(such as CR or LF\)"),
    ({"base_model": "openai:http://h/v1?model=m\rn"}, r"control characters \(such as CR or LF\)"),
    ({"model": "openai:http://h:99999/v1?model=m"}, "port must be a number from 1 to 65535"),
    ({"model": "openai:http://h:0/v1?model=m"}, "port must be a number from 1 to 65535"),
    ({"model": "openai:http://h/v1?model=m&timeout=inf"}, r"timeout='inf' must be a finite number of seconds"),
    ({"model": "openai:http://h/v1?model=m&timeout=nan"}, r"timeout='nan' must be a finite number of seconds"),
    ({"model": "openai:http://h/v1?model=m&timeout=1e309"}, r"timeout='1e309' must be a finite number of seconds"),
    ({"model": "openai:http://h/v1?model=m&timeout=0"}, r"timeout='0' must be a finite number of seconds above 0"),
    (
        {"model": "openai:http://h/v1?model=m&api_key_env=hf_AbCdEfGhIjKlMnOpQrStUvWx"},
        r"api_key_env=\*\*\*'.*not an environment variable name",
    ),
    (
        {"model": "openai:http://h/v1?model=m&api_key_env=EVALSTACK_NOT_SET_ANYWHERE"},
        "api_key_env names the environment variable 'EVALSTACK_NOT_SET_ANYWHERE', which is not set",
    ),
    ({"model": "openai:http://user:pw@h/v1?model=m"}, r"'openai:http://\*\*\*@h/v1\?model=m': .*must not carry"),
    ({"model": "openai:http://h/v1?model=m&api_key=sk-abc"}, r"api_key=\*\*\*'.*would put a secret"),
    ({"model": "openai:http://h/v1?model=m&model=n"}, "option 'model' given twice"),
    ({"model": "openai:http://h/v1?model=m&temperature=0.5"}, "unknown option 'temperature'"),
    ({"model": "openai:ftp://h/v1?model=m"}, "must be http"),
    ({"model": "bedrock:anthropic.claude-v2?region=mars"}, "region='mars' is not an AWS region name"),
    ({"model": "sagemaker:ep"}, "sagemaker references need \\?format="),
    ({"model": "hf:"}, "hf references need a local model directory"),
    ({"base_model": "ftp://host/model"}, "unknown scheme 'ftp'"),
    ({"evaluator": None}, "evaluator: expected a preset metric name"),
    ({"dataset": 42}, "dataset: expected a string or an object with a name or ARN, got int"),
    ({"dataset": "/nonexistent/evalstack/data.jsonl"}, r"^/nonexistent/evalstack/data.jsonl: file not found$"),
    ({"mlflow_resource_arn": "arn:bad"}, "mlflow_resource_arn: 'arn:bad' is not a SageMaker MLflow ARN"),
    ({"instance_count": 0}, "instance_count: must be a positive integer, got 0"),
    ({"instance_count": True}, "instance_count: must be a positive integer, got True"),
    ({"instance_count": "2"}, "instance_count: must be a positive integer, got '2'"),
]


@pytest.mark.parametrize(("override", "message"), ARGUMENT_CASES, ids=[m[:30] for _, m in ARGUMENT_CASES])
def test_bad_arguments_raise_value_error(override: dict, message: str, tmp_path: Path) -> None:
    kwargs = {"evaluator": "rouge", "dataset": str(EXAMPLE), "model": "m", "s3_output_path": str(tmp_path / "o")}
    kwargs.update(override)
    with pytest.raises(ValueError, match=message):
        CustomScorerEvaluator(**kwargs).evaluate()
    assert not (tmp_path / "o").exists()


HYPERPARAMETER_CASES = [
    ("temperature", float("nan"), "hyperparameter 'temperature' must be a finite number, got nan"),
    ("temperature", float("inf"), "hyperparameter 'temperature' must be a finite number, got inf"),
    ("top_p", float("nan"), "hyperparameter 'top_p' must be a finite number, got nan"),
    ("threshold", float("nan"), "hyperparameter 'threshold' must be a finite number, got nan"),
    ("threshold", float("-inf"), "hyperparameter 'threshold' must be a finite number, got -inf"),
    ("alpha", float("nan"), "hyperparameter 'alpha' must be a finite number, got nan"),
    ("beta", float("inf"), "hyperparameter 'beta' must be a finite number, got inf"),
    ("gamma", float("nan"), "hyperparameter 'gamma' must be a finite number, got nan"),
    ("temperature", 2.5, "hyperparameter 'temperature' must be <= 2.0, got 2.5"),
    ("batch_size", 0, "hyperparameter 'batch_size' must be >= 1, got 0"),
    ("max_tokens", 0, "hyperparameter 'max_tokens' must be >= 1, got 0"),
    ("max_order", 9, "hyperparameter 'max_order' must be <= 8, got 9"),
    ("smooth", "yes", "hyperparameter 'smooth' must be bool, got str 'yes'"),
    ("seed", -1, "hyperparameter 'seed' must be >= 0, got -1"),
    ("rouge_types", ["rouge0"], "hyperparameter 'rouge_types': unknown ['rouge0']; valid: rouge1, rouge2"),
]


@pytest.mark.parametrize(
    ("name", "value", "message"), HYPERPARAMETER_CASES, ids=[m[:40] for *_, m in HYPERPARAMETER_CASES]
)
def test_bad_hyperparameter_is_refused_on_assignment(name: str, value: object, message: str, tmp_path: Path) -> None:
    out = tmp_path / "o"
    evaluator = CustomScorerEvaluator(evaluator="rouge", dataset=str(EXAMPLE), model="m", s3_output_path=str(out))
    with pytest.raises(ValueError) as caught:
        setattr(evaluator.hyperparameters, name, value)
    assert str(caught.value).startswith(message)
    assert not out.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_hyperparameter_in_a_spec_file_is_refused(value: float) -> None:
    text = json.dumps(
        {"eval_type": "custom_scorer", "model": "m", "metrics": ["rouge"], "dataset": {"uri": "d.jsonl"},
         "hyperparameters": {"temperature": value}}
    )  # fmt: skip
    with pytest.raises(SpecError, match=r"^s.json: hyperparameters: hyperparameter 'temperature' must be a finite"):
        EvaluationSpec.from_json(text, source="s.json")


def test_corpora_hold_at_least_100_cases() -> None:
    assert len(CASES) + len(ARGUMENT_CASES) + len(HYPERPARAMETER_CASES) >= 100


def test_output_path_too_long_for_a_pipeline_parameter(tmp_path: Path) -> None:
    out = tmp_path.joinpath(*["o" * 100] * 11)
    with pytest.raises(ValueError, match=r"^SpecUri: \d+ characters; SageMaker pipeline parameters hold at most 1024"):
        CustomScorerEvaluator(evaluator="rouge", dataset=str(EXAMPLE), model="m", s3_output_path=str(out)).evaluate()
    assert not tmp_path.joinpath("o" * 100).exists()
