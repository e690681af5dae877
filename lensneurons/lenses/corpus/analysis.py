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
after `lensneurons.lenses.corpus.finetune.finetune`), per sentence group.

    cn = CorpusNeurons(k=100).fit(model, nltk_corpora())
    cn.top_sentences(layer=3, neuron=17)
    cn.describe(3, 17).metadata["sentiment"]
    cn.summary_map("mean_length"), cn.sse_curves(k_max=10), cn.cluster()
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from lensneurons.core.activations import reduce_rows
from lensneurons.core.analysis import Analysis, Collection
from lensneurons.data.corpora import Corpus
from lensneurons.core.sites import check_layers, check_site
from lensneurons.core.results import fingerprint
from lensneurons.core.stats import Stack, TopK
# re-exported: their old home
from lensneurons.lenses.corpus.figures import plot_neuron_clusters, plot_sse_curves, plot_summary_map  # noqa: F401
from lensneurons.lenses.corpus.patterns import Pattern, PatternIndex, _min_count, frequent_patterns
from lensneurons.lenses.corpus.shift import neuron_vector_distances, vector_distances  # noqa: F401
from lensneurons.core.models import CausalModel

SUMMARY_STATS = ("mean_length", "mean_activation", "min_activation")
POS_WORD_CLASSES = ("NOUN", "VERB", "ADJ")
# A unit whose mean top activation is this many times its layer's median is flagged as an outlier dimension:
# the residual stream has a few "massive activation" dimensions (hundreds to thousands of times the rest, in
# every text), whose top sentences say more about position and length than about content. Gemma-3-270M's
# residual scales are heavy-tailed: in the corpus tutorial 89 of layer 3's 640 units exceed 10x the median,
# 3 exceed 100x (961x, 197x, 108x); 100 separates those few (Sun et al. 2024 use ~1,000x for single values,
# a top-set mean over tokens dilutes them).
OUTLIER_RATIO = 100.0


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
    # field -> the dominating label's share of the top set against chance (see `CorpusNeurons.describe`)
    chance: dict[str, dict[str, Any]] = field(default_factory=dict)
    # |mean top activation| over the median of its layer's units: >= OUTLIER_RATIO flags an outlier dimension
    activation_ratio: float = float("nan")

    @property
    def outlier(self) -> bool:
        return self.activation_ratio >= OUTLIER_RATIO

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
            "chance": {k: {**c, "label": str(c["label"])} for k, c in self.chance.items()},
            "activation_ratio": self.activation_ratio, "outlier": self.outlier,
        }


def label_chance(label: Any, share: float, known: int, base: float) -> dict[str, Any]:
    """A top-set label share against chance: `base` is the label's share of the corpus, `p_value` the
    binomial probability that `known` sentences drawn at random carry it at least as often."""
    from scipy.stats import binom

    count = round(share * known)
    return {"label": label, "share": share, "known": known, "corpus_share": base,
            "p_value": float(binom.sf(count - 1, known, base))}


def _dominant(
    codes: Int[Tensor, "text"], top_ids: Int[Tensor, "k *neuron"], n_labels: int
) -> tuple[Float[Tensor, "*neuron"], Int[Tensor, "*neuron"]]:
    """Per neuron, the share of its known-label top sentences that carry the commonest label, and that label.

    `codes` holds a label index per sentence, -1 for unknown. Ties go to the lower label index.
    """
    labels = codes[top_ids.reshape(top_ids.shape[0], -1)]  # (k, n)
    known = labels >= 0
    if n_labels == 0:  # a field present in the metadata but empty for every sentence: nothing dominates
        none = torch.zeros(labels.shape[1], dtype=torch.float64), torch.zeros(labels.shape[1], dtype=torch.int64)
        return none[0].reshape(top_ids.shape[1:]), none[1].reshape(top_ids.shape[1:])
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


class CorpusNeurons(Analysis):
    """Top-K sentences per neuron in one streaming pass, and what they share.

    Parameters are stored as given and checked by `fit`; fitted attributes end in ``_``:
    `top_values_` / `top_ids_` (``k layer neuron``, best first; ties go to the lower sentence id),
    `sample_ids_` and `sample_activations_` (the sentences sampled for clustering), `layers_`.
    """

    params = ("k", "n_sample", "classifier_threshold", "random_state", "min_known")
    fitted = ("top_ids_",)
    # BOS reads the same for every sentence and carries huge residual-stream values (an attention
    # sink), so averaging it in ranks sentences by length: the sentence's own tokens only
    default_collection = Collection(site="resid", pooling="mean", batch_size=16, max_length=128, include_bos=False)

    def __init__(
        self,
        k: int = 100,
        site: str | None = None,
        layers: int | Sequence[int] | None = None,
        n_sample: int = 1000,
        batch_size: int | None = None,
        max_length: int | None = None,
        classifier_threshold: int | float = 0.8,
        random_state: int = 0,
        include_bos: bool | None = None,
        min_known: int | float = 0.5,
        collection: Collection | None = None,
    ):
        self.k = k
        # a label can only dominate a top set that mostly carries the field: with 3 review
        # sentences among 50 brown ones, "100% positive" would say nothing (count, or fraction of k)
        self.min_known = min_known
        self.n_sample = n_sample
        self.classifier_threshold = classifier_threshold
        self.random_state = random_state
        self._init_collection(collection, site=site, layers=layers, batch_size=batch_size, max_length=max_length,
                              include_bos=include_bos)

    # fitting -------------------------------------------------------------------------------
    def _check_params(self, corpus: Corpus) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        check_site(self.site)  # any unit space (lensneurons.core.units); the model's check comes with fit
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
        model: CausalModel,
        corpus: Corpus,
        shard: Optional[tuple[int, int]] = None,
        progress: bool = True,
    ) -> CorpusNeurons:
        """Stream mean-pooled activations of every sentence through the top-K and sampling reducers.

        With ``shard=(i, n)`` only shard i's sentences are read; `merge` the n fitted objects.
        """
        self._check_params(corpus)
        layers = self.layers if self.layers is None or isinstance(self.layers, int) else list(self.layers)
        layers = check_layers(model, layers)
        topk, sample = self._reducers(len(corpus))
        # under torchrun, collect returns the reducers merged across ranks (new objects)
        collection = dataclasses.replace(self.collection, layers=tuple(layers),
                                         max_length=min(self.max_length or model.cfg.n_ctx, model.cfg.n_ctx))
        topk, sample = collection.collect(model, corpus.texts, [topk, sample], shard=shard, progress=progress)
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
        topk, sample = reduce_rows(acts, self._reducers(len(corpus)), batch_size)
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
        """The parameters, a fingerprint of the corpus, and the reducers' state (top-K and sampled rows) and
        layers: what a fit over the corpus gathered."""
        self._check_fitted()
        return {"kind": type(self).__name__, "params": self.get_params(), "corpus": fingerprint(self.corpus_.texts),
                "layers": list(self.layers_), "topk": self.topk_.state_dict(), "sample": self.sample_.state_dict()}

    def load_state_dict(self, state: dict[str, Any], corpus: Corpus) -> CorpusNeurons:
        """Restore a fit saved by `state_dict`; refused unless made with these parameters on this corpus."""
        self._check_params(corpus)
        if state.get("params") != self.get_params():
            diff = sorted(k for k in set(self.get_params()) | set(state.get("params") or {})
                          if (state.get("params") or {}).get(k) != self.get_params().get(k))
            raise ValueError(f"the saved fit was made with other parameters ({', '.join(diff)} differ)")
        if state.get("corpus") != fingerprint(corpus.texts):
            raise ValueError("the saved fit was made on another corpus (other sentences, or another order)")
        return self._finish(TopK.from_state_dict(state["topk"]), _SampleRows.from_state_dict(state["sample"]), corpus,
                            list(state["layers"]))

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], corpus: Corpus) -> CorpusNeurons:
        """A fitted CorpusNeurons rebuilt from `state_dict()` and the corpus it was fitted on."""
        params = dict(state["params"])
        collection = Collection(**params.pop("collection"))
        return cls(**params, collection=collection).load_state_dict(state, corpus)

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

    def rows(self, n: int = 10) -> list[dict]:
        """Each neuron's n best sentences: layer, neuron, rank, sentence id, activation and text."""
        self._check_fitted()
        return [
            {"layer": layer, "neuron": j, "rank": r, "sentence": int(self.top_ids_[r, s, j]),
             "activation": round(float(self.top_values_[r, s, j]), 6),
             "text": self.corpus_.texts[int(self.top_ids_[r, s, j])]}
            for s, layer in enumerate(self.layers_) for j in range(self.width_)
            for r in range(min(n, self.top_ids_.shape[0]))
        ]

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
        classifier, chance = {}, {}
        for name, dist in meta.items():
            if dist:
                label, share = next(iter(dist.items()))
                base = metadata_distribution(self.corpus_.metadata[name]).get(label, 0.0)
                known = sum(self.corpus_.metadata[name][i] is not None for i in ids)
                if share >= self.classifier_threshold and share > base and known >= _min_count(self.min_known, len(ids)):
                    classifier[name] = label
                    chance[name] = label_chance(label, share, known, base)
        desc = NeuronDescription(
            layer=layer, neuron=neuron, sentence_ids=ids,
            activations=self.top_values_[:, slot, neuron].tolist(),
            mean_length=float(np.mean([self.lengths_[i] for i in ids])),
            metadata=meta, classifier_like=classifier, chance=chance,
            activation_ratio=float(self.activation_ratios()[slot, neuron]),
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

    def activation_ratios(self) -> Float[Tensor, "layer neuron"]:
        """Each unit's |mean top activation| over the median of its layer's units (>= `OUTLIER_RATIO`: an
        outlier dimension)."""
        strength = self.summary_map("mean_activation").abs()
        return strength / strength.median(dim=1, keepdim=True).values.clamp(min=1e-12)

    def notable_neurons(self, n: int = 10, fields: Optional[Sequence[str]] = None) -> list[tuple[int, int]]:
        """(layer, neuron) of `n` neurons worth a page: the strongest few classifier-like ones of each metadata
        field in `fields` (default: all), then those with the highest mean top activation."""
        self._check_fitted()
        fields = list(self.corpus_.metadata) if fields is None else [f for f in fields if f in self.corpus_.metadata]
        chosen: list[tuple[int, int]] = []
        for name in fields:
            # the strongest few of each field, so that one field cannot fill the whole list
            for layer, j, _, _ in self.classifier_neurons(name)[: max(1, n // 4)]:
                if (layer, j) not in chosen:
                    chosen.append((layer, j))
        strength = self.summary_map("mean_activation").flatten()
        for flat in strength.argsort(descending=True).tolist():
            if len(chosen) >= n:
                break
            pair = (self.layers_[flat // self.width_], flat % self.width_)
            if pair not in chosen:
                chosen.append(pair)
        return chosen[:n]

    def report(
        self,
        folder: str | Path,
        neurons: Optional[Sequence[tuple[int, int]]] = None,
        model: Optional[CausalModel] = None,
        n: int = 10,
        fields: Optional[Sequence[str]] = None,
        patterns: bool = True,
        min_support: int | float = 0.1,
    ) -> list[NeuronDescription]:
        """Write one HTML page per neuron (``neuron_L<layer>_<neuron>.html``), an ``index.html`` and
        ``descriptions.json`` into `folder`; `neurons` default to `notable_neurons(n, fields)`. With `model`
        the top sentences are coloured token by token. The descriptions come back."""
        from lensneurons.lenses.corpus.report import write_report

        self._check_fitted()
        neurons = self.notable_neurons(n, fields) if neurons is None else list(neurons)
        descriptions = [self.describe(layer, j, min_support=min_support, patterns=patterns) for layer, j in neurons]
        write_report(folder, descriptions, self.corpus_.texts, model=model, collection=self.collection)
        return descriptions

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
