"""The report page's sample digest: made by the Report step as it writes samples.jsonl, it equals the
digest read back from the written files, so report.html needs no second pass over samples.jsonl."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from evalstack.engine.run import evaluate_in_process, report, run_shard
from evalstack.results.html_report import load_inputs, render_html, write_report_html
from evalstack.results.sample_digest import LISTED, SampleDigest, SampleDigester, digest_samples
from evalstack.results.sample_timings import SlowSample, TimingDigest
from evalstack.results.timings import now
from evalstack.spec import DatasetSpec, EvaluationSpec
from tests.support.openai_server import Reply, chat_body, prompt_of, serve
from tests.support.scripted_benchmarks import echo_reply

ROWS = 40


def _answer(path: str, body: dict) -> Reply:
    """The candidate answers every third question wrongly, the base every fifth; a few answers wait
    long enough that no other answer on a loaded machine outlasts them (at most LISTED are listed)."""
    index = int(prompt_of(path, body).split()[-1])
    wrong = index % 5 == 0 if body["model"] == "base" else index % 3 == 0
    text = f"something else {index}" if wrong else f"the answer is {index}"
    return Reply(chat_body(text), delay=1.0 if index in (4, 9, 31) else 0.0)


def _rows(digest: SampleDigest) -> dict[str, list[tuple]]:
    # astuple: ListedSample compares by line only.
    lists = ("most_wrong", "slowest", "regressed")
    return {name: [dataclasses.astuple(s) for s in getattr(digest, name)] for name in lists}


def test_the_report_steps_digest_equals_the_one_read_back_from_samples_jsonl(tmp_path: Path) -> None:
    rows = [{"prompt": f"question {i}", "reference": f"the answer is {i}"} for i in range(ROWS)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, output = str(tmp_path / "records"), str(tmp_path / "out")
    with serve(_answer) as server:
        spec = EvaluationSpec(
            eval_type="custom_scorer", model=f"openai:{server.base_url}?model=candidate&api=chat",
            base_model=f"openai:{server.base_url}?model=base&api=chat", evaluate_base_model=True,
            dataset=DatasetSpec(str(tmp_path / "qa.jsonl")), metrics=["rouge", "accuracy"],
        )  # fmt: skip
        for role in ("candidate", "base"):
            for index in range(2):
                run_shard(spec, role, index, 2, records)
    merged = report(spec, output, records_uri=records)

    online = merged.digest
    assert online is not None
    read_back = load_inputs(output).digest
    assert _rows(online) == _rows(read_back)
    assert online.score_counts == read_back.score_counts and online.samples == read_back.samples == ROWS
    assert online.timings == read_back.timings and online.primary == read_back.primary == "rougeL"
    # Every list is filled, from the scores the files hold.
    samples = [json.loads(line) for line in Path(output, "samples.jsonl").read_text().splitlines()]
    base = [json.loads(line) for line in Path(output, "base", "samples.jsonl").read_text().splitlines()]
    assert len(online.most_wrong) == LISTED and online.slowest and online.regressed
    for listed in online.regressed:
        assert listed.base_score == base[listed.line - 1]["scores"]["rougeL"] > listed.score
        assert listed.score == samples[listed.line - 1]["scores"]["rougeL"]
    lowest = sorted(s["scores"]["rougeL"] for s in samples)[:LISTED]
    assert sorted(s.score for s in online.most_wrong) == lowest
    assert {s.line for s in online.slowest} >= {5, 10, 32}  # the answers that waited
    assert online.score_counts["accuracy"] == {0.0: sum(i % 3 == 0 for i in range(ROWS)), 1.0: ROWS - 14}

    # The page from the Report step's digest is the page from the files; it renders without them.
    assert render_html(load_inputs(output, digest=online)) == render_html(load_inputs(output))
    Path(output, "samples.jsonl").unlink()
    Path(output, "base", "samples.jsonl").unlink()
    page = Path(write_report_html(output, now(), digest=online)).read_text()
    assert f"samples.jsonl:{online.regressed[0].line}" in page


def test_a_base_in_another_order_or_with_blank_lines_is_matched_by_id() -> None:
    candidate = [{"id": f"s{i}", "scores": {"acc": float(i % 2)}} for i in range(6)]
    base = [{"id": f"s{i}", "scores": {"acc": 1.0}} for i in range(6)]
    lines = [json.dumps(r) for r in candidate]
    in_order = digest_samples(lines, "acc", [json.dumps(r) for r in base])
    reversed_base = digest_samples(lines, "acc", [json.dumps(r) for r in reversed(base)])
    blanks = ["", *(json.dumps(r) for r in base[:3]), "  ", *(json.dumps(r) for r in base[3:])]
    with_blanks = digest_samples(lines, "acc", blanks)
    assert [(s.id, s.base_score) for s in in_order.regressed] == [("s0", 1.0), ("s2", 1.0), ("s4", 1.0)]
    assert _rows(reversed_base) == _rows(with_blanks) == _rows(in_order)
    missing = digest_samples(lines, "acc", [json.dumps({"id": "other", "scores": {"acc": 1.0}})])
    assert missing.regressed == [] and [s.base_score for s in missing.most_wrong] == [None, None, None]


def test_a_benchmark_comparisons_digest_equals_the_one_read_back(tmp_path: Path) -> None:
    """Records aggregated as lists (a benchmark's), with log-likelihood margins deciding the most-wrong order."""

    def script(path: str, body: dict) -> Reply:
        prompt, letter = body["prompt"], body["prompt"][-1]
        favourite = "A" if body["model"] == "base" else "B"
        spread = (len(prompt) % 7) / 10  # margins differ from question to question
        return echo_reply(prompt, f" {letter}", -0.5 if letter == favourite else -2.0 - spread)

    with serve(script) as server:
        url = server.base_url
        models = {role: f"openai:{url}?model={role}&api=completions&logprobs=echo" for role in ("c", "base")}
        spec = EvaluationSpec(
            eval_type="benchmark", model=models["c"], base_model=models["base"], evaluate_base_model=True,
            benchmark="MMLU", subtasks=["anatomy", "astronomy"], hyperparameters={"limit": 12},
        ).validate()  # fmt: skip
        merged = evaluate_in_process(spec, str(tmp_path / "out"))
    online, read_back = merged.digest, load_inputs(str(tmp_path / "out")).digest
    assert online is not None and online.most_wrong and online.regressed
    assert _rows(online) == _rows(read_back)
    assert online.score_counts == read_back.score_counts and online.primary == read_back.primary
    # Equal scores: the most confident wrong answers first, by the margins the samples hold.
    lines = Path(tmp_path, "out", "samples.jsonl").read_text().splitlines()
    margins = []
    for listed in online.most_wrong:
        record = json.loads(lines[listed.line - 1])
        lls, gold = record["loglikelihoods"], record["target"]
        margins.append(max(v for i, v in enumerate(lls) if i != gold) - lls[gold])
    assert margins == sorted(margins, reverse=True) and len(set(margins)) > 1


def _random_records(rng: random.Random, count: int) -> list[dict]:
    """Records as samples.jsonl holds them, with two metrics, many ties (0/1 accuracy), scores that tie
    the least wrong kept one, and a few log-likelihood answers whose margin breaks a tie."""
    records = []
    for i in range(count):
        record = {"id": f"line-{i + 1}", "response": f"r{i}", "reference": f"t{i}"}
        record["scores"] = {"accuracy": float(rng.random() < 0.8), "rougeL": rng.choice([0.25, 0.5, 0.75, 1.0])}
        if rng.random() < 0.02:
            record["loglikelihoods"], record["target"] = [rng.random(), rng.random()], 0
        records.append(record)
    return records


def test_a_digest_fed_in_blocks_equals_one_fed_record_by_record() -> None:
    rng = random.Random(7)
    records = _random_records(rng, 3000)
    records[1500]["scores"]["accuracy"] = 1  # an int score: that block is digested record by record
    records[2000]["scores"] = {"rougeL": 0.5, "accuracy": 0.0}  # the same keys in another order
    timings = TimingDigest(slowest=[SlowSample(f"line-{n}", n, 1.0, 1, 0) for n in (3, 700, 2999)])
    one, blocks = SampleDigester(timings), SampleDigester(timings)
    for number, record in enumerate(records, start=1):
        one.add(number, record)
    first = 1
    while first <= len(records):
        size = rng.choice([1, 7, 256, 1024])
        blocks.add_block(first, records[first - 1 : first - 1 + size])
        first += size
    for primary in ("accuracy", "rougeL"):
        expected, got = one.result(primary), blocks.result(primary)
        assert _rows(got) == _rows(expected)
        assert list(got.score_counts.items()) == list(expected.score_counts.items())
        assert got.samples == expected.samples == len(records)
    assert len(blocks.result("accuracy").most_wrong) == LISTED
    assert any(s.id == "line-3" for s in blocks.result("accuracy").slowest)
