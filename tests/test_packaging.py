"""Packaging: the constructs and the client install and import without the engine's scientific stack,
and a wheel built from this checkout synthesizes the platform, image asset included, in a fresh venv.

The wheel test downloads the constructs' dependencies from PyPI once into a cache outside the
repository (``~/.cache/evalstack-tests/wheels``, or ``EVALSTACK_TEST_WHEELS``), then installs with
``--no-index`` from it: aws-cdk-lib at its tested floor, constructs, cdk-nag and boto3, nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE_MODULES = ("numpy", "scipy", "pyarrow", "sklearn", "mlflow", "sacrebleu", "nltk", "sympy", "torch")
# The floor pyproject.toml declares for aws-cdk-lib; the fresh venv installs exactly this version.
CDK_FLOOR = "2.275.0"
CONSTRUCT_DEPENDENCIES = (
    f"aws-cdk-lib=={CDK_FLOOR}", "constructs>=10.4,<11", "cdk-nag>=3.0.2,<4", "boto3>=1.40", "httpx>=0.27,<1",
)  # fmt: skip
_LOADED = f"import json, sys; print(json.dumps([m for m in {list(ENGINE_MODULES)!r} if m in sys.modules]))"


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(args)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def test_declared_cdk_floor_is_the_tested_one() -> None:
    import tomllib

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"aws-cdk-lib>={CDK_FLOOR},<3" in dependencies
    assert not [d for d in dependencies if d.split(">")[0].split("=")[0] in ("numpy", "scipy", "pyarrow")]


def test_importing_the_constructs_and_the_client_loads_no_engine_library() -> None:
    code = f"import evalstack.constructs, evalstack.evaluate, evalstack.cli.main, evalstack.lambdas.trigger; {_LOADED}"
    env = {**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    loaded = json.loads(_run([sys.executable, "-c", code], cwd=ROOT, env=env).stdout.strip().splitlines()[-1])
    assert loaded == []


def _wheel_cache() -> Path:
    cache = Path(os.environ.get("EVALSTACK_TEST_WHEELS", Path.home() / ".cache" / "evalstack-tests" / "wheels"))
    cache.mkdir(parents=True, exist_ok=True)
    marker = cache / ".complete"
    # The marker lists what the cache was filled for: a changed dependency list fills it again.
    if not marker.exists() or marker.read_text() != "\n".join(CONSTRUCT_DEPENDENCIES):
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(cache),
              *CONSTRUCT_DEPENDENCIES])  # fmt: skip
        marker.write_text("\n".join(CONSTRUCT_DEPENDENCIES))
    return cache


def _build_wheel(tmp: Path) -> Path:
    # Built from a copy, so the shared checkout gets no build/ directory.
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "evalstack", source / "evalstack", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist),
          str(source)])  # fmt: skip
    (wheel,) = dist.glob("evalstack-*.whl")
    return wheel


SYNTH = """
import json, sys
import aws_cdk as cdk
from evalstack.constructs.app import build_app
app = cdk.App(outdir=sys.argv[1], context={"modelPackageGroup": "demo-models",
    "evaluation": {"eval_type": "benchmark", "benchmark": "MMLU"},
    "@aws-cdk/core:validationReportJson": True})
stack = build_app(app)
app.synth()
""" + _LOADED


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("packaging")
    wheel = _build_wheel(tmp)
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(_wheel_cache()),
          str(wheel), f"aws-cdk-lib=={CDK_FLOOR}"])  # fmt: skip
    return {"python": python, "wheel": wheel, "tmp": tmp}


def test_wheel_ships_the_image_and_installs_without_the_engine(installed: dict[str, Path]) -> None:
    import zipfile

    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "evalstack/image/Dockerfile" in names and "evalstack/pipeline/step.py" in names
    listed = _run([str(installed["python"]), "-m", "pip", "list", "--format=json"]).stdout
    packages = {p["name"].lower(): p["version"] for p in json.loads(listed)}
    assert packages["aws-cdk-lib"] == CDK_FLOOR and "cdk-nag" in packages and "boto3" in packages
    assert not {"numpy", "scipy", "pyarrow", "scikit-learn", "mlflow-skinny"} & set(packages)


def test_installed_wheel_synthesizes_the_platform_with_its_image_asset(installed: dict[str, Path]) -> None:
    outdir = installed["tmp"] / "cdk.out"
    env = {**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    # Run outside the checkout so nothing of it is importable: only the installed wheel is.
    result = _run([str(installed["python"]), "-c", SYNTH, str(outdir)], cwd=installed["tmp"], env=env)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    assets = json.loads((outdir / "evalstack-dev.assets.json").read_text())
    (image,) = assets["dockerImages"].values()
    source = image["source"]
    assert source["dockerFile"] == "image/Dockerfile"
    requirements = source["dockerBuildArgs"]["REQUIREMENTS"].split()
    assert any(r.startswith("numpy") for r in requirements)
    assert any(r.startswith("sagemaker-mlflow") for r in requirements)
    context = outdir / source["directory"]
    assert (context / "image" / "Dockerfile").is_file() and (context / "pipeline" / "step.py").is_file()
    assert not list(context.rglob("__pycache__"))
    template = json.loads((outdir / "evalstack-dev.template.json").read_text())
    assert sum(r["Type"] == "AWS::SageMaker::Pipeline" for r in template["Resources"].values()) == 3
