"""The README's screenshot of a comparison report, from a real local run. Not a test.

    EVALSTACK_BENCHMARK_DATA=/path/to/benchmarks python -m bench.report_screenshot   # docs/report-comparison.png

``EVALSTACK_BENCHMARK_DATA`` names a folder with the original MMLU files (see docs/data.md).

A loopback OpenAI-compatible server plays two models on MMLU (all 57 subjects, ``--limit`` questions
in all): it answers each question with the right letter with a per-subject probability, higher for
the "fine-tuned" model on most subjects. The evaluation runs on the local pipeline backend in a
temporary EVALSTACK_HOME (real step subprocesses, the Report step writes report.html), and
Debian's Chromium (through Playwright) takes the screenshot.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import zlib
from pathlib import Path

from tests.support.browser import chromium, watch_requests
from tests.support.openai_server import Reply, chat_body, prompt_of, serve

REPO = Path(__file__).resolve().parents[1]


def _accuracies(subject: str) -> tuple[float, float]:
    """(fine-tuned, base) probability of a right answer: fixed per subject."""
    rng = random.Random(zlib.crc32(subject.encode()))
    candidate = rng.uniform(0.45, 0.9)
    return candidate, min(0.95, max(0.1, candidate - rng.gauss(0.12, 0.1)))


def _script(limit: int):
    from evalstack.benchmarks.answers import letters
    from evalstack.benchmarks.task import BenchmarkTask
    from evalstack.spec import EvaluationSpec

    spec = EvaluationSpec(eval_type="benchmark", model="scripted", benchmark="MMLU", hyperparameters={"limit": limit})
    task = BenchmarkTask(spec.validate())
    gold = {}
    for item in task.items():
        right = letters(len(item.data["options"]))[item.data["gold"]]
        gold[task.definition.lettered(item.data)] = (item.subtask, right)

    def answer(path: str, body: dict) -> Reply:
        blocks = prompt_of(path, body).split("\n\n")
        # The question asked is the last few-shot block(s): find the longest tail that is one.
        subject, right = next(gold[k] for i in range(len(blocks)) if (k := "\n\n".join(blocks[i:])) in gold)
        candidate, base = _accuracies(subject)
        chance = candidate if body["model"] == "candidate" else base
        draw = random.Random(f"{body['model']}:{blocks[-1]}").random()
        return Reply(chat_body(right if draw < chance else ("B" if right == "A" else "A")))

    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=1140, help="MMLU questions in all (stratified by subject)")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "report-comparison.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evalstack-screenshot-") as folder:
        os.environ["EVALSTACK_HOME"] = str(Path(folder) / "home")
        from evalstack.evaluate import BenchMarkEvaluator

        with serve(_script(args.limit)) as server:
            evaluator = BenchMarkEvaluator(
                "MMLU",
                model=f"openai:{server.base_url}?model=candidate&api=chat&logprobs=none",
                base_model=f"openai:{server.base_url}?model=base&api=chat&logprobs=none",
                evaluate_base_model=True,
                s3_output_path=str(Path(folder) / "out"),
                base_eval_name="mmlu-fine-tuned-vs-base",
            )
            evaluator.hyperparameters.limit = args.limit
            execution = evaluator.evaluate()
            execution.wait(poll=1)
        report = Path(execution.s3_output_path) / "report.html"
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1200, "height": 1500})
            requests = watch_requests(page, report.as_uri())
            page.goto(report.as_uri())
            page.screenshot(path=str(args.output))
        if requests.refused:
            raise RuntimeError(f"the report tried to reach {requests.refused}")
        print(f"report: {report.stat().st_size:,} bytes; screenshot: {args.output}")


if __name__ == "__main__":
    main()
