"""METEOR: a thin adapter over ``nltk.translate.meteor_score`` with WordNet 3.0 synonyms.

nltk >= 3.9 needs pre-tokenised input. Text is tokenised with nltk's ``NLTKWordTokenizer``
(the Treebank-style word tokenizer inside ``nltk.word_tokenize``), which needs no data files;
``word_tokenize`` itself first splits sentences with Punkt, which cannot be downloaded here,
so the two differ only where a sentence ends inside one answer. With several references,
nltk's ``meteor_score`` keeps the best-scoring one. The corpus value is the mean of the
per-sample scores, as in Hugging Face ``evaluate``'s meteor.
"""

from __future__ import annotations

from collections.abc import Sequence

import nltk
from nltk.tokenize import NLTKWordTokenizer
from nltk.translate.meteor_score import meteor_score

from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.metrics.result import reference_lists
from evalstack.metrics.wordnet import load_wordnet

TOKENIZER = NLTKWordTokenizer()


def tokenize(text: str) -> list[str]:
    return TOKENIZER.tokenize(text)


def meteor_samples(
    predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], hp: Hyperparameters
) -> list[dict[str, float]]:
    refs = reference_lists(predictions, references)
    wordnet = load_wordnet()
    return [
        {
            "meteor": float(
                meteor_score(
                    [tokenize(r) for r in rs],
                    tokenize(p),
                    alpha=hp.alpha,
                    beta=hp.beta,
                    gamma=hp.gamma,
                    wordnet=wordnet,
                )
            )
        }
        for p, rs in zip(predictions, refs, strict=True)
    ]


def meteor_signature(hp: Hyperparameters) -> dict[str, str]:
    wordnet = load_wordnet()
    return {
        "nltk": nltk.__version__,
        "wordnet": f"WordNet {wordnet.get_version()} ({wordnet.root.path})",
        "tokenizer": "nltk.tokenize.NLTKWordTokenizer",
    }
