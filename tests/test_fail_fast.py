"""Every mistake that needs no model answer fails in the constructor or ``evaluate()``: before any
request reaches the model (a loopback server counts every request, 0 expected) and before anything
is written (no output folder, no execution)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from evalstack.evaluate import (
    BenchMarkEvaluator,
    CustomScorerEvaluator,
    EvaluationPipelineExecution,
    LLMAsJudgeEvaluator,
    VpcConfig,
)


class CountingServer:
    """An HTTP server on 127.0.0.1 that counts every request of any method."""

    def __init__(self) -> None:
        self.count = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                server.count += 1
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def model(self) -> str:
        return f"openai:http://127.0.0.1:{self.httpd.server_address[1]}/v1?model=m"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[CountingServer]:
    counting = CountingServer()
    yield counting
    counting.close()


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _rows(n: int = 12, **fields: Any) -> list[dict[str, Any]]:
    return [
        {"prompt": f"question {i}", **{k: (v(i) if callable(v) else v) for k, v in fields.items()}} for i in range(n)
    ]


def _closed_port() -> int:
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()
    return port


Case = Callable[[Path, str], Any]

CASES: dict[str, tuple[Case, str]] = {
    "mlflow arn not an arn": (
        lambda d, m: CustomScorerEvaluator(
            evaluator="bleu",
            dataset=_jsonl(d / "a.jsonl", _rows(reference="x")),
            model=m,
            mlflow_resource_arn="not-an-arn",
        ),
        "mlflow_resource_arn: 'not-an-arn' is not a SageMaker MLflow ARN",
    ),
    "mlflow arn of another service": (
        lambda d, m: BenchMarkEvaluator("GSM8K", model=m, mlflow_resource_arn="arn:aws:s3:::my-bucket"),
        "is not a SageMaker MLflow ARN",
    ),
    "mlflow arn without the sagemaker-mlflow plugin on the local backend": (
        lambda d, m: _without_module(
            "sagemaker_mlflow",
            BenchMarkEvaluator(
                "GSM8K",
                model=m,
                mlflow_resource_arn="arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/tracking",
            ).evaluate,
        ),
        "mlflow_resource_arn: logging to SageMaker managed MLflow needs the sagemaker-mlflow plugin",
    ),
    "no reference for accuracy": (
        lambda d, m: CustomScorerEvaluator(
            evaluator="accuracy", dataset=_jsonl(d / "a.jsonl", _rows(response="yes")), model=m
        ).evaluate(),
        "line 1: field 'reference': missing; accuracy compares with a reference",
    ),
    "no reference for bleu, near miss named": (
        lambda d, m: CustomScorerEvaluator(
            evaluator="bleu", dataset=_jsonl(d / "a.jsonl", _rows(response="a", expected="b")), model=m
        ).evaluate(),
        "the record has 'expected': map it with columns={'reference': 'expected'}",
    ),
    "answers in prediction with a label model": (
        lambda d, m: CustomScorerEvaluator(
            evaluator="accuracy", dataset=_jsonl(d / "a.jsonl", _rows(prediction="a", reference="a")), model="m"
        ).evaluate(),
        "field 'response': missing; model 'm' is a label only (no backend to call), so every record needs its "
        "response; the record has 'prediction': map it with columns={'response': 'prediction'}",
    ),
    "answers in a near-miss field": (
        lambda d, m: CustomScorerEvaluator(
            evaluator="accuracy", dataset=_jsonl(d / "a.jsonl", _rows(responses="a", reference="a")), model="m"
        ).evaluate(),
        "map it with columns={'response': 'responses'}",
    ),
    "threshold with text labels": (
        lambda d, m: _with_hp(
            CustomScorerEvaluator(
                evaluator="f1",
                dataset=_jsonl(d / "a.jsonl", _rows(response="positive", reference="negative")),
                model=m,
            ),
            threshold=0.5,
        ).evaluate(),
        "field 'reference': 'negative' is not a number, but hyperparameter threshold=0.5 binarises numeric labels",
    ),
    "threshold with text predictions": (
        lambda d, m: _with_hp(
            CustomScorerEvaluator(
                evaluator="accuracy", dataset=_jsonl(d / "a.jsonl", _rows(response="yes", reference="1")), model=m
            ),
            threshold=0.5,
        ).evaluate(),
        "field 'response': 'yes' is not a number",
    ),
    "bedrock judge without a region": (
        lambda d, m: LLMAsJudgeEvaluator(
            evaluator_model="anthropic.claude-3-sonnet-20240229-v1:0",
            builtin_metrics=["helpfulness"],
            dataset=_jsonl(d / "a.jsonl", _rows(response="a")),
            model=m,
        ).evaluate(),
        "judge.evaluator_model: 'anthropic.claude-3-sonnet-20240229-v1:0' is a bedrock model and no AWS region",
    ),
    "bedrock model without a region": (
        lambda d, m: BenchMarkEvaluator("GSM8K", model="bedrock:meta.llama3-8b-instruct-v1:0").evaluate(),
        "candidate model: 'meta.llama3-8b-instruct-v1:0' is a bedrock model and no AWS region is known",
    ),
    "sagemaker endpoint without a region": (
        lambda d, m: BenchMarkEvaluator("GSM8K", model="sagemaker:my-endpoint?format=tgi").evaluate(),
        "'my-endpoint' is a sagemaker model and no AWS region is known",
    ),
    "hf path that does not exist": (
        lambda d, m: BenchMarkEvaluator("GSM8K", model=f"hf:{d}/no-such-model").evaluate(),
        "no-such-model is not a directory",
    ),
    "hf path that is a file": (
        lambda d, m: BenchMarkEvaluator("GSM8K", model=f"hf:{_jsonl(d / 'x.jsonl', [])}").evaluate(),
        "x.jsonl is not a directory",
    ),
    "unreachable server": (
        lambda d, m: BenchMarkEvaluator(
            "GSM8K", model=f"openai:http://127.0.0.1:{_closed_port()}/v1?model=m"
        ).evaluate(),
        "candidate model: the server at http://127.0.0.1:",
    ),
    "bare model name": (
        lambda d, m: BenchMarkEvaluator("MMLU", model="meta-textgeneration-llama-3-2-1b-instruct"),
        "model: 'meta-textgeneration-llama-3-2-1b-instruct' is a bare name, looked up as an endpoint",
    ),
    "bedrock id without scheme, bad region": (
        lambda d, m: BenchMarkEvaluator("MMLU", model="anthropic.claude-3-haiku-20240307-v1:0?region=mars"),
        "region='mars' is not an AWS region name",
    ),
    "bare base model name": (
        lambda d, m: BenchMarkEvaluator("MMLU", model=m, base_model="llama-base", evaluate_base_model=True),
        "base_model: 'llama-base' is a bare name",
    ),
    "openai reference without model": (
        lambda d, m: BenchMarkEvaluator("MMLU", model="openai:http://127.0.0.1:9/v1"),
        "openai references need ?model=<served model name>",
    ),
    "unknown benchmark": (lambda d, m: BenchMarkEvaluator("SQuAD", model=m), "Unknown benchmark 'SQuAD'"),
    "unknown subtask": (
        lambda d, m: BenchMarkEvaluator("MMLU", model=m, subtasks=["anatomy", "astrology"]),
        r"unknown MMLU subtask(s) ['astrology']",
    ),
    "subtask of the wrong type": (
        lambda d, m: BenchMarkEvaluator("MMLU", model=m).evaluate(subtask={"anatomy"}),
        "subtask: expected a subtask name, a list of names or 'ALL'",
    ),
    "unknown preset metric": (
        lambda d, m: CustomScorerEvaluator(evaluator="bleurt", dataset=_jsonl(d / "a.jsonl", _rows()), model=m),
        "Unknown preset metric 'bleurt'",
    ),
    "unknown judge metric": (
        lambda d, m: LLMAsJudgeEvaluator(
            evaluator_model=m, builtin_metrics=["wit"], dataset=_jsonl(d / "a.jsonl", _rows()), model=m
        ),
        "Unknown built-in judge metric 'wit'",
    ),
    "custom judge metric without template": (
        lambda d, m: LLMAsJudgeEvaluator(
            evaluator_model=m,
            custom_metrics=[{"name": "x", "description": "y"}],
            dataset=_jsonl(d / "a.jsonl", _rows()),
            model=m,
        ),
        "custom_metrics[0]",
    ),
    "too many custom judge metrics": (
        lambda d, m: LLMAsJudgeEvaluator(
            evaluator_model=m,
            custom_metrics=[
                {"name": f"m{i}", "description": "d", "prompt_template": "Rate {response}. Rating:"} for i in range(11)
            ],
            dataset=_jsonl(d / "a.jsonl", _rows()),
            model=m,
        ),
        "at most 10 custom metrics",
    ),
    "judge dataset below the minimum": (
        lambda d, m: LLMAsJudgeEvaluator(
            evaluator_model=m,
            builtin_metrics=["helpfulness"],
            dataset=_jsonl(d / "a.jsonl", _rows(5, response="a")),
            model=m,
        ).evaluate(),
        "needs at least 10",
    ),
    "hyperparameter out of range": (
        lambda d, m: _with_hp(BenchMarkEvaluator("GSM8K", model=m), batch_size=0),
        "batch_size",
    ),
    "unknown hyperparameter": (
        lambda d, m: _with_hp(BenchMarkEvaluator("GSM8K", model=m), temprature=0.1),
        "Unknown hyperparameter 'temprature'",
    ),
    "dataset file missing": (
        lambda d, m: CustomScorerEvaluator(evaluator="bleu", dataset=str(d / "missing.jsonl"), model=m).evaluate(),
        "missing.jsonl",
    ),
    "dataset with a bad line": (
        lambda d, m: CustomScorerEvaluator(
            evaluator="bleu",
            dataset=_write(d / "bad.jsonl", '{"prompt": "a", "reference": "b"}\n{"prompt": \n'),
            model=m,
        ).evaluate(),
        "bad.jsonl: line 2",
    ),
    "evaluate_base_model not a bool": (
        lambda d, m: BenchMarkEvaluator("GSM8K", model=m, evaluate_base_model="yes"),
        "evaluate_base_model: must be a bool",
    ),
    "base model missing": (
        lambda d, m: BenchMarkEvaluator("GSM8K", model=m, evaluate_base_model=True),
        "evaluate_base_model=True needs a base model",
    ),
    "instance count zero": (
        lambda d, m: BenchMarkEvaluator("GSM8K", model=m, instance_count=0),
        "instance_count: must be a positive integer",
    ),
    "vpc config without subnets": (
        lambda d, m: BenchMarkEvaluator("GSM8K", model=m, networking=VpcConfig((), ("sg-1",))),
        "networking: VpcConfig needs at least one subnet",
    ),
}


def _with_hp(evaluator: Any, **values: Any) -> Any:
    for key, value in values.items():
        setattr(evaluator.hyperparameters, key, value)
    return evaluator


def _without_module(name: str, call: Callable[[], Any]) -> Any:
    """``call()`` as on a machine where module ``name`` is not installed: ``None`` in sys.modules makes
    importlib.util.find_spec return None and an import raise ImportError."""
    previous = sys.modules.get(name)
    sys.modules[name] = None  # type: ignore[assignment]
    try:
        return call()
    finally:
        if previous is None:
            del sys.modules[name]
        else:
            sys.modules[name] = previous


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_the_corpus_is_at_least_30_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_fails_before_any_request_and_writes_nothing(
    name: str, server: CountingServer, tmp_path: Path, isolated_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)  # so a missing region is noticed
    monkeypatch.delenv("AWS_REGION", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    build, message = CASES[name]
    with pytest.raises((ValueError, AttributeError, FileNotFoundError)) as raised:
        build(data, server.model)
    assert message in str(raised.value)
    assert server.count == 0
    assert not (isolated_environment / "results").exists()
    assert EvaluationPipelineExecution.get_all() == []
