"""BLEU: a thin adapter over sacrebleu.

The corpus value is sacrebleu's corpus BLEU on its own 0-100 scale (the number its signature
describes and papers quote). Per-sample values are sacrebleu's sentence BLEU with the same
settings plus effective order, which is what ``sacrebleu.sentence_bleu`` does, so short
sentences without 4-gram matches do not all collapse to 0.

Both are functions of sacrebleu's sufficient statistics (hypothesis and reference lengths, n-gram
matches and totals), which sacrebleu extracts per sentence: ``bleu_scored`` extracts them once per
sentence, computes the sentence BLEU from them and keeps them, so the corpus statistics, integer sums
over sentences, need no second tokenization. :class:`BleuStats` adds them chunk by chunk (or shard by
shard, as a ``state``), so a streamed corpus gets exactly ``corpus_score`` of the whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from sacrebleu.metrics import BLEU
from sacrebleu.utils import sum_of_lists

from evalstack.catalog.hyperparameters import Hyperparameters
from evalstack.metrics.result import reference_lists

References = Sequence[str] | Sequence[Sequence[str]]


def _settings(hp: Hyperparameters) -> dict:
    return {"tokenize": hp.tokenize, "smooth_method": "exp" if hp.smooth else "none", "max_ngram_order": hp.max_order}


def _sentence_statistics(
    corpus: BLEU, predictions: Sequence[str], references: References
) -> tuple[list[list[int]], list[int]]:
    """sacrebleu's statistics of each sentence (its own extraction, one tokenization per sentence), and
    each sentence's number of references."""
    refs = reference_lists(predictions, references)
    # sacrebleu wants reference *streams* (one list per reference position); samples with
    # fewer references are padded with None, which sacrebleu skips.
    width = max(len(r) for r in refs)
    streams = [[r[j] if j < len(r) else None for r in refs] for j in range(width)]
    corpus._check_corpus_score_args(list(predictions), streams)
    return corpus._extract_corpus_statistics(list(predictions), streams), list(map(len, refs))


# A sentence's BLEU, its statistics and its number of references.
Scored = tuple[float, list[int], int]


def bleu_scored(predictions: Sequence[str], references: References, hp: Hyperparameters) -> list[Scored]:
    """Each sentence's BLEU (``BLEU(..., effective_order=True).sentence_score``), from its statistics, which
    come with it for the corpus (``BleuStats.add_scored``)."""
    sentence = BLEU(**_settings(hp), effective_order=True)
    stats, counts = _sentence_statistics(sentence, predictions, references)
    return [(sentence._compute_score_from_stats(s).score, s, n) for s, n in zip(stats, counts, strict=True)]


def bleu_samples(predictions: Sequence[str], references: References, hp: Hyperparameters) -> list[dict[str, float]]:
    return [{"bleu": score} for score, _, _ in bleu_scored(predictions, references, hp)]


class BleuStats:
    """Corpus BLEU over chunks: sacrebleu's per-sentence statistics, summed.

    Its ``state`` names each sum (``hyp_len``, ``ref_len``, ``correct_1``.., ``total_1``..: sacrebleu's
    order) and counts the sentences by their number of references (``refs_2``: sentences with two, which
    sacrebleu's signature reports), so states of chunks or shards add key by key, in any order."""

    def __init__(self, hp: Hyperparameters) -> None:
        self.hp = hp
        self.corpus = BLEU(**_settings(hp))
        orders = range(1, hp.max_order + 1)
        self.names = ["hyp_len", "ref_len", *(f"correct_{n}" for n in orders), *(f"total_{n}" for n in orders)]
        self.totals: list[int] | None = None
        self.references: Counter[int] = Counter()  # number of references -> sentences

    def add(self, predictions: Sequence[str], references: References) -> None:
        stats, counts = _sentence_statistics(self.corpus, predictions, references)
        self._add(sum_of_lists(stats), Counter(counts))

    def add_scored(self, scored: Sequence[Scored]) -> None:
        """Sentences as ``bleu_scored`` gives them."""
        if scored:
            self._add(sum_of_lists([stats for _, stats, _ in scored]), Counter(n for _, _, n in scored))

    def _add(self, sums: list[int], references: Counter[int]) -> None:
        self.totals = sums if self.totals is None else [a + b for a, b in zip(self.totals, sums, strict=True)]
        self.references.update(references)

    def state(self) -> dict[str, int] | None:
        if self.totals is None:
            return None
        counts = {f"refs_{n}": sentences for n, sentences in sorted(self.references.items())}
        return {**dict(zip(self.names, self.totals, strict=True)), **counts}

    def add_state(self, state: Mapping[str, int]) -> None:
        counts = {key: value for key, value in state.items() if key not in self.names}
        references: Counter[int] = Counter()
        for key, sentences in counts.items():
            number = key.removeprefix("refs_")
            if not (key.startswith("refs_") and number.isdigit() and number == str(int(number)) and int(number)):
                raise ValueError(f"unexpected key {key!r}: BLEU's sums are {self.names} and refs_N counts")
            references[int(number)] = sentences
        missing = [name for name in self.names if name not in state]
        if missing or not references:
            raise ValueError(f"missing {missing or 'refs_N counts'}; BLEU's sums are {self.names} and refs_N counts")
        self._add([state[name] for name in self.names], references)

    def values(self) -> dict[str, float]:
        if self.totals is None:
            raise ValueError("no predictions to score")
        return {"bleu": self.corpus._compute_score_from_stats(self.totals).score}

    def signature(self) -> dict[str, str]:
        # What sacrebleu's corpus_score sets from the whole corpus: one number of references, or -1 (var).
        self.corpus.num_refs = next(iter(self.references)) if len(self.references) == 1 else -1
        return {
            "sacrebleu": str(self.corpus.get_signature()),
            # sacrebleu's signature leaves out the n-gram order, which changes the score.
            "max_ngram_order": str(self.hp.max_order),
        }
