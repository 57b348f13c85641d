"""What a small local run's client no longer pays for, with the behaviour kept: the local client's cached
part of botocore's SageMaker model, the boto3 session built only when a region is needed, and the
runner's entry point that detaches before its imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ParamValidationError
from botocore.model import Shape

from evalstack.evaluate import CustomScorerEvaluator
from evalstack.pipeline.local import service_model
from evalstack.pipeline.local.client import LocalSageMakerClient
from tests.conftest import EXAMPLES, REPO_ROOT

PACKAGE_MAIN = REPO_ROOT / "evalstack" / "pipeline" / "local" / "__main__.py"


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "xdg-cache"
    monkeypatch.setenv(service_model.CACHE_DIR_ENV, str(home))
    monkeypatch.delenv("AWS_DATA_PATH", raising=False)
    service_model.models.cache_clear()
    yield home
    service_model.models.cache_clear()


def _loaded_in_fresh_interpreter(code: str, env: dict[str, str]) -> set[str]:
    report = "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code + report], capture_output=True, text=True, env=env, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def _described(shape: Shape, seen: frozenset[str] = frozenset()) -> Any:
    """A shape as everything validation reads of it, members resolved (recursion cut at a repeat)."""
    if shape.name in seen:
        return shape.name
    seen = seen | {shape.name}
    out: dict[str, Any] = {"name": shape.name, "type": shape.type_name, "metadata": dict(shape.metadata)}
    if shape.type_name == "structure":
        out["members"] = {k: _described(v, seen) for k, v in shape.members.items()}
        out["required"] = sorted(shape.required_members)
    elif shape.type_name == "list":
        out["member"] = _described(shape.member, seen)
    elif shape.type_name == "map":
        out["key"], out["value"] = _described(shape.key, seen), _described(shape.value, seen)
    return out


def test_the_cached_model_is_botocores_for_every_operation_of_the_local_client(cache_home: Path) -> None:
    session = botocore.session.get_session()
    full = session.get_service_model("sagemaker")
    full_pages = session.get_paginator_model("sagemaker")
    model, pages = service_model.models()
    assert service_model.cache_path().is_file()
    for name in service_model.OPERATIONS:
        mine, theirs = model.operation_model(name), full.operation_model(name)
        assert _described(mine.input_shape) == _described(theirs.input_shape), name
        assert _described(mine.output_shape) == _described(theirs.output_shape), name
        assert [e.name for e in mine.error_shapes] == [e.name for e in theirs.error_shapes], name
    assert sorted(s.name for s in model.error_shapes) == sorted(s.name for s in full.error_shapes)
    for name in ("ListPipelineExecutions", "ListPipelineExecutionSteps"):
        assert pages.get_paginator(name) == full_pages.get_paginator(name)
    # Every operation the client has is in the list the cache is written for.
    implemented = {
        "".join(part.capitalize() for part in attr.split("_"))
        for attr in vars(LocalSageMakerClient)
        if not attr.startswith("_") and "pipeline" in attr and attr != "reap_dead_runners"
    }
    assert implemented == set(service_model.OPERATIONS)


def test_a_client_from_the_cache_validates_and_raises_as_boto3_without_botocores_session(
    cache_home: Path, tmp_path: Path
) -> None:
    env = {**os.environ, service_model.CACHE_DIR_ENV: str(cache_home), "EVALSTACK_HOME": str(tmp_path / "home")}
    code = """
from botocore.exceptions import ParamValidationError
from evalstack.pipeline.local.client import LocalSageMakerClient
client = LocalSageMakerClient()
try:
    client.describe_pipeline(PipelineName="absent")
except client.exceptions.ResourceNotFound as err:
    assert err.response["Error"]["Code"] == "ResourceNotFound"
else:
    raise AssertionError("no ResourceNotFound")
try:
    client.start_pipeline_execution(PipelineName="absent", PipelineParameters=[{"Name": 1}])
except ParamValidationError as err:
    assert "PipelineParameters[0].Name" in str(err), err
else:
    raise AssertionError("no ParamValidationError")
"""
    first = _loaded_in_fresh_interpreter(code, env)  # writes the cache
    assert "botocore.session" in first
    written = json.loads(service_model.cache_path().read_text(encoding="utf-8"))
    assert written["operations"] == list(service_model.OPERATIONS)
    second = _loaded_in_fresh_interpreter(code, env)
    assert [m for m in ("botocore.session", "botocore.client", "boto3") if m in second] == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # torn
        lambda text: text.replace('"botocore": "', '"botocore": "0.0.0-'),  # another botocore's
        lambda text: text.replace('"CreatePipeline", ', ""),  # written for other operations
    ],
    ids=["torn", "other-botocore", "other-operations"],
)
def test_a_cache_that_does_not_fit_is_rebuilt(cache_home: Path, damage) -> None:
    service_model.models()
    path = service_model.cache_path()
    good = path.read_text(encoding="utf-8")
    path.write_text(damage(good), encoding="utf-8")
    service_model.models.cache_clear()
    model, _ = service_model.models()
    assert model.operation_model("CreatePipeline").name == "CreatePipeline"
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(good)


def test_without_a_writable_cache_or_with_overridden_botocore_data_the_model_is_botocores(
    cache_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_home.parent.mkdir(parents=True, exist_ok=True)
    cache_home.write_text("a file where the cache folder would be")
    model, _ = service_model.models()
    with pytest.raises(ParamValidationError, match="PipelineName"):
        LocalSageMakerClient(tmp_path / "home")._request("DescribePipeline", {})
    assert model.operation_model("StopPipelineExecution").input_shape.required_members == [
        "PipelineExecutionArn",
        "ClientRequestToken",
    ]
    # botocore reads AWS_DATA_PATH before its own data: only botocore knows the model then.
    cache_home.unlink()
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path / "models"))
    service_model.models.cache_clear()
    service_model.models()
    assert not service_model.cache_path().exists()


def test_a_local_run_builds_no_boto3_session_and_an_aws_model_still_needs_a_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    code = f"""
from evalstack.evaluate import CustomScorerEvaluator
CustomScorerEvaluator(evaluator="rouge", dataset={str(EXAMPLES / "truthfulqa_answers.jsonl")!r}, model="m").evaluate(
    dry_run=True
)
"""
    assert "boto3" not in _loaded_in_fresh_interpreter(code, env)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    bedrock = {"evaluator": "rouge", "dataset": str(EXAMPLES / "truthfulqa_answers.jsonl")}
    with pytest.raises(ValueError, match="no AWS region is known"):
        CustomScorerEvaluator(model="bedrock:anthropic.claude-3-haiku-20240307-v1:0", **bedrock).evaluate(dry_run=True)
    # The region of the caller's AWS profile counts: the session is asked when nothing else gives one.
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    dry = CustomScorerEvaluator(model="bedrock:anthropic.claude-3-haiku-20240307-v1:0", **bedrock).evaluate(
        dry_run=True
    )
    assert dry.spec["model"] == "bedrock:anthropic.claude-3-haiku-20240307-v1:0"


def test_the_runner_entry_point_imports_nothing_as_a_multiprocessing_main_module() -> None:
    # A step's metric pool spawns its workers, which import the main module of the process they come from
    # (a step forked from the runner's warm parent: the runner's) as __mp_main__: it must stay bare.
    code = f"import runpy; runpy.run_path({str(PACKAGE_MAIN)!r}, run_name='__mp_main__')"
    loaded = _loaded_in_fresh_interpreter(code, dict(os.environ))
    assert [m for m in loaded if m.startswith("evalstack")] == []



def test_the_command_prints_all_its_output_through_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    # The command freezes its objects for the interpreter's exit; what it printed must still all arrive.
    from evalstack.cli.main import main

    assert main(["pipeline", "definition", "custom_scorer"]) == 0
    in_process = capsys.readouterr().out
    command = [str(Path(sys.executable).with_name("evalstack")), "pipeline", "definition", "custom_scorer"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert done.stdout == in_process
    assert json.loads(done.stdout)["Version"] == "2020-12-01"
