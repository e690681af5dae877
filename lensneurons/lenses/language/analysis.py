"""Language-specific neurons (Kojima et al. 2024, after Suau et al. 2022).

A neuron's score for language L is the average precision with which its mean-pooled activation
separates texts in L from texts in other languages. The top-k and bottom-k neurons by AP are L's
neurons; clamping them to their median activation on L's texts steers generation towards L.

    ln = LanguageNeurons(k=1000).fit(model, kojima2024())
    ln.top_["ja"], ln.bottom_["ja"], ln.overlap()
    with patched(model, ln.clamp("ja")):
        texts = generate_from_bos(model, seeds=range(1, 101))
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lensneurons.core.analysis import Analysis, Collection
from lensneurons.lenses.language.bleu import ReferenceSet
from lensneurons.data.multilingual import LanguageTexts
from lensneurons.core.generation import generate_from_bos
from lensneurons.lenses.language.langid import identify
from lensneurons.core.neurons import NeuronSet, overlap_matrix
from lensneurons.core.patching import NeuronEdit, patched, set_to
from lensneurons.core.stats import average_precision, median, row_mean
from lensneurons.core.models import CausalModel

CONDITIONS = ("none", "top", "bottom", "both")


@dataclass
class SteeringConfig:
    seeds: Sequence[int] = field(default_factory=lambda: list(range(1, 101)))
    max_new_tokens: int = 32
    batch_size: int = 50
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    threshold: float = 0.5  # fastText probability needed to count a text as in the target language


class LanguageNeurons(Analysis):
    """Find language-specific neurons by average precision and steer generation with them.

    `k`: size of each top and bottom set; `collection`: how texts are read (default: MLP neurons, mean over a
    text's tokens with BOS, 16 texts per pass, 256 tokens); `site`, `pooling`, `batch_size` and `max_length`
    may also be given one by one. Parameters are stored as given; `fit` does the work. Fitted attributes
    end in `_`.
    """

    params = ("k",)
    fitted = ("languages_", "scores_", "medians_", "mean_differences_")
    default_collection = Collection(site="mlp", pooling="mean", batch_size=16, max_length=256)

    def __init__(
        self,
        k: int = 1000,
        site: str | None = None,
        pooling: str | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        collection: Collection | None = None,
    ):
        self.k = k
        self._init_collection(collection, site=site, pooling=pooling, batch_size=batch_size, max_length=max_length)

    # fitting -------------------------------------------------------------------------------
    def fit(self, model: CausalModel, data: LanguageTexts, progress: bool = True) -> LanguageNeurons:
        return self.fit_activations(self.collection.pooled(model, data.texts, progress=progress), data)

    def fit_activations(self, acts: Float[Tensor, "text layer neuron"], data: LanguageTexts) -> LanguageNeurons:
        """Fit from pooled activations already collected for `data.texts` (in that order)."""
        if acts.shape[0] != len(data.texts):
            raise ValueError(f"activations have {acts.shape[0]} rows but data has {len(data.texts)} texts")
        n_layers, width = acts.shape[1:]
        self._check_k(n_layers, width)
        scores, medians, differences = [], [], []
        for lang in data.languages:
            idx, labels = data.labelled(lang)
            # rows= ranks this language's texts without copying them out of `acts`
            ap = average_precision(acts.flatten(1), labels, rows=torch.as_tensor(idx))
            scores.append(ap.view(n_layers, width).float())
            positives, negatives = torch.as_tensor(data.positives[lang]), torch.as_tensor(data.negatives[lang])
            medians.append(median(acts, rows=positives))
            differences.append((row_mean(acts, positives) - row_mean(acts, negatives)).float())
        self._set_scores(torch.stack(scores), torch.stack(medians), data.languages, torch.stack(differences))
        self.activations_ = acts
        self.data_ = data
        return self

    @classmethod
    def from_scores(
        cls,
        scores: Float[Tensor, "lang layer neuron"],
        medians: Float[Tensor, "lang layer neuron"],
        languages: Sequence[str],
        k: int = 1000,
        site: str = "mlp",
        mean_differences: Float[Tensor, "lang layer neuron"] | None = None,
    ) -> LanguageNeurons:
        """Rebuild a fitted object from saved AP scores and medians (a pipeline's `ap_scores.pt`), for
        steering and neuron sets without recollecting activations (`activation_split` needs `fit`)."""
        if scores.shape != medians.shape or scores.shape[0] != len(languages):
            raise ValueError(
                f"scores {tuple(scores.shape)} and medians {tuple(medians.shape)} must have the same shape, "
                f"with one row per language ({len(languages)})"
            )
        for name, t in (("scores", scores), ("medians", medians), ("mean_differences", mean_differences)):
            if t is not None and torch.isnan(t).any():
                raise ValueError(f"{name} contain {int(torch.isnan(t).sum())} NaN values: a NaN has no rank "
                                 f"(nor is it a value to clamp to)")
        out = cls(k=k, site=site)
        out._set_scores(scores.float(), medians.float(), languages,
                        None if mean_differences is None else mean_differences.float())
        return out.drop_activations()

    def _load_fitted(self, fitted: dict) -> None:
        self._set_scores(fitted["scores_"], fitted["medians_"], fitted["languages_"], fitted.get("mean_differences_"))

    def _check_k(self, n_layers: int, width: int) -> None:
        if not 1 <= self.k <= n_layers * width // 2:
            raise ValueError(
                f"k={self.k} must be between 1 and half the number of neurons ({n_layers * width // 2}) "
                "so that the top-k and bottom-k sets do not overlap"
            )

    def _set_scores(self, scores: Tensor, medians: Tensor, languages: Sequence[str],
                    mean_differences: Tensor | None = None) -> None:
        n_layers, width = scores.shape[1:]
        self._check_k(n_layers, width)
        self.languages_ = list(languages)
        self.n_layers_, self.width_ = n_layers, width
        self.scores_: Float[Tensor, "lang layer neuron"] = scores
        self.medians_: Float[Tensor, "lang layer neuron"] = medians
        # mean activation on the language's texts minus on the others': orders units of equal AP
        self.mean_differences_: Float[Tensor, "lang layer neuron"] | None = mean_differences
        self.top_ = {lang: self.neurons(lang, "top") for lang in self.languages_}
        self.bottom_ = {lang: self.neurons(lang, "bottom") for lang in self.languages_}
        self.middle_ = {lang: self.neurons(lang, "middle") for lang in self.languages_}

    def _lang_index(self, lang: str) -> int:
        self._check_fitted()
        if lang not in self.languages_:
            raise ValueError(f"unknown language {lang!r}; fitted languages are {self.languages_}")
        return self.languages_.index(lang)

    # neuron sets --------------------------------------------------------------------------
    def neurons(self, lang: str, which: str = "both", k: int | None = None) -> NeuronSet:
        """`lang`'s top-k, bottom-k, both, or the k around the median AP ("middle"). Units of equal AP are
        ordered by the difference of their mean activation on `lang`'s texts and on the others' (larger
        first for the top set, smaller first for the bottom set), then by layer and index."""
        li = self._lang_index(lang)
        scores = self.scores_[li]
        k = self.k if k is None else k
        total = scores.numel()
        if not 1 <= k <= total:
            raise ValueError(f"k must be between 1 and the number of neurons ({total}), got {k}")
        tiebreak = None if self.mean_differences_ is None else self.mean_differences_[li]
        if which in ("top", "bottom"):
            return NeuronSet.top_k(self.site, scores, k, largest=which == "top", tiebreak=tiebreak)
        if which == "both":
            return self.neurons(lang, "top", k) | self.neurons(lang, "bottom", k)
        if which == "middle":
            order = torch.argsort(scores.flatten(), stable=True)
            start = (total - k) // 2
            return NeuronSet(self.site, self.n_layers_, self.width_, order[start : start + k])
        raise ValueError(f"unknown neuron group {which!r}; expected top, bottom, both or middle")

    def rows(self) -> list[dict]:
        """Each language's top-k and bottom-k neurons with their AP, median and difference of means."""
        out = []
        for li, lang in enumerate(self.languages_):
            for group in ("top", "bottom"):
                for layer, index in (self.top_ if group == "top" else self.bottom_)[lang]:
                    row = {"lang": lang, "group": group, "layer": layer, "neuron": index,
                           "ap": round(float(self.scores_[li, layer, index]), 6),
                           "median": float(self.medians_[li, layer, index])}
                    if self.mean_differences_ is not None:
                        row["mean_difference"] = float(self.mean_differences_[li, layer, index])
                    out.append(row)
        return out

    def clamp(self, lang: str, which: str = "both", k: int | None = None) -> NeuronEdit:
        """The intervention: set `lang`'s neurons to their median activation on `lang`'s texts."""
        return set_to(self.neurons(lang, which, k), self.medians_[self._lang_index(lang)])

    def overlap(self, which: str = "both") -> Int[Tensor, "lang lang"]:
        """|neurons(a) ∩ neurons(b)| for every pair of languages (diagonal: 2k for "both")."""
        self._check_fitted()
        return overlap_matrix({lang: self.neurons(lang, which) for lang in self.languages_})

    def layer_histograms(self, lang: str) -> dict[str, Int[Tensor, "layer"]]:
        return {w: self.neurons(lang, w).layer_histogram() for w in ("top", "middle", "bottom")}

    def activation_split(self, lang: str, which: str = "top") -> tuple[Float[Tensor, "n"], Float[Tensor, "m"]]:
        """Mean activation over `lang`'s neurons, for target-language texts and for the other texts."""
        s = self.neurons(lang, which)
        if self.activations_ is None:
            raise RuntimeError(
                "activation_split needs the pooled activations: fit keeps them, from_scores has none and "
                "drop_activations() releases them"
            )
        per_text = self.activations_[:, s.layers, s.indices].mean(1)
        idx, labels = self.data_.labelled(lang)
        return per_text[idx[labels]], per_text[idx[~labels]]

    def drop_activations(self) -> LanguageNeurons:
        """Release the pooled activations kept for `activation_split` (0.87 GB for the paper's texts on
        Gemma-3-270M); scores, medians and neuron sets stay, so steering still works."""
        self.activations_ = None
        return self

    # steering -----------------------------------------------------------------------------
    def generate(
        self,
        model: CausalModel,
        lang: str,
        which: str,
        config: SteeringConfig = SteeringConfig(),
        k: int | None = None,
        progress: bool = False,
        prompt: str | None = None,
    ) -> list[str]:
        """Sample from [BOS] (and `prompt`, whose continuation alone is returned) with `lang`'s neurons clamped
        (or without intervention for "none")."""
        edits = [] if which == "none" else [self.clamp(lang, which, k)]
        with patched(model, *edits):
            return generate_from_bos(
                model,
                config.seeds,
                config.max_new_tokens,
                config.batch_size,
                config.temperature,
                config.top_k,
                config.top_p,
                progress=progress,
                prompt=prompt,
            )


def score_generations(
    texts: Sequence[str], lang: str, threshold: float = 0.5, references: ReferenceSet | None = None, tokenizer=None
) -> dict:
    """Target-language rate (fastText score > threshold) and, given references, mean BLEU-4 of the hits."""
    ids = identify(texts)
    hits = [t for t, (code, p) in zip(texts, ids) if code == lang and p > threshold]
    row = {"rate": len(hits) / len(texts), "n": len(texts), "languages": [c for c, _ in ids]}
    if references is not None:
        scores = [references.sentence_bleu(tokenizer.tokenize(t)) for t in hits]
        row["bleu"] = sum(scores) / len(scores) if scores else float("nan")
    return row


def reference_set(data: LanguageTexts, lang: str, tokenizer) -> ReferenceSet:
    """All of `lang`'s positive texts, tokenised with the model's tokenizer (the paper's BLEU references)."""
    return ReferenceSet([tokenizer.tokenize(data.texts[i]) for i in sorted(set(data.positives[lang]))])
