"""What single neurons respond to, from a corpus with metadata (Oba et al.; paper O).

A neuron is one dimension of a layer's residual stream (``blocks.{l}.hook_resid_post``; MLP neurons
with ``site="mlp"``), and its activation for a sentence is the mean over the sentence's tokens. One
streaming pass keeps the top-K sentences of every neuron (`stats.TopK`: values and sentence ids,
mergeable across shards). Each neuron's top set is then abstracted: frequent n-grams and skip-grams
(PrefixSpan) and POS sequences ranked by frequency relative to the whole corpus, top nouns, verbs and
adjectives, the POS distribution, mean length and metadata distributions; a neuron whose top set is
dominated by one label is "classifier-like". Across neurons: a layer × neuron map of a summary
statistic, per layer the k-means SSE curve of the neurons' top-set embeddings (TF-IDF by default),
and k-means / t-SNE of the neurons' activation patterns over sampled sentences. Across models:
`neuron_vector_distances` compares each sentence's full neuron vector in two models (e.g. before and
after `lensneurons.finetune.finetune`), per sentence group.

    cn = CorpusNeurons(k=100).fit(model, nltk_corpora())
    cn.top_sentences(layer=3, neuron=17)
    cn.describe(3, 17).metadata["sentiment"]
    cn.summary_map("mean_length"), cn.sse_curves(k_max=10), cn.cluster()
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from lensneurons.activations import collect
from lensneurons.data.corpora import Corpus
from lensneurons.sites import check_layers, check_site
from lensneurons.stats import Stack, TopK

NEURON_SITES = ("resid", "mlp", "mlp_pre")
SUMMARY_STATS = ("mean_length", "mean_activation", "min_activation")
POS_WORD_CLASSES = ("NOUN", "VERB", "ADJ")


# --------------------------------------------------------------------------- pattern mining


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


# --------------------------------------------------------------------------- summaries


def metadata_distribution(values: Sequence[Any]) -> dict[Any, float]:
    """Share of each value among the non-None `values`, largest first (ties by first appearance)."""
    known = [v for v in values if v is not None]
    if not known:
        return {}
    counts = Counter(known)
    return {v: c / len(known) for v, c in sorted(counts.items(), key=lambda kv: -kv[1])}


@dataclass
class NeuronDescription:
    """What a neuron's top sentences share (see `CorpusNeurons.describe`)."""

    layer: int
    neuron: int
    sentence_ids: list[int]
    activations: list[float]
    mean_length: float
    metadata: dict[str, dict[Any, float]]
    classifier_like: dict[str, Any]  # field -> dominating label, for fields whose top set one label dominates
    ngrams: list[Pattern] = field(default_factory=list)
    skipgrams: list[Pattern] = field(default_factory=list)
    pos_patterns: list[Pattern] = field(default_factory=list)
    top_words: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # NOUN/VERB/ADJ -> (word, count)
    pos_distribution: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def patterns(ps: list[Pattern]) -> list[dict]:
            return [
                {"items": list(p.items), "support_top": p.support_top, "support_corpus": p.support_corpus,
                 "relative": p.relative}
                for p in ps
            ]

        return {
            "layer": self.layer, "neuron": self.neuron, "sentence_ids": self.sentence_ids,
            "activations": self.activations, "mean_length": self.mean_length,
            "metadata": {k: {str(v): s for v, s in d.items()} for k, d in self.metadata.items()},
            "classifier_like": {k: str(v) for k, v in self.classifier_like.items()},
            "ngrams": patterns(self.ngrams), "skipgrams": patterns(self.skipgrams),
            "pos_patterns": patterns(self.pos_patterns), "top_words": self.top_words,
            "pos_distribution": self.pos_distribution,
        }


def _dominant(
    codes: Int[Tensor, "text"], top_ids: Int[Tensor, "k *neuron"], n_labels: int
) -> tuple[Float[Tensor, "*neuron"], Int[Tensor, "*neuron"]]:
    """Per neuron, the share of its known-label top sentences that carry the commonest label, and that label.

    `codes` holds a label index per sentence, -1 for unknown. Ties go to the lower label index.
    """
    labels = codes[top_ids.reshape(top_ids.shape[0], -1)]  # (k, n)
    known = labels >= 0
    counts = torch.zeros(n_labels + 1, labels.shape[1], dtype=torch.float64)
    counts.scatter_add_(0, torch.where(known, labels, n_labels), torch.ones_like(labels, dtype=torch.float64))
    counts = counts[:n_labels]
    best, label = counts.max(0)
    share = best / known.sum(0).clamp(min=1)
    return share.reshape(top_ids.shape[1:]), label.reshape(top_ids.shape[1:])


# --------------------------------------------------------------------------- the analysis


class _SampleRows:
    """Reducer that keeps the rows of a fixed set of text ids (a `Stack` of just those rows)."""

    def __init__(self, ids: Int[Tensor, "sample"]):
        self.wanted = ids
        self.stack = Stack()

    def update(self, x: Float[Tensor, "batch *neuron"], ids: Int[Tensor, "batch"]) -> _SampleRows:
        keep = torch.isin(ids, self.wanted.to(ids.device))
        if keep.any():
            self.stack.update(x[keep], ids[keep])
        return self

    @property
    def has_rows(self) -> bool:
        return self.stack.state_dict()["values"] is not None

    def merge(self, other: _SampleRows) -> _SampleRows:
        if other.has_rows:
            self.stack.merge(other.stack)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "_SampleRows", "wanted": self.wanted.cpu(), "stack": self.stack.state_dict()}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> _SampleRows:
        out = cls(d["wanted"])
        out.stack = Stack.from_state_dict(d["stack"])
        return out


class CorpusNeurons:
    """Top-K sentences per neuron in one streaming pass, and what they share.

    Parameters are stored as given and checked by `fit`; fitted attributes end in ``_``:
    `top_values_` / `top_ids_` (``k layer neuron``, best first; ties go to the lower sentence id),
    `sample_ids_` and `sample_activations_` (the sentences sampled for clustering), `layers_`.
    """

    def __init__(
        self,
        k: int = 100,
        site: str = "resid",
        layers: int | Sequence[int] | None = None,
        n_sample: int = 1000,
        batch_size: int = 16,
        max_length: int = 128,
        classifier_threshold: int | float = 0.8,
        random_state: int = 0,
        include_bos: bool = False,
        min_known: int | float = 0.5,
    ):
        self.k = k
        # a label can only dominate a top set that mostly carries the field: with 3 review
        # sentences among 50 brown ones, "100% positive" would say nothing (count, or fraction of k)
        self.min_known = min_known
        # BOS reads the same for every sentence and carries huge residual-stream values (an
        # attention sink), so averaging it in ranks sentences by length; the sentence's own tokens only
        self.include_bos = include_bos
        self.site = site
        self.layers = layers
        self.n_sample = n_sample
        self.batch_size = batch_size
        self.max_length = max_length
        self.classifier_threshold = classifier_threshold
        self.random_state = random_state

    # fitting -------------------------------------------------------------------------------
    def _check_params(self, corpus: Corpus) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if self.site not in NEURON_SITES:
            raise ValueError(f"site must be one of {NEURON_SITES}, got {self.site!r}")
        if self.n_sample < 0:
            raise ValueError(f"n_sample must be >= 0, got {self.n_sample}")
        if self.min_known <= 0:
            raise ValueError(f"min_known must be > 0 (a count, or a fraction below 1), got {self.min_known}")
        if not 0 < self.classifier_threshold <= 1:
            raise ValueError(f"classifier_threshold must lie in (0, 1], got {self.classifier_threshold}")
        if not isinstance(corpus, Corpus) or len(corpus) == 0:
            raise ValueError("corpus must be a non-empty Corpus")

    def _reducers(self, n_texts: int) -> tuple[TopK, _SampleRows]:
        rng = np.random.default_rng(self.random_state)
        n = min(self.n_sample, n_texts)
        sample = np.sort(rng.choice(n_texts, size=n, replace=False)) if n else np.zeros(0, dtype=np.int64)
        return TopK(self.k), _SampleRows(torch.as_tensor(sample, dtype=torch.int64))

    def fit(
        self,
        model: HookedTransformer,
        corpus: Corpus,
        shard: Optional[tuple[int, int]] = None,
        progress: bool = True,
    ) -> CorpusNeurons:
        """Stream mean-pooled activations of every sentence through the top-K and sampling reducers.

        With ``shard=(i, n)`` only shard i's sentences are read; `merge` the n fitted objects.
        """
        self._check_params(corpus)
        check_site(self.site)
        layers = self.layers if self.layers is None or isinstance(self.layers, int) else list(self.layers)
        layers = check_layers(model, layers)
        topk, sample = self._reducers(len(corpus))
        # under torchrun, collect returns the reducers merged across ranks (new objects)
        topk, sample = collect(
            model, corpus.texts, [topk, sample], site=self.site, layers=layers, pooling="mean",
            include_bos=self.include_bos,
            batch_size=self.batch_size, max_length=min(self.max_length, model.cfg.n_ctx), shard=shard, progress=progress,
        )
        return self._finish(topk, sample, corpus, layers)

    def fit_activations(
        self, acts: Float[Tensor, "text layer neuron"], corpus: Corpus, batch_size: int = 256
    ) -> CorpusNeurons:
        """Fit from pooled activations already computed for `corpus.texts` (streamed in batches)."""
        self._check_params(corpus)
        if acts.shape[0] != len(corpus):
            raise ValueError(f"activations have {acts.shape[0]} rows but the corpus has {len(corpus)} texts")
        layers = list(range(acts.shape[1])) if self.layers is None else list(self.layers)
        if len(layers) != acts.shape[1]:
            raise ValueError(f"layers {layers} do not match the {acts.shape[1]} layers of the activations")
        topk, sample = self._reducers(len(corpus))
        for start in range(0, acts.shape[0], batch_size):
            ids = torch.arange(start, min(start + batch_size, acts.shape[0]))
            topk.update(acts[ids], ids)
            sample.update(acts[ids], ids)
        return self._finish(topk, sample, corpus, layers)

    def _finish(self, topk: TopK, sample: _SampleRows, corpus: Corpus, layers: list[int]) -> CorpusNeurons:
        self.topk_, self.sample_ = topk, sample
        self.corpus_ = corpus
        self.lengths_ = corpus.lengths()  # fixed at fit time: tagging later must not change lengths
        self.layers_ = layers
        self.top_values_: Float[Tensor, "k layer neuron"] = topk.values
        self.top_ids_: Int[Tensor, "k layer neuron"] = topk.ids
        self.n_layers_, self.width_ = self.top_values_.shape[1:]
        if sample.has_rows:
            self.sample_ids_: Int[Tensor, "sample"] = sample.stack.ids
            self.sample_activations_: Float[Tensor, "sample layer neuron"] = sample.stack.values
        else:
            self.sample_ids_ = torch.zeros(0, dtype=torch.int64)
            self.sample_activations_ = torch.zeros(0, self.n_layers_, self.width_)
        self._index: dict[str, PatternIndex] = {}
        return self

    def state_dict(self) -> dict[str, Any]:
        """The reducers' state (top-K and sampled rows) and layers: what a fit over the corpus gathered."""
        self._check_fitted()
        return {"layers": list(self.layers_), "topk": self.topk_.state_dict(), "sample": self.sample_.state_dict()}

    def load_state_dict(self, state: dict[str, Any], corpus: Corpus) -> CorpusNeurons:
        """Restore a fit saved by `state_dict` (for the same corpus and parameters)."""
        self._check_params(corpus)
        return self._finish(TopK.from_state_dict(state["topk"]), _SampleRows.from_state_dict(state["sample"]), corpus,
                            list(state["layers"]))

    def merge(self, other: CorpusNeurons) -> CorpusNeurons:
        """Fold another shard's fit (same parameters and corpus) into this one."""
        self._check_fitted()
        other._check_fitted()
        if (other.k, other.site, other.layers_, other.random_state) != (self.k, self.site, self.layers_, self.random_state):
            raise ValueError("cannot merge CorpusNeurons fitted with different k, site, layers or random_state")
        if len(other.corpus_) != len(self.corpus_):
            raise ValueError("cannot merge CorpusNeurons fitted on corpora of different sizes")
        self.topk_.merge(other.topk_)
        self.sample_.merge(other.sample_)
        return self._finish(self.topk_, self.sample_, self.corpus_, self.layers_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "top_ids_"):
            raise RuntimeError("this CorpusNeurons is not fitted yet; call fit(model, corpus) first")

    def _slot(self, layer: int) -> int:
        self._check_fitted()
        if layer not in self.layers_:
            raise ValueError(f"layer {layer} was not analysed; fitted layers are {self.layers_}")
        return self.layers_.index(layer)

    def _check_neuron(self, neuron: int) -> None:
        if not 0 <= neuron < self.width_:
            raise ValueError(f"neuron {neuron} is out of range for a layer of {self.width_} neurons")

    # single neurons -----------------------------------------------------------------------
    def top_sentences(self, layer: int, neuron: int, n: Optional[int] = None) -> list[tuple[int, float, str]]:
        """(sentence id, activation, text) of the neuron's top sentences, best first."""
        slot = self._slot(layer)
        self._check_neuron(neuron)
        ids = self.top_ids_[:n, slot, neuron].tolist()
        values = self.top_values_[:n, slot, neuron].tolist()
        return [(i, v, self.corpus_.texts[i]) for i, v in zip(ids, values)]

    def metadata_distributions(self, layer: int, neuron: int, fields: Optional[Sequence[str]] = None) -> dict[str, dict]:
        """Share of each metadata value among the neuron's top sentences, per field (None values skipped)."""
        slot = self._slot(layer)
        self._check_neuron(neuron)
        fields = list(self.corpus_.metadata) if fields is None else list(fields)
        ids = self.top_ids_[:, slot, neuron].tolist()
        return {f: metadata_distribution([self.corpus_.field(f)[i] for i in ids]) for f in fields}

    def _tagged(self) -> Corpus:
        if self.corpus_.words is None or self.corpus_.tags is None:
            self.corpus_ = self.corpus_.tagged()
        return self.corpus_

    def _pattern_index(self, kind: str) -> PatternIndex:
        if kind not in self._index:
            corpus = self._tagged()
            self._index[kind] = PatternIndex(corpus.words if kind == "words" else corpus.tags)
        return self._index[kind]

    def describe(
        self,
        layer: int,
        neuron: int,
        min_support: int | float = 0.1,
        max_len: int = 3,
        top_n: int = 20,
        patterns: bool = True,
    ) -> NeuronDescription:
        """Everything the paper reports about one neuron's top set.

        Patterns and words need POS tags: an untagged corpus is tagged once (NLTK data required);
        ``patterns=False`` skips them and needs only the metadata.
        """
        slot = self._slot(layer)
        self._check_neuron(neuron)
        ids = self.top_ids_[:, slot, neuron].tolist()
        meta = self.metadata_distributions(layer, neuron)
        classifier = {}
        for name, dist in meta.items():
            if dist:
                label, share = next(iter(dist.items()))
                base = metadata_distribution(self.corpus_.metadata[name]).get(label, 0.0)
                known = sum(self.corpus_.metadata[name][i] is not None for i in ids)
                if share >= self.classifier_threshold and share > base and known >= _min_count(self.min_known, len(ids)):
                    classifier[name] = label
        desc = NeuronDescription(
            layer=layer, neuron=neuron, sentence_ids=ids,
            activations=self.top_values_[:, slot, neuron].tolist(),
            mean_length=float(np.mean([self.lengths_[i] for i in ids])),
            metadata=meta, classifier_like=classifier,
        )
        if not patterns:
            return desc
        corpus = self._tagged()
        words = [corpus.words[i] for i in ids]
        tags = [corpus.tags[i] for i in ids]
        lower = [[w.lower() for w in s] for s in words]
        common = dict(min_support=min_support, max_len=max_len, top_n=top_n)
        desc.ngrams = frequent_patterns(lower, self._pattern_index_lower(), contiguous=True, **common)
        desc.skipgrams = frequent_patterns(lower, self._pattern_index_lower(), contiguous=False, **common)
        desc.pos_patterns = frequent_patterns(tags, self._pattern_index("tags"), contiguous=True, **common)
        by_class: dict[str, Counter] = {c: Counter() for c in POS_WORD_CLASSES}
        all_tags: Counter = Counter()
        for ws, ts in zip(lower, tags):
            all_tags.update(ts)
            for w, t in zip(ws, ts):
                if t in by_class:
                    by_class[t][w] += 1
        desc.top_words = {c: counter.most_common(top_n) for c, counter in by_class.items()}
        total = sum(all_tags.values())
        desc.pos_distribution = {t: c / total for t, c in all_tags.most_common()} if total else {}
        return desc

    def _pattern_index_lower(self) -> PatternIndex:
        if "lower" not in self._index:
            self._index["lower"] = PatternIndex([[w.lower() for w in s] for s in self._tagged().words])
        return self._index["lower"]

    # all neurons ----------------------------------------------------------------------------
    def summary_map(self, stat: str = "mean_length") -> Float[Tensor, "layer neuron"]:
        """A summary of every neuron's top set: ``mean_length`` (words), ``mean_activation`` or ``min_activation``."""
        self._check_fitted()
        if stat == "mean_length":
            lengths = torch.tensor(self.lengths_, dtype=torch.float64)
            return lengths[self.top_ids_].mean(0)
        if stat == "mean_activation":
            return self.top_values_.double().mean(0)
        if stat == "min_activation":
            return self.top_values_.double()[-1]
        raise ValueError(f"unknown summary statistic {stat!r}; expected one of {SUMMARY_STATS}")

    def label_dominance(self, name: str) -> tuple[Float[Tensor, "layer neuron"], list]:
        """For every neuron, the share of its top sentences (with a known `name`) that carry the
        commonest label, and that label per neuron (a nested list ``[layer][neuron]``)."""
        share, labels, _ = self._label_dominance(name)
        return share, labels

    def _label_dominance(self, name: str) -> tuple[Tensor, list, Tensor]:
        self._check_fitted()
        values = self.corpus_.field(name)
        labels = sorted({v for v in values if v is not None}, key=str)
        code = {v: i for i, v in enumerate(labels)}
        codes = torch.tensor([code[v] if v is not None else -1 for v in values], dtype=torch.int64)
        share, best = _dominant(codes, self.top_ids_, len(labels))
        known = (codes[self.top_ids_] >= 0).sum(0)  # layer neuron
        return share, [[labels[j] if labels else None for j in row] for row in best.tolist()], known

    def classifier_neurons(self, name: str) -> list[tuple[int, int, Any, float]]:
        """(layer, neuron, label, share) for neurons whose top set is at least `classifier_threshold`
        one label of field `name` (a label above its share of the corpus), strongest first.

        Only top sets in which at least `min_known` sentences (a count, or a fraction of k) carry
        the field count: a field that only some corpora have cannot be dominated by a handful.
        """
        share, labels, known = self._label_dominance(name)
        base = metadata_distribution(self.corpus_.field(name))
        enough = known >= _min_count(self.min_known, self.top_ids_.shape[0])
        out = []
        for slot, j in ((share >= self.classifier_threshold) & enough).nonzero().tolist():
            label, s = labels[slot][j], float(share[slot, j])
            if s > base.get(label, 0.0):
                out.append((self.layers_[slot], j, label, s))
        return sorted(out, key=lambda r: (-r[3], r[0], r[1]))

    def top_set_embeddings(
        self,
        layer: int,
        sentence_vectors: Optional[Float[Tensor, "text dim"]] = None,
        max_features: int = 20000,
    ) -> Any:
        """One vector per neuron of `layer`: the mean of its top sentences' vectors (``neuron dim``).

        By default a sentence's vector is its L2-normalised TF-IDF bag of words over the corpus
        (a scipy sparse matrix comes back). That space is the same for every layer and every
        model, needs no second pass over the model, and describes what the sentences say; the
        residual stream's norm grows with depth, so pooled residual vectors would make deeper
        layers look more spread out by scale alone. Any ``sentence_vectors`` (one row per corpus
        sentence, e.g. `pooled_activations` or a sentence encoder) replace it (a dense tensor back).
        """
        slot = self._slot(layer)
        ids = self.top_ids_[:, slot, :]  # k neuron
        k, width = ids.shape
        if sentence_vectors is not None:
            if sentence_vectors.shape[0] != len(self.corpus_):
                raise ValueError(
                    f"sentence_vectors has {sentence_vectors.shape[0]} rows but the corpus has {len(self.corpus_)} texts"
                )
            return sentence_vectors.double()[ids].mean(0)
        import scipy.sparse as sp

        x = self._tfidf(max_features)
        rows = np.repeat(np.arange(width), k)
        cols = ids.T.reshape(-1).numpy()
        pick = sp.csr_matrix((np.full(rows.size, 1.0 / k), (rows, cols)), shape=(width, x.shape[0]))
        return (pick @ x).tocsr()

    def _tfidf(self, max_features: int) -> Any:
        if max_features < 1:
            raise ValueError(f"max_features must be >= 1, got {max_features}")
        key = f"tfidf:{max_features}"
        if key not in self._index:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vec = TfidfVectorizer(lowercase=True, max_features=max_features, token_pattern=r"(?u)\b\w+\b")
            self._index[key] = vec.fit_transform(self.corpus_.texts).astype(np.float64)  # rows L2-normalised
        return self._index[key]

    def sse_curves(
        self,
        k_max: int = 10,
        layers: Optional[Sequence[int]] = None,
        sentence_vectors: Optional[Float[Tensor, "text dim"]] = None,
        max_features: int = 20000,
        n_init: int = 3,
    ) -> Float[Tensor, "layer k"]:
        """Per layer, k-means of its neurons' top-set embeddings (`top_set_embeddings`): the sum of
        squared distances to the nearest centre (SSE) for k = 1 .. `k_max` (column k - 1).

        A curve that stays high as k grows means the layer's neurons respond to many different
        kinds of sentence (the paper finds deeper layers more diverse). k = 1 is the total scatter.
        """
        self._check_fitted()
        from sklearn.cluster import KMeans

        layers = list(self.layers_ if layers is None else layers)
        if not 1 <= k_max <= self.width_:
            raise ValueError(f"k_max must lie in [1, {self.width_}] (neurons per layer), got {k_max}")
        out = torch.zeros(len(layers), k_max, dtype=torch.float64)
        for row, layer in enumerate(layers):
            emb = self.top_set_embeddings(layer, sentence_vectors, max_features)
            x = emb.numpy() if isinstance(emb, Tensor) else emb
            centre = np.asarray(x.mean(0)).reshape(1, -1)
            if isinstance(emb, Tensor):
                out[row, 0] = float(((x - centre) ** 2).sum())
            else:  # sparse: sum ||x||^2 - n ||mean||^2
                out[row, 0] = float(x.multiply(x).sum() - x.shape[0] * (centre**2).sum())
            for k in range(2, k_max + 1):
                km = KMeans(n_clusters=k, n_init=n_init, random_state=self.random_state).fit(x)
                out[row, k - 1] = km.inertia_
        return out

    def cluster(
        self, n_clusters: int = 10, tsne: bool = True, perplexity: int | float = 30.0
    ) -> tuple[Int[Tensor, "layer neuron"], Optional[Float[Tensor, "layer neuron 2"]]]:
        """K-means of neurons by their (standardised) activations over the sampled sentences, and a
        t-SNE embedding in 2-D (None with ``tsne=False``)."""
        self._check_fitted()
        from sklearn.cluster import KMeans
        from sklearn.manifold import TSNE

        n_sample = self.sample_activations_.shape[0]
        n_neurons = self.n_layers_ * self.width_
        if n_sample < 2:
            raise ValueError(f"clustering needs at least 2 sampled sentences, got {n_sample} (raise n_sample)")
        if not 1 <= n_clusters <= n_neurons:
            raise ValueError(f"n_clusters must lie in [1, {n_neurons}] (the number of neurons), got {n_clusters}")
        x = self.sample_activations_.reshape(n_sample, -1).T.double().numpy()  # (neuron, sample)
        x = (x - x.mean(1, keepdims=True)) / np.maximum(x.std(1, keepdims=True), 1e-12)
        km = KMeans(n_clusters=n_clusters, n_init=10, random_state=self.random_state).fit(x)
        labels = torch.as_tensor(km.labels_, dtype=torch.int64).reshape(self.n_layers_, self.width_)
        if not tsne:
            return labels, None
        perplexity = min(perplexity, max(1.0, (n_neurons - 1) / 3))
        emb = TSNE(n_components=2, perplexity=perplexity, random_state=self.random_state, init="pca").fit_transform(x)
        return labels, torch.as_tensor(emb, dtype=torch.float32).reshape(self.n_layers_, self.width_, 2)


# --------------------------------------------------------------------------- figures


def plot_summary_map(values: Float[Tensor, "layer neuron"], title: str = "mean length of top sentences", layers: Optional[Sequence[int]] = None):
    """Heatmap of a per-neuron summary, one row per layer (as the paper's length figure)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.4 * values.shape[0] + 1.5), layout="constrained")
    im = ax.imshow(values.double().numpy(), aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_xlabel("neuron (dimension)")
    ax.set_ylabel("layer")
    ticks = list(range(values.shape[0]))
    ax.set_yticks(ticks, [str(l) for l in (layers if layers is not None else ticks)])
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return fig


def plot_neuron_clusters(embedding: Float[Tensor, "layer neuron 2"], labels: Int[Tensor, "layer neuron"]):
    """t-SNE map of neurons coloured by k-means cluster."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), layout="constrained")
    xy = embedding.reshape(-1, 2).numpy()
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels.reshape(-1).numpy(), cmap="tab10", s=8)
    ax.set_title("neurons by activation pattern (t-SNE, k-means colours)")
    fig.colorbar(sc, ax=ax, label="cluster")
    return fig


def plot_sse_curves(sse: Float[Tensor, "layer k"], layers: Optional[Sequence[int]] = None, relative: bool = True):
    """SSE against k, one line per layer; ``relative=True`` divides each curve by its k = 1 value."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    values = sse.double()
    if relative:
        values = values / values[:, :1].clamp(min=1e-300)
    ks = np.arange(1, values.shape[1] + 1)
    names = layers if layers is not None else range(values.shape[0])
    for row, layer in zip(values.numpy(), names):
        ax.plot(ks, row, marker="o", ms=3, label=f"layer {layer}")
    ax.set_xlabel("k (clusters of neurons)")
    ax.set_ylabel("SSE / SSE(k=1)" if relative else "SSE")
    ax.set_title("k-means of neurons' top-set embeddings")
    ax.legend()
    return fig


# --------------------------------------------------------------------------- across models


def vector_distances(
    a: Float[Tensor, "text *neuron"], b: Float[Tensor, "text_b *neuron_b"]
) -> tuple[Float[Tensor, "text"], Float[Tensor, "text"]]:
    """Manhattan (L1) and Euclidean (L2) distance between row i of `a` and row i of `b` (all trailing dims flattened)."""
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    diff = (a.double() - b.double()).reshape(a.shape[0], -1)
    return diff.abs().sum(1), diff.square().sum(1).sqrt()


def neuron_vector_distances(
    model_a: HookedTransformer,
    model_b: HookedTransformer,
    groups: dict[str, Sequence[str]],
    site: str = "resid",
    layers: int | Sequence[int] | None = None,
    batch_size: int = 16,
    max_length: int = 128,
    include_bos: bool = False,
    progress: bool = False,
    per_sentence: bool = False,
) -> dict[str, dict]:
    """How far each sentence's full neuron vector moves between two models, per sentence group.

    A sentence's vector is its mean-pooled activation at `site` in every one of `layers` (default
    all), concatenated (n_layers × width values). For each group (e.g. ``{"train": ...,
    "held_out": ..., "out_of_domain": ...}``) the result holds the mean Manhattan and Euclidean
    distance between the two models' vectors over its sentences, their standard deviations and n;
    `relative_euclidean`, the mean of ||a - b|| / ||a|| (a: model_a's vector), which does not grow
    with the vectors' scale (mean-pooled vectors of short sentences are larger); and
    `euclidean_by_layer`, the mean Euclidean distance within each layer's part of the vector. With
    `per_sentence`, `per_sentence` holds each sentence's three distances (for tests between groups).
    The models must share the architecture's shape and the tokenizer (e.g. a model and its fine-tune).
    """
    from lensneurons.activations import pooled_activations

    check_site(site)
    for attr in ("n_layers", "d_model", "d_vocab"):
        if getattr(model_a.cfg, attr) != getattr(model_b.cfg, attr):
            raise ValueError(f"the models differ in {attr}: {getattr(model_a.cfg, attr)} vs {getattr(model_b.cfg, attr)}")
    if model_a.tokenizer is None or model_b.tokenizer is None or model_a.tokenizer.get_vocab() != model_b.tokenizer.get_vocab():
        raise ValueError("the models must share one tokenizer: the same sentence has to be read as the same tokens")
    if not groups:
        raise ValueError("groups is empty: give at least one named list of sentences")
    layers = check_layers(model_a, layers if layers is None or isinstance(layers, int) else list(layers))
    out = {}
    for name, texts in groups.items():
        texts = list(texts)
        if not texts:
            raise ValueError(f"sentence group {name!r} is empty")
        kw = dict(site=site, layers=layers, pooling="mean", batch_size=batch_size, include_bos=include_bos,
                  max_length=min(max_length, model_a.cfg.n_ctx), progress=progress)
        a = pooled_activations(model_a, texts, **kw).cpu()  # (text, layer, neuron)
        b = pooled_activations(model_b, texts, **kw).cpu()
        l1, l2 = vector_distances(a, b)
        by_layer = (a.double() - b.double()).norm(dim=-1).mean(0)
        relative = l2 / a.double().reshape(len(texts), -1).norm(dim=1)
        several = len(texts) > 1
        out[name] = {
            "manhattan": float(l1.mean()), "euclidean": float(l2.mean()),
            "manhattan_std": float(l1.std()) if several else 0.0,
            "euclidean_std": float(l2.std()) if several else 0.0,
            "relative_euclidean": float(relative.mean()),
            "relative_euclidean_std": float(relative.std()) if several else 0.0,
            "euclidean_by_layer": [float(v) for v in by_layer],
            "n": len(texts),
        }
        if per_sentence:
            out[name]["per_sentence"] = {"manhattan": l1.tolist(), "euclidean": l2.tolist(),
                                         "relative_euclidean": relative.tolist()}
    return out
