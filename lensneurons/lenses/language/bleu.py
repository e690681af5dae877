"""Sentence BLEU-4 of many hypotheses against one large shared reference set.

Equal to `nltk.translate.bleu_score.sentence_bleu(references, hypothesis,
smoothing_function=SmoothingFunction().method1)`, but the references' clipped n-gram counts are
computed once instead of once per hypothesis (NLTK rescans all 500 references for every text).
"""
from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Sequence

N = 4
EPSILON = 0.1  # NLTK's SmoothingFunction().method1


def _ngrams(tokens: Sequence, n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


class ReferenceSet:
    def __init__(self, references: Sequence[Sequence]):
        if not references:
            raise ValueError("BLEU needs at least one reference")
        self.max_counts: list[dict] = []
        for n in range(1, N + 1):
            best: dict = {}
            for ref in references:
                for gram, c in _ngrams(ref, n).items():
                    if c > best.get(gram, 0):
                        best[gram] = c
            self.max_counts.append(best)
        self.lengths = sorted({len(r) for r in references})

    def _closest_length(self, hyp_len: int) -> int:
        # NLTK: the reference length closest to the hypothesis length, the shorter one on ties
        i = bisect.bisect_left(self.lengths, hyp_len)
        candidates = self.lengths[max(0, i - 1) : i + 1]
        return min(candidates, key=lambda r: (abs(r - hyp_len), r))

    def sentence_bleu(self, hypothesis: Sequence) -> float:
        hyp_len = len(hypothesis)
        if hyp_len == 0:
            return 0.0
        log_p = 0.0
        for n in range(1, N + 1):
            counts = _ngrams(hypothesis, n)
            total = max(1, sum(counts.values()))
            clipped = sum(min(c, self.max_counts[n - 1].get(g, 0)) for g, c in counts.items())
            if n == 1 and clipped == 0:
                return 0.0  # NLTK returns 0 when no unigram matches
            p = clipped / total if clipped else EPSILON / total
            log_p += math.log(p) / N
        ref_len = self._closest_length(hyp_len)
        bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
        return bp * math.exp(log_p)
