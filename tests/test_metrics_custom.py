"""The custom scorer runner: batch aggregation, failures that say where, cloudpickle transport."""

import subprocess
import sys
from importlib.metadata import version

import cloudpickle
import pytest

from evalstack.metrics import CustomScorer, ScorerError, dump_scorer, load_scorer, run_custom_scorer
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
        return {"x": 1.0}


class Returns:
    def __init__(self, value) -> None:
        self.value = value

    def score(self, predictions, ground_truth, metadata=None):
        return self.value


@pytest.mark.parametrize("batch_size", [1, 7, 8, 50, 64])
def test_batches_combine_to_the_whole_set_value(batch_size):
    result = run_custom_scorer(ExactMatch(), PREDICTIONS, TRUTH, batch_size=batch_size)
    # Weighting batch means by batch size gives the whole-set mean even with a short last batch.
    assert result.values["exact_match"] == pytest.approx(sum(MATCHES) / len(MATCHES), rel=1e-12)
    assert result.per_sample is None
    assert result.signature == {
        "custom_scorer": "tests.test_metrics_custom.ExactMatch",
        "cloudpickle": version("cloudpickle"),
    }


def test_metadata_slices_follow_the_batches():
    seen = []

    class Recorder:
        def score(self, predictions, ground_truth, metadata=None):
            seen.append([m["index"] for m in metadata])
            return {}

    run_custom_scorer(Recorder(), PREDICTIONS[:7], TRUTH[:7], [{"index": i} for i in range(7)], batch_size=3)
    assert seen == [[0, 1, 2], [3, 4, 5], [6]]


def test_scorer_exception_names_batch_and_samples():
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
        ([0.5], "custom scorer returned list for batch 0 (samples 0-9); expected dict[str, float]"),
        ({"f1": "0.5"}, "custom scorer returned non-numeric value '0.5' (str) for key 'f1' in batch 0 (samples 0-9)"),
        ({"ok": True}, "custom scorer returned non-numeric value True (bool) for key 'ok' in batch 0 (samples 0-9)"),
        ({1: 0.5}, "custom scorer returned non-string key 1 for batch 0 (samples 0-9)"),
    ],
)
def test_bad_scorer_output(value, message):
    with pytest.raises(ScorerError) as info:
        run_custom_scorer(Returns(value), PREDICTIONS, TRUTH, batch_size=10)
    assert str(info.value) == message


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
    assert out.stdout.strip() == "{'exact_match': 0.75, 'sample_count': 2.5}"


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
