"""The client's validating pass (``ScorerTask.scan``, which ``evaluate()`` makes before anything is written)
on a pool of processes: the same summary and the same errors as in one process, only tallies coming back
from the workers, and a pool only where spawned workers cannot run a user's script again (the CLI, ``python
-c``, an interactive session) unless the user opts in with ``EVALSTACK_METRIC_WORKERS``."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from evalstack.data import DatasetError, block_pool, reader, text_rows
from evalstack.data.records import RecordBuilder
from evalstack.engine.scorer_task import ScorerTask
from evalstack.metrics import pool as metrics_pool
from evalstack.spec import DatasetSpec, EvaluationSpec

POOL_MESSAGE = "data: parsing and checking blocks with 2 worker processes"


def _row(i: int, **fields: Any) -> str:
    return json.dumps({"prompt": f"Question {i}?", "response": "yes" if i % 3 else "no", "reference": "yes"} | fields)


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(f"{row}\n" for row in rows), encoding="utf-8")
    return path


def _spec(path: Path) -> EvaluationSpec:
    return EvaluationSpec(eval_type="custom_scorer", model="m", dataset=DatasetSpec(str(path)), metrics=["accuracy"])


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """Small files go to a pool when one is asked for; each pooled pass's values from the workers are kept."""
    monkeypatch.setattr(block_pool, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(text_rows, "BLOCK_BYTES", 2000)  # several blocks per file
    seen: list[list[Any]] = []
    original = block_pool.BlockPool.results

    def kept(self: block_pool.BlockPool, *args: Any) -> Any:
        values: list[Any] = []
        seen.append(values)
        for tally, value in original(self, *args):
            values.append((tally, value))
            yield tally, value

    monkeypatch.setattr(block_pool.BlockPool, "results", kept)
    return seen


def _client_scan(path: Path, workers: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The client's pass with ``EVALSTACK_METRIC_WORKERS=workers`` (pytest's own main is a script, so this
    setting is what asks for a pool here), with no summary of an earlier pass to reuse; the summary or the
    error message."""
    monkeypatch.setenv("EVALSTACK_METRIC_WORKERS", workers)
    monkeypatch.setattr(reader, "_PASSES", {})
    try:
        return dataclasses.asdict(ScorerTask(_spec(path), "candidate").scan())
    except DatasetError as err:
        return str(err)


def test_a_pooled_client_scan_gives_the_single_process_summary_from_tallies_alone(
    tmp_path: Path, passes: list[list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [_row(i) for i in range(400)]
    files = {
        "labelled": _write(tmp_path / "labelled.jsonl", rows),
        "a reference missing deep": _write(tmp_path / "no-ref.jsonl", [*rows[:350], _row(350, reference=None), *rows]),
        "a response missing deep": _write(tmp_path / "no-resp.jsonl", [*rows[:390], _row(390, response=None), *rows]),
    }
    built_here: list[int] = []
    original = RecordBuilder.build_block

    def counted(self: RecordBuilder, lines: Any, parsed: Any) -> Any:
        built_here.append(len(parsed))
        return original(self, lines, parsed)

    with monkeypatch.context() as patch:
        patch.setattr(RecordBuilder, "build_block", counted)
        pooled = {name: _client_scan(path, "2", monkeypatch) for name, path in files.items()}
    assert built_here == []  # every block was parsed and checked by a worker
    assert len(passes) == len(files)
    for values in passes:
        assert len(values) > 5  # several blocks
        assert all(isinstance(tally, block_pool.BlockTally) and value is None for tally, value in values)
    single = {name: _client_scan(path, "1", monkeypatch) for name, path in files.items()}
    assert len(passes) == len(files)  # the single-process passes used no pool
    assert pooled == single
    assert pooled["labelled"]["count"] == 400 and pooled["labelled"]["has_references"]
    assert not pooled["a reference missing deep"]["has_references"]
    assert pooled["a reference missing deep"]["has_responses"]
    assert not pooled["a response missing deep"]["has_responses"]


BAD_FILES = {
    "bad JSON deep in the file": [*map(_row, range(300)), '{"prompt": "q",}', *map(_row, range(50))],
    "a field of the wrong type": [*map(_row, range(280)), json.dumps({"prompt": {"a": 1}, "response": "r"})],
    "not an object": [*map(_row, range(250)), "[1, 2]", *map(_row, range(20))],
    "invalid UTF-8": [*map(_row, range(260)), '{"prompt": "caf\udce9"}', *map(_row, range(20))],
    "no prompt early, no response in a later block": [
        json.dumps({"response": "r", "reference": "a"}),
        *map(_row, range(300)),
        json.dumps({"prompt": "p", "reference": "a"}),
    ],
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_line_deep_in_the_file_fails_pooled_with_the_single_process_error(
    name: str, tmp_path: Path, passes: list[list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes("".join(f"{row}\n" for row in BAD_FILES[name]).encode("utf-8", "surrogateescape"))
    pooled = _client_scan(path, "2", monkeypatch)
    assert len(passes) == 1
    single = _client_scan(path, "1", monkeypatch)
    assert isinstance(single, str) and single.startswith(f"{path}: line ")  # an error naming file and line
    assert pooled == single


def _python(args: list[str], cwd: Path, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` with ``EVALSTACK_METRIC_WORKERS`` unset unless ``env`` sets it."""
    environment = {k: v for k, v in os.environ.items() if k != metrics_pool.WORKERS_ENV} | env
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environment, input=stdin, capture_output=True, text=True, timeout=120
    )


DECIDE = "from evalstack.data.block_pool import spawned_workers; print(spawned_workers(2))"


@pytest.mark.parametrize(
    ("how", "workers"),
    [("python -c", 2), ("stdin", 1), ("script", 1), ("script, opted in", 2), ("package __main__", 2), ("module", 1)],
)
def test_the_pool_is_used_only_where_no_user_script_runs_again(how: str, workers: int, tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    for path in (tmp_path / "script.py", tmp_path / "module.py", tmp_path / "pkg" / "__main__.py"):
        path.write_text(DECIDE + "\n")
    command, stdin, env = {
        "python -c": (["-c", DECIDE], None, {}),
        "stdin": (["-"], DECIDE, {}),
        "script": (["script.py"], None, {}),
        "script, opted in": (["script.py"], None, {metrics_pool.WORKERS_ENV: "2"}),
        "package __main__": (["-m", "pkg"], None, {}),
        "module": (["-m", "module"], None, {}),
    }[how]
    done = _python(command, tmp_path, stdin, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(workers)]


def test_the_variable_that_opts_in_is_the_metric_pools() -> None:
    assert block_pool.WORKERS_ENV == metrics_pool.WORKERS_ENV


# What the subprocesses below share: any file is big enough for a pool, and this machine has two cores
# whatever CI runs on (the variable that would set the workers is unset, so the decision is the code's).
PRELUDE = """\
from evalstack.data import block_pool, text_rows
from evalstack.metrics import pool
block_pool.POOL_MIN_BYTES = 0
text_rows.BLOCK_BYTES = 2000
pool.available_cores = lambda: 2
"""


def _dataset(tmp_path: Path) -> Path:
    return _write(tmp_path / "answers.jsonl", [_row(i) for i in range(300)])


def test_the_cli_scans_with_the_pool(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    cli = Path(sys.executable).with_name("evalstack")  # the console script pip wrote
    argv = [str(cli), "evaluate", "custom-scorer", "--dataset", str(dataset), "--metric", "accuracy"]
    argv += ["--model", "m", "--dry-run"]
    code = PRELUDE + f"import runpy, sys\nsys.argv = {argv!r}\nrunpy.run_path({str(cli)!r}, run_name='__main__')\n"
    done = _python(["-c", code], tmp_path, EVALSTACK_HOME=str(tmp_path / "home"), EVALSTACK_BACKEND="local")
    assert done.returncode == 0, done.stderr
    assert POOL_MESSAGE in done.stderr
    assert str(dataset) in done.stdout  # the dry run's spec


def test_a_script_without_a_main_guard_scans_in_one_process_and_runs_once(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    runs = tmp_path / "runs.txt"
    (tmp_path / "user_script.py").write_text(
        PRELUDE
        + textwrap.dedent(f"""\
            from evalstack.evaluate import CustomScorerEvaluator
            with open({str(runs)!r}, "a") as handle:
                handle.write("ran\\n")
            dry = CustomScorerEvaluator("accuracy", dataset={str(dataset)!r}, model="m").evaluate(dry_run=True)
            print(dry.spec["dataset"]["uri"])
            """)
    )
    done = _python(["user_script.py"], tmp_path, EVALSTACK_HOME=str(tmp_path / "home"), EVALSTACK_BACKEND="local")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(dataset)]
    assert POOL_MESSAGE not in done.stderr
    assert runs.read_text() == "ran\n"  # no worker ran the script again
