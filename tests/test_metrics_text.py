"""BLEU, ROUGE and METEOR equal sacrebleu, rouge-score and nltk on real TruthfulQA answers.

Each prediction is TruthfulQA's best answer; references are the other correct answers.
"""

import gzip
import re
from importlib.metadata import version
from pathlib import Path

import nltk
import pytest
import sacrebleu
from nltk.translate.meteor_score import meteor_score
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from evalstack.metrics import compute_preset
from evalstack.metrics.meteor import tokenize
from evalstack.metrics.wordnet import LEXNAMES, load_wordnet
from tests.support.metrics_data import truthfulqa_rows

ROWS = truthfulqa_rows(60)
PREDICTIONS = [r["best"] for r in ROWS]
SINGLE = [r["others"][0] for r in ROWS]
MULTI = [r["others"][:2] for r in ROWS]  # two references each: sacrebleu needs equal-length streams
VARIABLE = [r["others"] for r in ROWS]  # every correct answer: 2 or more references per sample
STREAMS = [[m[0] for m in MULTI], [m[1] for m in MULTI]]


# ---- BLEU -------------------------------------------------------------------------------


def test_bleu_equals_sacrebleu_corpus_and_sentence_bleu():
    result = compute_preset("bleu", PREDICTIONS, SINGLE, {})
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [SINGLE])
    assert result.values == {"bleu": expected.score}
    assert 0 < expected.score < 100
    assert [s["bleu"] for s in result.per_sample] == [
        sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(PREDICTIONS, SINGLE, strict=True)
    ]
    assert (
        result.signature["sacrebleu"] == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    )


def test_bleu_multi_reference_equals_sacrebleu():
    result = compute_preset("bleu", PREDICTIONS, MULTI, {})
    assert result.values == {"bleu": sacrebleu.corpus_bleu(PREDICTIONS, STREAMS).score}
    assert result.values["bleu"] > compute_preset("bleu", PREDICTIONS, SINGLE, {}).values["bleu"]
    assert [s["bleu"] for s in result.per_sample] == [
        sacrebleu.sentence_bleu(p, list(m)).score for p, m in zip(PREDICTIONS, MULTI, strict=True)
    ]
    assert result.signature["sacrebleu"].startswith("nrefs:2|")


def test_bleu_variable_reference_counts_per_sample():
    result = compute_preset("bleu", PREDICTIONS, VARIABLE, {})
    # sacrebleu's documented form for uneven reference counts: streams padded with None.
    width = max(len(v) for v in VARIABLE)
    streams = [[v[j] if j < len(v) else None for v in VARIABLE] for j in range(width)]
    assert result.values == {"bleu": sacrebleu.corpus_bleu(PREDICTIONS, streams).score}
    assert result.per_sample[0]["bleu"] == sacrebleu.sentence_bleu(PREDICTIONS[0], VARIABLE[0]).score


@pytest.mark.parametrize(
    ("params", "library"),
    [
        ({"max_order": 2}, {"max_ngram_order": 2}),
        ({"smooth": False}, {"smooth_method": "none"}),
        ({"tokenize": "char"}, {"tokenize": "char"}),
        (
            {"tokenize": "intl", "max_order": 6, "smooth": False},
            {"tokenize": "intl", "max_ngram_order": 6, "smooth_method": "none"},
        ),
    ],
)
def test_bleu_hyperparameters_reach_sacrebleu(params, library):
    result = compute_preset("bleu", PREDICTIONS, MULTI, params)
    metric = BLEU(**library)
    assert result.values == {"bleu": metric.corpus_score(PREDICTIONS, STREAMS).score}
    # Sentence BLEU shows every setting; corpus BLEU hides smoothing when no n-gram count is zero.
    assert result.per_sample != compute_preset("bleu", PREDICTIONS, MULTI, {}).per_sample
    assert result.signature["sacrebleu"] == str(metric.get_signature())
    assert result.signature["max_ngram_order"] == str(params.get("max_order", 4))
    sentence = BLEU(**library, effective_order=True)
    assert [s["bleu"] for s in result.per_sample] == [
        sentence.sentence_score(p, list(m)).score for p, m in zip(PREDICTIONS, MULTI, strict=True)
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_order": 0}, "'max_order' must be >= 1"),
        ({"tokenize": "spacy"}, "'tokenize' must be one of"),
        ({"smooth": "yes"}, "'smooth' must be bool"),
    ],
)
def test_bleu_bad_params(params, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        compute_preset("bleu", PREDICTIONS, SINGLE, params)


# ---- ROUGE ------------------------------------------------------------------------------


def _rouge_means(types, stemmer, refs):
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=stemmer)
    scores = [scorer.score_multi(r if isinstance(r, list) else [r], p) for p, r in zip(PREDICTIONS, refs, strict=True)]
    return {t: sum(s[t].fmeasure for s in scores) / len(scores) for t in types}, scores


def test_rouge_defaults_equal_rouge_score_mean_fmeasure():
    result = compute_preset("rouge", PREDICTIONS, SINGLE, {})
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(types)
    direct = [scorer.score(r, p) for p, r in zip(PREDICTIONS, SINGLE, strict=True)]
    assert result.values == {t: sum(s[t].fmeasure for s in direct) / len(direct) for t in types}
    assert result.per_sample == [{t: s[t].fmeasure for t in types} for s in direct]
    assert result.signature == {"rouge-score": version("rouge-score")}


def test_rouge_multi_reference_keeps_best_reference():
    result = compute_preset("rouge", PREDICTIONS, VARIABLE, {"rouge_types": ["rouge1", "rougeL"]})
    expected, _ = _rouge_means(["rouge1", "rougeL"], False, VARIABLE)
    assert result.values == expected
    single = compute_preset("rouge", PREDICTIONS, SINGLE, {"rouge_types": ["rouge1", "rougeL"]})
    assert result.values["rouge1"] > single.values["rouge1"]


def test_rouge_types_and_stemmer():
    plain = compute_preset("rouge", PREDICTIONS, MULTI, {"rouge_types": ["rouge1", "rouge3"]})
    stemmed = compute_preset("rouge", PREDICTIONS, MULTI, {"rouge_types": ["rouge1", "rouge3"], "use_stemmer": True})
    assert set(plain.values) == {"rouge1", "rouge3"}
    assert plain.values == _rouge_means(["rouge1", "rouge3"], False, MULTI)[0]
    assert stemmed.values == _rouge_means(["rouge1", "rouge3"], True, MULTI)[0]
    assert stemmed.values["rouge1"] > plain.values["rouge1"]


def test_rouge_bad_type():
    with pytest.raises(ValueError, match=re.escape("hyperparameter 'rouge_types': unknown ['rougeX']")):
        compute_preset("rouge", PREDICTIONS, SINGLE, {"rouge_types": ["rouge1", "rougeX"]})


# ---- METEOR -----------------------------------------------------------------------------


def test_meteor_equals_nltk_with_wordnet():
    wordnet = load_wordnet()
    result = compute_preset("meteor", PREDICTIONS, SINGLE, {})
    direct = [
        meteor_score([tokenize(r)], tokenize(p), wordnet=wordnet) for p, r in zip(PREDICTIONS, SINGLE, strict=True)
    ]
    assert result.per_sample == [{"meteor": d} for d in direct]
    assert result.values == {"meteor": sum(direct) / len(direct)}
    assert result.signature == {
        "nltk": nltk.__version__,
        "wordnet": "WordNet 3.0 (/usr/share/wordnet)",
        "tokenizer": "nltk.tokenize.NLTKWordTokenizer",
    }


def test_meteor_multi_reference_and_parameters():
    wordnet = load_wordnet()
    params = {"alpha": 0.8, "beta": 2.0, "gamma": 0.3}
    result = compute_preset("meteor", PREDICTIONS, VARIABLE, params)
    direct = [
        meteor_score([tokenize(r) for r in refs], tokenize(p), wordnet=wordnet, **params)
        for p, refs in zip(PREDICTIONS, VARIABLE, strict=True)
    ]
    assert result.per_sample == [{"meteor": d} for d in direct]
    assert result.values["meteor"] != compute_preset("meteor", PREDICTIONS, VARIABLE, {}).values["meteor"]


def test_meteor_matches_wordnet_synonyms():
    # "auto" is a WordNet synonym of "car" and no stem of it; "boat" is neither.
    result = compute_preset("meteor", ["he drove a red car"] * 2, ["he drove a red auto", "he drove a red boat"], {})
    assert [s["meteor"] for s in result.per_sample] == [
        meteor_score([tokenize(r)], tokenize("he drove a red car"), wordnet=load_wordnet())
        for r in ("he drove a red auto", "he drove a red boat")
    ]
    assert result.per_sample[0]["meteor"] > result.per_sample[1]["meteor"]


def test_wordnet_loader_reads_debian_files():
    wordnet = load_wordnet()
    assert wordnet.get_version() == "3.0"
    dog = wordnet.synsets("dog")[0]
    assert (dog.name(), dog.lexname()) == ("dog.n.01", "noun.animal")
    assert wordnet.synset("rain.v.01").lexname() == "verb.weather"  # the last verb file, number 43
    manual = Path("/usr/share/man/man5/lexnames.5WN.gz")
    if manual.is_file():  # the table we serve equals WordNet's own lexnames(5WN) when the man page is there
        rows = re.findall(r"^(\d\d)\t(\S+)\s*\t", gzip.decompress(manual.read_bytes()).decode(), re.M)
        assert [name for _, name in rows] == [name for name, _ in LEXNAMES]


def test_wordnet_missing_directory_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y wordnet-base"):
        load_wordnet(tmp_path)
