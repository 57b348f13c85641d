"""The bad-input corpus through the public evaluator: each case raises a clear error and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalstack.evaluate import CustomScorerEvaluator
from evalstack.spec import DatasetSpec
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
]


@pytest.mark.parametrize(("override", "message"), ARGUMENT_CASES, ids=[m[:30] for _, m in ARGUMENT_CASES])
def test_bad_arguments_raise_value_error(override: dict, message: str, tmp_path: Path) -> None:
    kwargs = {"evaluator": "rouge", "dataset": str(EXAMPLE), "model": "m", "s3_output_path": str(tmp_path / "o")}
    kwargs.update(override)
    with pytest.raises(ValueError, match=message):
        CustomScorerEvaluator(**kwargs).evaluate()
    assert not (tmp_path / "o").exists()


def test_output_path_too_long_for_a_pipeline_parameter(tmp_path: Path) -> None:
    out = tmp_path.joinpath(*["o" * 100] * 11)
    with pytest.raises(ValueError, match=r"^SpecUri: \d+ characters; SageMaker pipeline parameters hold at most 1024"):
        CustomScorerEvaluator(evaluator="rouge", dataset=str(EXAMPLE), model="m", s3_output_path=str(out)).evaluate()
    assert not tmp_path.joinpath("o" * 100).exists()
