"""The layering rules of the design, checked on the import statements of every module.

Lower layers never import higher ones; the Lambda handlers need only the standard library and
boto3; the runtime client never imports the CDK. And what only a step needs stays out of the client:
importing the public API, ``evalstack --help`` and the local runner load no scientific stack.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "evalstack"

FOUNDATION = {"catalog", "masking", "storage", "spec", "task"}
LOWER = FOUNDATION | {"data", "models", "metrics"}
TASKS = LOWER | {"benchmarks", "judge"}
ENGINE = TASKS | {"engine", "results"}
ALLOWED: dict[str, set[str]] = {
    "catalog": set(),
    # masking is the one function every writer uses, so it sits below everything and imports nothing
    "masking": set(),
    "storage": {"masking"},
    "spec": {"catalog", "masking"},
    "task": {"models"},
    "data": FOUNDATION,
    "models": {"catalog", "masking", "storage"},
    "metrics": {"catalog"},
    "benchmarks": LOWER,
    "judge": LOWER,
    "engine": ENGINE,
    "results": ENGINE,
    "pipeline": ENGINE | {"pipeline"},
    "runtime": ENGINE | {"pipeline", "runtime"},
    # the read-only web viewer sits at the cli layer: it lists executions through the runtime
    "view": ENGINE | {"pipeline", "runtime", "view"},
    "evaluate": {"catalog", "masking", "spec", "runtime"},
    # constructs embed the pipeline definition and start the lambdas with the event shape they read
    "constructs": {"catalog", "spec", "pipeline", "lambdas", "constructs"},
    "lambdas": {"lambdas"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _layer(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) in ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_layer_imports_only_what_it_may(path: Path) -> None:
    layer = _layer(path)
    ours = {name.split(".")[1] for name in _imports(path) if name.startswith("evalstack.")}
    assert ours - ALLOWED[layer] - {layer} == set(), f"{layer} may import only {sorted(ALLOWED[layer])}"


def test_lambdas_need_only_the_standard_library_and_boto3() -> None:
    for path in (PACKAGE / "lambdas").rglob("*.py"):
        third_party = {
            name.split(".")[0]
            for name in _imports(path)
            if name.split(".")[0] not in sys.stdlib_module_names and not name.startswith("evalstack.lambdas")
        }
        assert third_party <= {"boto3", "botocore"}, f"{path.name} imports {sorted(third_party)}"


def test_runtime_and_engine_never_import_the_cdk() -> None:
    for layer in ("runtime", "engine", "pipeline", "models", "data", "metrics"):
        for path in (PACKAGE / layer).rglob("*.py"):
            roots = {name.split(".")[0] for name in _imports(path)}
            assert not roots & {"aws_cdk", "constructs", "cdk_nag"}, f"{path} imports the CDK"


# What a pipeline step (or a model call) loads, never the client, the CLI's parser or the runner.
HEAVY = (
    "numpy", "scipy", "pyarrow", "pandas", "sklearn", "torch", "transformers", "datasets", "nltk", "rouge_score",
    "sacrebleu", "matplotlib", "mlflow", "boto3", "botocore.session", "botocore.client", "urllib3", "httpx", "rich",
    "click",
    # what builds and runs an evaluation (the model layer and its HTTP dispatcher, the task engine, the
    # judge): the evaluators import it when they are built or run
    "evalstack.models", "evalstack.engine", "evalstack.judge", "http.client",
)  # fmt: skip
CLI_HELP = """
import contextlib, io
from evalstack.cli.main import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main({argv!r})
"""


@pytest.mark.parametrize(
    "code",
    [
        "import evalstack.evaluate",
        "from evalstack.evaluate import CustomScorerEvaluator, EvaluationPipelineExecution, get_benchmarks",
        CLI_HELP.format(argv=["--help"]),
        CLI_HELP.format(argv=["evaluate", "custom-scorer", "--help"]),
        "import evalstack.pipeline.local.runner",
    ],
    ids=["import-evaluate", "from-evaluate", "cli-help", "cli-evaluate-help", "runner"],
)
def test_client_cli_and_runner_load_no_heavy_module(code: str) -> None:
    # A fresh interpreter: this test process has long imported everything.
    report = "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code + report], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "evalstack" in loaded
    assert [name for name in HEAVY if name in loaded] == []
