"""A big file's validating pass in a child process, so the caller never loads pyarrow.

The client checks a dataset before a run starts, then waits on the run for minutes: pyarrow's libraries
and what its allocator keeps (about 80 MB of resident memory, measured) would stay in the client all that
time, beside the run's own processes. ``python -m evalstack.data.scan_process`` reads a dataset spec as
JSON on its standard input, makes the pass (``DatasetReader.scan_here``) and writes the summary, or the
dataset error's message, as JSON on its standard output. A plain child process, not a multiprocessing
one: it runs none of the caller's code again (its ``__main__`` may be a user's script).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from typing import Any

from evalstack.data.records import DatasetError
from evalstack.spec import ColumnMapping, DatasetSpec


def summary_from_child(spec: DatasetSpec) -> dict[str, Any] | None:
    """The pass's summary (``DatasetSummary``'s fields) as the child made it; raises the child's dataset
    error. None when the child failed otherwise (it could not start, was killed, or met an error that is
    not the dataset's, such as a storage error): the caller then makes the pass itself and meets it there."""
    done = subprocess.run(
        [sys.executable, "-m", __name__], input=json.dumps(asdict(spec)), capture_output=True, text=True
    )
    try:  # the last line: a library may print to standard output as it is imported
        answer = json.loads(done.stdout.splitlines()[-1]) if done.returncode == 0 else None
    except (IndexError, ValueError):
        answer = None
    if answer is None:
        reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        print(f"data: the checking process failed ({reason}); checking in this process", file=sys.stderr)
        return None
    if "error" in answer:
        raise DatasetError(answer["error"])
    return answer["summary"]


def main() -> None:
    from evalstack.data.reader import DatasetReader

    request = json.loads(sys.stdin.read())
    spec = DatasetSpec(request["uri"], request["format"], ColumnMapping(**request["columns"]))
    try:
        answer: dict[str, Any] = {"summary": asdict(DatasetReader(spec).scan_here())}
    except DatasetError as err:
        answer = {"error": str(err)}
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
