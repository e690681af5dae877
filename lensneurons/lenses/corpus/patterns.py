"""Frequent patterns of a set of token sequences, relative to a corpus (PrefixSpan n-grams and skip-grams).

Paper O abstracts a neuron's top sentences by the word and POS patterns they share more often than the
corpus as a whole does; `frequent_patterns` mines them and `PatternIndex` counts a pattern's support.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Pattern:
    """A word or tag sequence that is frequent in a neuron's top sentences.

    `support_top` / `support_corpus` count the sentences that contain it (once per sentence);
    `relative` is its share of top sentences over its share of corpus sentences.
    """

    items: tuple[str, ...]
    support_top: int
    support_corpus: int
    relative: float


def _min_count(min_support: int | float, n: int) -> int:
    if min_support <= 0:
        raise ValueError(f"min_support must be > 0 (a count, or a fraction below 1), got {min_support}")
    count = int(np.ceil(min_support * n)) if min_support < 1 else int(min_support)
    return max(1, count)


def _contains_subsequence(seq: Sequence[str], items: tuple[str, ...]) -> bool:
    it = iter(seq)
    return all(item in it for item in items)  # `in` consumes the iterator: order is respected


def _contains_ngram(seq: Sequence[str], items: tuple[str, ...]) -> bool:
    n = len(items)
    return any(tuple(seq[i : i + n]) == items for i in range(len(seq) - n + 1))


class PatternIndex:
    """Counts how many corpus sentences contain a pattern, with an inverted index and a cache.

    Built once per corpus and shared by all neurons, so a pattern frequent in many top sets is
    counted once.
    """

    def __init__(self, corpus: Sequence[Sequence[str]]):
        self.sequences = [list(s) for s in corpus]
        if not self.sequences:
            raise ValueError("the corpus is empty: relative frequencies need at least one sentence")
        self._postings: dict[str, set[int]] = {}
        for i, seq in enumerate(self.sequences):
            for item in set(seq):
                self._postings.setdefault(item, set()).add(i)
        self._cache: dict[tuple[tuple[str, ...], bool], int] = {}

    def __len__(self) -> int:
        return len(self.sequences)

    def support(self, items: tuple[str, ...], contiguous: bool) -> int:
        key = (items, contiguous)
        if key not in self._cache:
            sets = sorted((self._postings.get(i, set()) for i in set(items)), key=len)
            candidates = set.intersection(*sets) if sets else set()
            test = _contains_ngram if contiguous else _contains_subsequence
            self._cache[key] = sum(1 for i in candidates if test(self.sequences[i], items))
        return self._cache[key]


def frequent_patterns(
    top: Sequence[Sequence[str]],
    corpus: Sequence[Sequence[str]] | PatternIndex,
    min_support: int | float = 0.1,
    min_len: int = 2,
    max_len: int = 3,
    contiguous: bool = False,
    top_n: Optional[int] = 20,
) -> list[Pattern]:
    """Sequences frequent in `top`, ranked by frequency relative to `corpus`.

    Skip-grams (items in order, any gaps: the patterns PrefixSpan mines) by default; contiguous
    n-grams with ``contiguous=True``. A pattern is kept when at least `min_support` top sentences
    contain it (a count, or a fraction of ``len(top)`` when below 1). Ranking: relative frequency
    (share in `top` / share in `corpus`) descending, then top support descending, then the items.
    """
    if min_len < 1 or max_len < min_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    if not top:
        raise ValueError("top is empty: no sentences to mine")
    index = corpus if isinstance(corpus, PatternIndex) else PatternIndex(corpus)
    minsup = _min_count(min_support, len(top))
    top = [list(s) for s in top]
    if contiguous:
        counts: Counter = Counter()
        for seq in top:
            counts.update({tuple(seq[i : i + n]) for n in range(min_len, max_len + 1) for i in range(len(seq) - n + 1)})
        found = [(c, items) for items, c in counts.items() if c >= minsup]
    else:
        from prefixspan import PrefixSpan

        ps = PrefixSpan(top)
        ps.minlen, ps.maxlen = min_len, max_len
        found = [(c, tuple(p)) for c, p in ps.frequent(minsup)]
    out = []
    for support_top, items in found:
        support_corpus = index.support(items, contiguous)
        # a top set drawn from another corpus can hold patterns the corpus lacks: count them once
        share_corpus = max(support_corpus, 1) / len(index)
        out.append(Pattern(items, support_top, support_corpus, (support_top / len(top)) / share_corpus))
    out.sort(key=lambda p: (-p.relative, -p.support_top, p.items))
    return out if top_n is None else out[:top_n]


def _is_subsequence(short: tuple[str, ...], long: tuple[str, ...]) -> bool:
    return len(short) < len(long) and _contains_subsequence(long, short)


def collapse_redundant(skipgrams: Sequence[Pattern], ngrams: Sequence[Pattern] = ()) -> tuple[list[Pattern], int]:
    """The skip-grams worth showing beside `ngrams`, and how many were dropped.

    A skip-gram is redundant when a longer listed skip-gram contains it in the same number of top
    sentences (every sentence with it has the longer one: only the longer, "closed", pattern says
    something), or when it is a listed n-gram with the same support (its gaps are never used)."""
    as_ngram = {p.items: p.support_top for p in ngrams}
    kept = [
        p for p in skipgrams
        if as_ngram.get(p.items) != p.support_top
        and not any(q.support_top == p.support_top and _is_subsequence(p.items, q.items) for q in skipgrams)
    ]
    return kept, len(skipgrams) - len(kept)
