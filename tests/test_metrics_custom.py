"""The custom scorer runner: exact semantics (whole dataset, per-sample lists, aggregate), failures that
say where, cloudpickle transport."""

import subprocess
import sys
from importlib.metadata import version

import cloudpickle
import pytest

from evalstack.metrics import CustomScorer, ScorerError, custom, dump_scorer, load_scorer, run_custom_scorer
from tests.support.metrics_data import boolq_labels, perturb

TRUTH = boolq_labels(50)
PREDICTIONS = perturb(TRUTH, 4, ["True", "False"])
MATCHES = [float(p == t) for p, t in zip(PREDICTIONS, TRUTH, strict=True)]


class ExactMatch:
    """A per-sample-mean scorer, as in the reference API example."""

    def __init__(self, case_sensitive: bool = True) -> None:
        self.case_sensitive = case_sensitive

    def score(self, predictions, ground_truth, metadata=None):
        norm = (lambda s: s) if self.case_sensitive else str.lower
        hits = [norm(p) == norm(t) for p, t in zip(predictions, ground_truth, strict=True)]
        return {"exact_match": sum(hits) / len(hits), "sample_count": len(predictions)}


class FailsOnSecondBatch:
    def score(self, predictions, ground_truth, metadata=None):
        if metadata[0]["index"] >= 10:
            raise KeyError("label_map")
        return {"x": [1.0] * len(predictions)}


class Returns:
    def __init__(self, value) -> None:
        self.value = value

    def score(self, predictions, ground_truth, metadata=None):
        return self.value


@pytest.mark.parametrize("batch_size", [1, 7, 8, 50, 64])
def test_a_plain_scorer_sees_the_whole_dataset_at_once(batch_size):
    calls = []

    class Counting(ExactMatch):
        def score(self, predictions, ground_truth, metadata=None):
            calls.append(len(predictions))
            return super().score(predictions, ground_truth, metadata)

    result = run_custom_scorer(Counting(), PREDICTIONS, TRUTH, batch_size=batch_size)
    assert calls == [50]  # one call, whatever the batch size: its values are the whole-set values
    assert result.values == {"exact_match": sum(MATCHES) / len(MATCHES), "sample_count": 50.0}
    assert result.per_sample is None
    assert result.signature == {
        "custom_scorer": f"tests.test_metrics_custom.{Counting.__qualname__}",
        "cloudpickle": version("cloudpickle"),
    }


class CountsAndF1:
    """Counts and a corpus-level F1: values that no mean of batch values reproduces."""

    def score(self, predictions, ground_truth, metadata=None):
        from sklearn.metrics import f1_score

        return {
            "sample_count": len(predictions),
            "positives": sum(t == "True" for t in ground_truth),
            "f1": f1_score(ground_truth, predictions, pos_label="True"),
        }


def test_counts_and_corpus_f1_are_the_whole_dataset_answer():
    from sklearn.metrics import f1_score

    truth, predictions = TRUTH[:15], PREDICTIONS[:15]
    result = run_custom_scorer(CountsAndF1(), predictions, truth, batch_size=4)
    assert result.values == {
        "sample_count": 15.0,
        "positives": float(sum(t == "True" for t in truth)),
        "f1": f1_score(truth, predictions, pos_label="True"),
    }


class SummedF1:
    """Streamable: per-batch counts that its own aggregate() sums into one F1."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score(self, predictions, ground_truth, metadata=None):
        self.batches.append(len(predictions))
        pairs = list(zip(predictions, ground_truth, strict=True))
        return {
            "tp": sum(p == t == "True" for p, t in pairs),
            "fp": sum(p == "True" != t for p, t in pairs),
            "fn": sum(t == "True" != p for p, t in pairs),
        }

    def aggregate(self, batch_results):
        tp, fp, fn = (sum(b[k] for b in batch_results) for k in ("tp", "fp", "fn"))
        return {"f1": 2 * tp / (2 * tp + fp + fn), "sample_count": tp + fp + fn}


def test_aggregate_combines_batch_results():
    from sklearn.metrics import f1_score

    scorer = SummedF1()
    result = run_custom_scorer(scorer, PREDICTIONS, TRUTH, batch_size=8)
    assert scorer.batches == [8] * 6 + [2]
    assert result.values["f1"] == pytest.approx(f1_score(TRUTH, PREDICTIONS, pos_label="True"), rel=1e-12)


def test_per_sample_lists_stream_in_batches_and_stay_exact(monkeypatch):
    monkeypatch.setattr(custom, "WHOLE_DATASET_SAMPLES", 10)
    calls = []

    class PerSample:
        def score(self, predictions, ground_truth, metadata=None):
            calls.append(len(predictions))
            return {"exact": [float(p == t) for p, t in zip(predictions, ground_truth, strict=True)]}

    result = run_custom_scorer(PerSample(), PREDICTIONS, TRUTH, batch_size=7)
    assert calls == [7] * 7 + [1]
    assert result.values == {"exact": sum(MATCHES) / 50}
    assert [s["exact"] for s in result.per_sample] == MATCHES


def test_a_dataset_too_big_for_one_call_needs_a_streamable_scorer(monkeypatch):
    monkeypatch.setattr(custom, "WHOLE_DATASET_SAMPLES", 10)
    with pytest.raises(ScorerError) as info:
        run_custom_scorer(ExactMatch(), PREDICTIONS, TRUTH, batch_size=8)
    message = str(info.value)
    assert "returned one value for ['exact_match', 'sample_count'] in batch 0 (samples 0-7)" in message
    assert "the dataset has 50 samples, more than the 10 it can be given at once" in message
    assert "return one value per sample (a list)" in message and "aggregate(batch_results)" in message


def test_metadata_slices_follow_the_batches():
    seen = []

    class Recorder:
        def score(self, predictions, ground_truth, metadata=None):
            seen.append([m["index"] for m in metadata])
            return {"n": len(predictions)}

        def aggregate(self, batch_results):
            return {"n": sum(b["n"] for b in batch_results)}

    result = run_custom_scorer(Recorder(), PREDICTIONS[:7], TRUTH[:7], [{"index": i} for i in range(7)], batch_size=3)
    assert seen == [[0, 1, 2], [3, 4, 5], [6]]
    assert result.values == {"n": 7.0}


def test_scorer_exception_names_batch_and_samples(monkeypatch):
    monkeypatch.setattr(custom, "WHOLE_DATASET_SAMPLES", 10)
    with pytest.raises(ScorerError) as info:
        run_custom_scorer(FailsOnSecondBatch(), PREDICTIONS, TRUTH, [{"index": i} for i in range(50)], batch_size=10)
    assert (
        str(info.value) == "custom scorer FailsOnSecondBatch failed on batch 1 (samples 10-19): KeyError: 'label_map'"
    )
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, KeyError)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([0.5], "custom scorer returned list for samples 0-49; expected a dict"),
        ({"f1": "0.5"}, "custom scorer returned non-numeric value '0.5' (str) for key 'f1' in samples 0-49"),
        ({"ok": True}, "custom scorer returned non-numeric value True (bool) for key 'ok' in samples 0-49"),
        ({1: 0.5}, "custom scorer returned non-string key 1 for samples 0-49"),
        ({"x": [1.0, 0.0]}, "custom scorer returned 2 values for key 'x' in samples 0-49; a per-sample list needs"),
        ({"x": float("nan")}, "custom scorer returned nan for key 'x' in samples 0-49; scores must be finite"),
    ],
)
def test_bad_scorer_output(value, message):
    with pytest.raises(ScorerError) as info:
        run_custom_scorer(Returns(value), PREDICTIONS, TRUTH, batch_size=10)
    assert str(info.value).startswith(message)


def test_bad_arguments():
    with pytest.raises(ValueError, match="50 predictions but 49 references"):
        run_custom_scorer(ExactMatch(), PREDICTIONS, TRUTH[:-1])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        run_custom_scorer(ExactMatch(), PREDICTIONS, TRUTH, batch_size=0)
    with pytest.raises(ScorerError, match="has no score"):
        run_custom_scorer(object(), PREDICTIONS, TRUTH)


def test_scorer_round_trips_through_cloudpickle():
    scorer = load_scorer(dump_scorer(ExactMatch(case_sensitive=False)))
    assert isinstance(scorer, CustomScorer)
    assert scorer.case_sensitive is False
    lower = [p.lower() for p in PREDICTIONS]
    assert run_custom_scorer(scorer, lower, TRUTH).values["exact_match"] == pytest.approx(sum(MATCHES) / 50)


def test_scorer_loads_where_its_module_is_not_importable(tmp_path):
    # A pipeline step has evalstack installed but not the user's module (here: this test file).
    (tmp_path / "scorer.pkl").write_bytes(dump_scorer(ExactMatch()))
    code = (
        "import sys, pathlib; from evalstack.metrics import load_scorer, run_custom_scorer\n"
        "assert 'tests' not in sys.modules\n"
        "s = load_scorer(pathlib.Path('scorer.pkl').read_bytes())\n"
        "print(run_custom_scorer(s, ['a', 'b', 'c', 'd'], ['a', 'b', 'x', 'd'], batch_size=3).values)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "{'exact_match': 0.75, 'sample_count': 4.0}"


def test_load_rejects_objects_without_score():
    with pytest.raises(ValueError, match="scorer file holds a dict, which has no score"):
        load_scorer(cloudpickle.dumps({"a": 1}))


def test_other_metrics_do_not_import_torch():
    code = (
        "import sys; from evalstack.metrics import compute_preset; "
        "[compute_preset(m, ['a b'], ['a c'], {}) for m in ('rouge', 'bleu', 'accuracy')]; "
        "print('torch' in sys.modules, 'bert_score' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
