"""The `evalstack` command, run as a user runs it: a real subprocess of the installed entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from evalstack.engine.run import read_progress
from tests.conftest import EXAMPLES, REPO_ROOT


def evalstack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalstack.cli.main", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=REPO_ROOT,
        check=False,
        timeout=300,
    )


def test_lists_benchmarks_and_metrics() -> None:
    out = evalstack("benchmarks", "list")
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names == [
        "MMLU",
        "BBH",
        "MATH",
        "GSM8K",
        "HellaSwag",
        "WinoGrande",
        "ARC",
        "TruthfulQA",
        "PIQA",
        "BoolQ",
        "RACE",
    ]
    metrics = evalstack("metrics", "list").stdout
    for name in ("accuracy", "bertscore", "helpfulness", "conciseness"):
        assert f"  {name}" in metrics


def test_describes_one_benchmark_case_insensitively() -> None:
    out = evalstack("benchmarks", "show", "arc")
    assert out.returncode == 0, out.stderr
    props = json.loads(out.stdout)
    assert props["subtasks"] == ["easy", "challenge"]
    assert props["num_samples"] == 3548


def test_unknown_names_exit_2_with_the_valid_ones() -> None:
    out = evalstack("benchmarks", "show", "squad")
    assert out.returncode == 2
    assert "Unknown benchmark 'squad'. Valid values: MMLU, BBH" in out.stderr


def test_runs_a_custom_scorer_evaluation(tmp_path: Path) -> None:
    # A relative dataset path, as a user types it: the pipeline's step processes must still find it.
    out = evalstack(
        "evaluate", "custom-scorer",
        "--dataset", "examples/truthfulqa_answers.jsonl",
        "--metric", "rouge", "--metric", "bleu",
        "--hp", "use_stemmer=true",
        "--model", "listed-answers",
        "--output", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    results_line = next(line for line in out.stdout.splitlines() if line.startswith("Results:"))
    results = json.loads(Path(results_line.split(maxsplit=1)[1]).read_text())
    assert results["metrics"]["rouge1"] > 0
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines() if line[:1].islower() and " " in line}
    assert rows["rouge1"] == f"{results['metrics']['rouge1']:.4f}"
    assert rows["bleu"] == f"{results['metrics']['bleu']:.4f}"
    # Piped output gets no progress bar; the shards' progress files still count every item.
    assert "item/s" not in out.stderr and "40/40" not in out.stderr
    assert read_progress(str(Path(results_line.split(maxsplit=1)[1]).parent)) == (40, 40)


def test_bad_hyperparameter_is_a_clear_error(tmp_path: Path) -> None:
    out = evalstack(
        "evaluate", "custom-scorer", "--dataset", str(EXAMPLES / "truthfulqa_answers.jsonl"),
        "--metric", "bleu", "--hp", "max_order=0", "--model", "m", "--output", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 2
    assert "hyperparameter 'max_order' must be >= 1" in out.stderr
    assert not any(tmp_path.iterdir())


def test_unknown_hyperparameter_lists_the_valid_names(tmp_path: Path) -> None:
    out = evalstack(
        "evaluate", "custom-scorer", "--dataset", str(EXAMPLES / "truthfulqa_answers.jsonl"),
        "--metric", "bleu", "--hp", "smoothing=true", "--model", "m", "--output", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 2
    assert "Unknown hyperparameter 'smoothing'. Valid names:" in out.stderr and "smooth" in out.stderr


def test_runs_a_benchmark_against_a_served_model(benchmark_data: Path, tmp_path: Path) -> None:
    from tests.support.openai_server import prompt_of, serve

    answers = {}
    for line in (benchmark_data / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        answers[row["question"]] = row["answer"].rsplit("#### ", 1)[1]

    def script(path: str, body: dict) -> str:
        question = prompt_of(path, body).rsplit("Question: ", 1)[1].removesuffix("\nAnswer:")
        return f"Adding it up gives {answers[question]}.\n#### {answers[question]}"

    with serve(script) as server:
        out = evalstack(
            "evaluate", "benchmark", "gsm8k", "--model", f"openai:{server.base_url}?model=m",
            "--limit", "6", "--output", str(tmp_path),
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines() if line.startswith(("exact", "score"))}
    assert rows == {"exact_match_strict": "1.0000", "exact_match_flexible": "1.0000", "score": "100.0000"}
    assert len(server.requests) == 6


def test_progress_bar_draws_on_a_terminal_only_with_honest_rates(tmp_path: Path, monkeypatch) -> None:
    """On a real pseudo-terminal the bar exists; items already done when it first appears are its
    start, not counted as done in no time (which read as 906,877 item/s)."""
    import pty
    import types

    from evalstack import storage
    from evalstack.cli.evaluate_commands import _ProgressBar
    from evalstack.engine.run import progress_uri

    execution = types.SimpleNamespace(name="run", s3_output_path=str(tmp_path))
    progress = progress_uri(str(tmp_path), "candidate", 0, 1)
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        bar = _ProgressBar()
        assert bar.enabled
        storage.write_text(progress, json.dumps({"done": 900, "total": 1000}))
        bar(execution)
        assert "900/1000 [00:00<?, ?item/s" in str(bar.bar)  # no rate from items already done
        storage.write_text(progress, json.dumps({"done": 1000, "total": 1000}))
        bar(execution)
        shown = bar.bar.format_dict
        assert (shown["n"], shown["initial"], shown["total"]) == (1000, 900, 1000)
        bar.close()
    os.close(master)
    with open(os.devnull, "w") as piped:
        monkeypatch.setattr(sys, "stderr", piped)
        assert not _ProgressBar().enabled
