"""The response cache as a file: a corrupt one is moved aside with a warning (a run never stops for
it), and ``evalstack cache info|clear`` shows and removes it."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import subprocess
import sys
from pathlib import Path

import pytest

from evalstack import storage
from evalstack.cli.main import EXIT_FAILED
from evalstack.evaluate import CustomScorerEvaluator
from evalstack.models.cache import CorruptCacheWarning, ResponseCache, cache_info, clear_cache, default_cache_path
from tests.conftest import REPO_ROOT, TRUTHFULQA_QUESTIONS

GARBAGE = b"definitely not SQLite\n" * 300


def _cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalstack.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_a_corrupt_cache_is_moved_aside_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "responses.sqlite"
    path.parent.mkdir()
    path.write_bytes(GARBAGE)
    with pytest.warns(CorruptCacheWarning) as warned, ResponseCache(path) as cache:
        cache.put("k", {"text": "answer"})
        assert cache.get("k") == {"text": "answer"}
    message = str(warned[0].message)
    assert message.startswith(f"response cache {path} is corrupt (file is not a database); moved it aside to ")
    aside = [p for p in path.parent.iterdir() if p.name.startswith("responses.sqlite.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == GARBAGE
    assert str(aside[0]) in message
    with ResponseCache(path) as cache:  # the new file is a healthy cache: no second warning
        assert cache.get("k") == {"text": "answer"}


def test_info_counts_entries_and_clear_removes_everything(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    with ResponseCache(path) as cache:
        for i in range(5):
            cache.put(f"key-{i}", {"i": i})
        info = cache_info(path)
        assert (info.path, info.exists, info.entries) == (path, True, 5)
        assert info.size_bytes == sum(p.stat().st_size for p in tmp_path.iterdir())  # database, WAL, shm
        assert info.size_bytes > 0
    (tmp_path / "responses.sqlite.corrupt-20260101T000000-1").write_bytes(GARBAGE)
    (tmp_path / "unrelated.txt").write_text("stays")
    removed = clear_cache(path)
    assert path in removed and tmp_path / "responses.sqlite.corrupt-20260101T000000-1" in removed
    assert [p.name for p in tmp_path.iterdir()] == ["unrelated.txt"]
    assert cache_info(path) == type(info)(path, False, 0, 0)


def test_cli_info_and_clear(tmp_path: Path, isolated_environment: Path) -> None:
    default = default_cache_path()
    assert default == isolated_environment / "cache" / "responses.sqlite"
    done = _cli("cache", "info")
    assert done.returncode == 0
    assert done.stdout.splitlines() == [f"Cache:   {default}", "Entries: 0 (no cache file yet)"]

    with ResponseCache(default) as cache:
        cache.put("a", {"text": "x"})
        cache.put("b", {"text": "y"})
    size = cache_info(default).size_bytes
    done = _cli("cache", "info")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == [f"Cache:   {default}", "Entries: 2"]
    assert lines[2].startswith("Size:    ") and lines[2].endswith(f"({size} bytes)")

    done = _cli("cache", "clear")
    assert done.returncode == 0, done.stderr
    assert f"removed {default}" in done.stdout.splitlines()
    assert not default.exists()
    assert "Entries: 0 (no cache file yet)" in _cli("cache", "info").stdout


def test_cli_names_a_corrupt_cache_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    path.write_bytes(GARBAGE)
    done = _cli("cache", "info", "--path", str(path))
    assert done.returncode == EXIT_FAILED  # a corrupt file is not a usage error nor a missing execution
    assert done.stderr.startswith(
        f"evalstack: error: response cache {path} is corrupt (file is not a database); run `evalstack cache clear`"
    )
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert path.read_bytes() == GARBAGE  # info never moves or changes the file
    assert _cli("cache", "clear", "--path", str(path)).returncode == 0
    assert not path.exists()


def test_relative_cache_path_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVALSTACK_CACHE", f"cache-{tmp_path.name}/responses.sqlite")
    assert default_cache_path() == tmp_path / f"cache-{tmp_path.name}" / "responses.sqlite"


def test_a_run_survives_a_corrupt_cache(model_server, dataset: str, tmp_path: Path) -> None:
    """The cache file at the default path is garbage: the evaluation warns, moves it aside and succeeds."""
    cache = default_cache_path()
    cache.parent.mkdir(parents=True)
    cache.write_bytes(GARBAGE)
    execution = CustomScorerEvaluator(
        evaluator="accuracy",
        dataset=dataset,
        model=f"openai:{model_server.base_url}?model=candidate&api=chat",
        s3_output_path=str(tmp_path / "out"),
    ).evaluate()
    execution.wait(poll=0.5, timeout=180)
    assert execution.status == "Succeeded", execution.failure_reason
    assert execution.results()["metrics"]["accuracy"] == 1.0
    assert cache_info(cache).entries == TRUTHFULQA_QUESTIONS
    aside = list(cache.parent.glob("responses.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == GARBAGE
    logs = "".join(p.read_text() for p in storage.evalstack_home().joinpath("executions").rglob("output.log"))
    assert f"response cache {cache} is corrupt" in logs


def _open_and_store(path: str, start: multiprocessing.synchronize.Barrier, key: str) -> None:
    start.wait()
    cache = ResponseCache(path)
    cache.put(key, {"answer": key})
    cache.close()


def test_processes_opening_a_new_cache_at_once_all_get_it(tmp_path: Path) -> None:
    """SQLite answers "database is locked" at once to a process that loses the race to switch a new file to
    WAL (seen as a failed evaluation step when the candidate's and the base's steps start together)."""
    context = multiprocessing.get_context("fork")
    for trial in range(30):
        path = str(tmp_path / f"{trial}.sqlite")
        start = context.Barrier(3)
        workers = [context.Process(target=_open_and_store, args=(path, start, f"k{n}")) for n in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert [worker.exitcode for worker in workers] == [0, 0, 0], f"trial {trial}"
        cache = ResponseCache(path)
        assert [cache.get(f"k{n}") for n in range(3)] == [{"answer": f"k{n}"} for n in range(3)]
        cache.close()
