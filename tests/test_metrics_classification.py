"""accuracy/f1/precision/recall equal scikit-learn on real dataset labels."""

import re

import numpy as np
import pytest
import sklearn
from sklearn import metrics as skm

from evalstack.catalog.metrics import BuiltInMetric
from evalstack.metrics import compute_preset
from tests.support.metrics_data import boolq_labels, mmlu_answers, perturb

BOOLQ_TRUE = boolq_labels(50)  # the in-repo BoolQ fixture has 50 rows
BOOLQ_PRED = perturb(BOOLQ_TRUE, 7, ["True", "False"])
MMLU_TRUE = mmlu_answers()
MMLU_PRED = perturb(MMLU_TRUE, 3, ["A", "B", "C", "D"])
SKLEARN = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}


def test_accuracy_equals_sklearn_with_per_sample_correctness():
    result = compute_preset(BuiltInMetric.ACCURACY, BOOLQ_PRED, BOOLQ_TRUE, {})
    assert result.values == {"accuracy": skm.accuracy_score(BOOLQ_TRUE, BOOLQ_PRED)}
    assert result.values["accuracy"] == 1 - len(range(0, 50, 7)) / 50
    assert [s["accuracy"] for s in result.per_sample] == [
        float(p == t) for p, t in zip(BOOLQ_PRED, BOOLQ_TRUE, strict=True)
    ]
    assert result.signature == {"scikit-learn": sklearn.__version__}


@pytest.mark.parametrize("metric", ["f1", "precision", "recall"])
def test_multiclass_averages_equal_sklearn(metric):
    values = {}
    for average in ("micro", "macro", "weighted"):
        result = compute_preset(metric, MMLU_PRED, MMLU_TRUE, {"average": average})
        assert result.values == {metric: SKLEARN[metric](MMLU_TRUE, MMLU_PRED, average=average)}
        assert result.per_sample is None
        values[average] = result.values[metric]
    assert values["macro"] != values["micro"]  # the hyperparameter reaches sklearn


@pytest.mark.parametrize("metric", ["f1", "precision", "recall"])
def test_binary_with_pos_label_equals_sklearn(metric):
    got = {
        pos: compute_preset(metric, BOOLQ_PRED, BOOLQ_TRUE, {"average": "binary", "pos_label": pos}).values[metric]
        for pos in ("True", "False")
    }
    assert got == {pos: SKLEARN[metric](BOOLQ_TRUE, BOOLQ_PRED, pos_label=pos) for pos in ("True", "False")}
    assert got["True"] != got["False"]


def test_labels_are_stripped():
    padded = [f" {p}\n" for p in MMLU_PRED]
    assert compute_preset("accuracy", padded, MMLU_TRUE, {}).values == {
        "accuracy": skm.accuracy_score(MMLU_TRUE, MMLU_PRED)
    }


def test_threshold_binarises_both_sides():
    truth = ["1.0" if label == "True" else "0.0" for label in BOOLQ_TRUE]
    # A deterministic score in [0, 1) per sample: what a model's probability output looks like.
    scores = [f"{(i * 37 % 100) / 100:.2f}" for i in range(len(truth))]
    values = {}
    for threshold in (0.5, 0.75):
        y_true = (np.array(truth, dtype=float) >= threshold).astype(int)
        y_pred = (np.array(scores, dtype=float) >= threshold).astype(int)
        result = compute_preset("f1", scores, truth, {"average": "binary", "threshold": threshold})
        assert result.values == {"f1": skm.f1_score(y_true, y_pred)}
        accuracy = compute_preset("accuracy", scores, truth, {"threshold": threshold})
        assert accuracy.values == {"accuracy": skm.accuracy_score(y_true, y_pred)}
        values[threshold] = result.values["f1"]
    assert values[0.5] != values[0.75]


@pytest.mark.parametrize(
    ("metric", "preds", "refs", "params", "message"),
    [
        ("f1", MMLU_PRED, MMLU_TRUE, {"average": "binary", "pos_label": "A"}, "at most 2 distinct labels, found 4"),
        ("f1", BOOLQ_PRED, BOOLQ_TRUE, {"average": "binary"}, "needs pos_label"),
        ("recall", BOOLQ_PRED, BOOLQ_TRUE, {"average": "binary", "pos_label": "yes"}, "not one of the labels"),
        ("precision", BOOLQ_PRED, BOOLQ_TRUE, {"pos_label": "True"}, "only applies with average='binary'"),
        ("accuracy", ["0.2", "high"], ["1", "0"], {"threshold": 0.5}, "prediction 1: 'high' is not a number"),
        ("f1", MMLU_PRED, MMLU_TRUE, {"average": "samples"}, "'average' must be one of"),
        ("f1", MMLU_PRED, MMLU_TRUE, {"averge": "macro"}, "Unknown hyperparameter 'averge'"),
        ("accuracy", ["A", "B"], ["A"], {}, "2 predictions but 1 references"),
        ("accuracy", ["A"], [["A", "B"]], {}, "reference 0: classification needs exactly one label"),
        ("accuracy", [], [], {}, "no predictions"),
        ("accurracy", ["A"], ["A"], {}, "Unknown preset metric 'accurracy'"),
    ],
)
def test_bad_input_raises_clear_value_error(metric, preds, refs, params, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        compute_preset(metric, preds, refs, params)
