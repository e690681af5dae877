"""Knowledge (concept) neurons (Dai et al. 2022; Ariyama et al., paper K).

A concept comes with several differently-worded prompts whose answer is the concept. Integrated
gradients (`lensneurons.lenses.knowledge.attribution`) scores every MLP neuron at the answer position of each prompt;
per prompt the neurons above t · (the prompt's largest attribution) survive, and the concept's
knowledge neurons are those that survive in at least p% of its prompts. Suppressing them (set to 0)
or amplifying them (× 2) should change P(correct answer) on the concept's own prompts much more than
on unrelated prompts.

    kn = KnowledgeNeurons(steps=20, t=0.2, p=50).fit(model, {"Helsinki": [("The capital of Finland is",
                                                                          " Helsinki"), ...], ...})
    kn.neurons_["Helsinki"], kn.prompt_neurons_["Helsinki"]
    effects = kn.evaluate(model, unrelated="London", n_random=5)
"""
from __future__ import annotations

import os
import random
import warnings
from collections.abc import Mapping, MutableMapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedEncoder

from lensneurons.lenses.knowledge.attribution import (
    answer_logprob,
    batch_answer_logits,
    encode,
    final_resid,
    integrated_gradients,
    mean_activations,
    right_padded,
)
from lensneurons.core.analysis import Analysis, Collection
from lensneurons.core.models import HookedModel, weights_digest
from lensneurons.core.neurons import NeuronSet
from lensneurons.core.patching import NeuronEdit, patched, scale, zero
from lensneurons.core.results import TensorCache, fingerprint
from lensneurons.core.sites import site_width

EDITS = ("suppress", "amplify")
EDIT_POSITIONS = ("answer", "all")
Prompts = Mapping[str, Sequence[tuple[str, str]]]  # concept -> [(prompt, answer), ...]


def _check_t_p(t: float | int, p: float | int) -> None:
    if not 0.0 <= t < 1.0:
        raise ValueError(f"t (attribution threshold as a fraction of the prompt's maximum) must be in [0, 1), got {t}")
    if not 0.0 < p <= 100.0:
        raise ValueError(f"p (percentage of a concept's prompts that must share a neuron) must be in (0, 100], got {p}")


def refine(
    attributions: Float[Tensor, "batch layer neuron"], t: float | int = 0.2, p: float | int = 50.0, site: str = "mlp"
) -> tuple[list[NeuronSet], NeuronSet]:
    """Both refinement stages for one concept's prompts (rows of `attributions`).

    Stage 1, per prompt: neurons whose attribution is > t × that prompt's largest attribution (over all
    layers); a prompt whose attributions are all ≤ 0 keeps none. Stage 2: neurons kept by at least p% of
    the prompts.
    """
    _check_t_p(t, p)
    if attributions.shape[0] == 0:
        raise ValueError("refine needs at least one prompt's attributions")
    n, n_layers, width = attributions.shape
    flat = attributions.reshape(n, -1)
    kept = flat > t * flat.max(1, keepdim=True).values
    per_prompt = [NeuronSet(site, n_layers, width, torch.nonzero(row).flatten()) for row in kept]
    shared = kept.sum(0) * 100 >= p * n  # integer-safe form of count / n >= p / 100
    return per_prompt, NeuronSet(site, n_layers, width, torch.nonzero(shared).flatten())


class KnowledgeNeurons(Analysis):
    """Find knowledge neurons by integrated gradients and refinement; evaluate them by editing.

    Parameters (paper values by default): steps (Riemann steps), t (per-prompt threshold), p (sharing
    percentage, in (0, 100]), baseline ("zero" or "mean": mean activation over `reference_texts` given to
    `fit`), scoring (multi-token answers, see `lensneurons.lenses.knowledge.attribution`), mode ("layer" or "neuron"),
    alpha_power (> 1 concentrates steps near the baseline), layers (None: all), rows_per_batch (IG steps run
    together, across layers), tolerance (completeness error that warns), random_state (the random targets of
    `evaluate`). The units are the MLP neurons at the answer position (`collection.site`).
    Fitted attributes end in `_`.
    """

    params = ("steps", "t", "p", "baseline", "scoring", "mode", "alpha_power", "rows_per_batch", "tolerance",
              "random_state")
    fitted = ("attributions_", "prompts_", "probs_", "completeness_errors_")
    default_collection = Collection(site="mlp", pooling="last", batch_size=16, max_length=None)

    def __init__(
        self,
        steps: int = 20,
        t: float | int = 0.2,
        p: float | int = 50.0,
        baseline: str = "zero",
        scoring: str = "joint",
        mode: str = "layer",
        alpha_power: float | int = 1.0,
        layers: Sequence[int] | None = None,
        rows_per_batch: int = 512,
        tolerance: float | int = 0.1,
        random_state: int = 0,
        collection: Collection | None = None,
        batch_size: int | None = None,
    ):
        if batch_size is not None:
            warnings.warn("KnowledgeNeurons(batch_size=) is now rows_per_batch= (IG rows, not texts)",
                          DeprecationWarning, stacklevel=2)
            rows_per_batch = batch_size
        self.steps = steps
        self.t = t
        self.p = p
        self.baseline = baseline
        self.scoring = scoring
        self.mode = mode
        self.alpha_power = alpha_power
        self.rows_per_batch = rows_per_batch
        self.tolerance = tolerance
        self.random_state = random_state
        self._init_collection(collection, layers=layers)

    # fitting -------------------------------------------------------------------------------------
    def fit(
        self,
        model: HookedModel,
        prompts: Prompts,
        reference_texts: Sequence[str] | None = None,
        progress: bool = True,
        cache: TensorCache | MutableMapping | str | os.PathLike | None = None,
    ) -> KnowledgeNeurons:
        """Attribute every prompt of every concept, then refine (see `fit_attributions`).

        With ``cache`` (a mapping from fingerprint to saved attribution, e.g. a study's
        `ResultsFolder.cache(...)`, or a dict), each prompt's attribution is stored as soon as it is computed and
        reused by later fits with the same model weights, prompt, answer and settings, so an interrupted run
        resumes. A folder path is still accepted (deprecated) and wrapped in a `TensorCache`.
        """
        _check_t_p(self.t, self.p)
        self._check_prompts(prompts)
        if self.baseline == "mean":
            if not reference_texts:
                raise ValueError("baseline='mean' needs reference_texts (texts to average each neuron over)")
            table = mean_activations(model, reference_texts, pooling=self.pooling, batch_size=self.batch_size)
        elif self.baseline == "zero":
            table = "zero"
        else:
            raise ValueError(f"unknown baseline {self.baseline!r}; expected 'zero' or 'mean'")
        self.baseline_table_ = table if isinstance(table, Tensor) else None
        attributions, errors, probs = {}, {}, {}
        total = sum(len(v) for v in prompts.values())
        if isinstance(cache, (str, os.PathLike)):
            warnings.warn("fit(cache=<folder>) is deprecated; pass ResultsFolder(...).cache(name) or a dict",
                          DeprecationWarning, stacklevel=2)
            cache = TensorCache(cache)
        settings = self._cache_settings(model, table) if cache is not None else None
        bar = tqdm(total=total, desc="integrated gradients", unit="prompt", disable=not progress)
        for concept, pairs in prompts.items():
            rows, errs, ps = [], [], []
            for prompt, answer in pairs:
                key = None if cache is None else fingerprint(settings, prompt, answer)
                saved = None if cache is None else cache.get(key)
                if saved is None:
                    r = integrated_gradients(
                        model, prompt, answer, layers=self.layers, steps=self.steps, baseline=table,
                        scoring=self.scoring, mode=self.mode, alpha_power=self.alpha_power,
                        batch_size=self.rows_per_batch, tolerance=self.tolerance,
                    )
                    saved = {"scores": r.scores, "completeness_error": r.completeness_error, "prob": float(r.prob)}
                    if cache is not None:
                        cache[key] = saved
                rows.append(saved["scores"])
                errs.append(saved["completeness_error"])
                ps.append(saved["prob"])
                bar.update()
            attributions[concept] = torch.stack(rows)
            errors[concept] = torch.stack(errs)
            probs[concept] = torch.tensor(ps)
        bar.close()
        self.completeness_errors_ = errors
        self.probs_ = probs
        self.fit_attributions(attributions, prompts)
        return self

    def _cache_settings(self, model: HookedModel, table) -> str:
        """Everything besides the prompt that determines an attribution, as one fingerprint."""
        return fingerprint({
            "model": model.cfg.model_name, "weights": weights_digest(model), "steps": self.steps,
            "scoring": self.scoring, "mode": self.mode, "alpha_power": self.alpha_power,
            "layers": None if self.layers is None else list(self.layers),
        }, table if isinstance(table, str) else table.detach().float())

    def fit_attributions(
        self, attributions: Mapping[str, Float[Tensor, "batch layer neuron"]], prompts: Prompts | None = None
    ) -> KnowledgeNeurons:
        """Refine precomputed attribution tables (one row per prompt, per concept)."""
        _check_t_p(self.t, self.p)
        if not attributions:
            raise ValueError("no concepts given")
        self.attributions_ = dict(attributions)
        self.prompt_neurons_: dict[str, list[NeuronSet]] = {}
        self.neurons_: dict[str, NeuronSet] = {}
        for concept, table in attributions.items():
            self.prompt_neurons_[concept], self.neurons_[concept] = refine(table, self.t, self.p)
        if prompts is not None:
            self.prompts_ = {c: list(v) for c, v in prompts.items()}
        return self

    def rows(self) -> list[dict]:
        """Each concept's refined knowledge neurons with their mean attribution over the concept's prompts."""
        out = []
        for concept, neurons in self.neurons_.items():
            mean = self.attributions_[concept].mean(0)
            out += [{"concept": concept, "layer": layer, "neuron": index, "attribution": float(mean[layer, index])}
                    for layer, index in neurons]
        return out

    # the shared name of "fit from what was collected elsewhere": here, attribution tables
    fit_activations = fit_attributions

    @staticmethod
    def _check_prompts(prompts: Prompts) -> None:
        if not prompts:
            raise ValueError("prompts is empty: expected {concept: [(prompt, answer), ...]}")
        for concept, pairs in prompts.items():
            if not pairs:
                raise ValueError(f"concept {concept!r} has no prompts")
            for pair in pairs:
                if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                    raise ValueError(f"concept {concept!r}: expected (prompt, answer) pairs, got {pair!r}")

    def _load_fitted(self, fitted: dict) -> None:
        super()._load_fitted(fitted)
        self.fit_attributions(self.attributions_, self.prompts_)

    # editing -------------------------------------------------------------------------------------
    def edit(self, concept: str, kind: str) -> NeuronEdit:
        """The edit of a concept's knowledge neurons: "suppress" (set to 0) or "amplify" (× 2)."""
        self._check_fitted()
        if concept not in self.neurons_:
            raise ValueError(f"unknown concept {concept!r}")
        if kind == "suppress":
            return zero(self.neurons_[concept])
        if kind == "amplify":
            return scale(self.neurons_[concept], 2.0)
        raise ValueError(f"unknown edit {kind!r}; expected one of {EDITS}")

    def evaluate(
        self,
        model: HookedModel,
        concepts: Sequence[str] | None = None,
        unrelated: str | Sequence[tuple[str, str]] | None = None,
        n_random: int = 0,
        random_state: int | None = None,
        edit_positions: str = "answer",
        progress: bool = True,
    ) -> list[dict]:
        """Relative change of P(correct answer), (P_edited - P) / P, under each edit of each concept's neurons.

        Targets: the concept's own prompts ("own"); `unrelated`, a fixed concept of the fitted prompts or
        a list of (prompt, answer) pairs, for every concept ("unrelated"); and `n_random` other concepts
        drawn per concept with `random_state` ("random"). Edits apply at the answer position (the last
        prompt token) or at every position (`edit_positions="all"`). One row per (concept, target, edit,
        prompt); `summarise` averages them.
        """
        self._check_fitted()
        if not hasattr(self, "prompts_"):
            raise RuntimeError("evaluate needs the prompts: fit with prompts (or fit_attributions(..., prompts))")
        if edit_positions not in EDIT_POSITIONS:
            raise ValueError(f"unknown edit_positions {edit_positions!r}; expected one of {EDIT_POSITIONS}")
        if n_random < 0:
            raise ValueError(f"n_random must be >= 0, got {n_random}")
        concepts = list(self.neurons_) if concepts is None else list(concepts)
        for c in concepts:
            if c not in self.neurons_:
                raise ValueError(f"unknown concept {c!r}")
        if isinstance(unrelated, str):
            if unrelated not in self.prompts_:
                raise ValueError(f"unrelated concept {unrelated!r} is not among the fitted concepts")
            fixed = (unrelated, self.prompts_[unrelated])
        elif unrelated is not None:
            fixed = ("<unrelated>", list(unrelated))
        else:
            fixed = None
        if site_width(model, "mlp") != next(iter(self.neurons_.values())).width:
            raise ValueError("the model's MLP width differs from the one the neurons were found on")
        rng = random.Random(self.random_state if random_state is None else random_state)
        rows: list[dict] = []
        clean: dict[tuple[str, str], float] = {}
        for concept in tqdm(concepts, desc="editing", disable=not progress):
            targets = [("own", concept, self.prompts_[concept])]
            if fixed is not None and fixed[0] != concept:
                targets.append(("unrelated", *fixed))
            others = [c for c in self.prompts_ if c != concept]
            for other in rng.sample(others, min(n_random, len(others))):
                targets.append(("random", other, self.prompts_[other]))
            flat = [(target, name, tuple(pair)) for target, name, pairs in targets for pair in pairs]
            new = list(dict.fromkeys(pair for _, _, pair in flat if pair not in clean))
            clean.update(zip(new, answer_probs(model, new, scoring=self.scoring)) if new else ())
            for kind in EDITS:
                edited = answer_probs(model, [pair for _, _, pair in flat], self.edit(concept, kind), self.scoring,
                                      edit_positions)
                for (target, name, (prompt, answer)), after in zip(flat, edited):
                    before = clean[(prompt, answer)]
                    rows.append({
                        "concept": concept, "target": target, "target_concept": name, "edit": kind,
                        "prompt": prompt, "answer": answer, "n_neurons": len(self.neurons_[concept]),
                        "p_before": before, "p_after": after,
                        "relative_change": (after - before) / before if before > 0 else float("nan"),
                    })
        self.effects_ = rows
        return rows


def answer_prob(
    model: HookedModel,
    prompt: str,
    answer: str | int,
    edit: NeuronEdit | None = None,
    scoring: str = "joint",
    edit_positions: str = "answer",
) -> float:
    """P(answer | prompt) (scored as in `lensneurons.lenses.knowledge.attribution`), optionally under an edit applied at the
    answer position (the last prompt token; the mask for a masked LM) or at every position."""
    return answer_probs(model, [(prompt, answer)], edit, scoring, edit_positions)[0]


def answer_probs(
    model: HookedModel,
    pairs: Sequence[tuple[str, str | int]],
    edit: NeuronEdit | None = None,
    scoring: str = "joint",
    edit_positions: str = "answer",
) -> list[float]:
    """`answer_prob` for many (prompt, answer) pairs. A causal LM runs them as one right-padded batch
    (padding after a prompt cannot reach it) with the edit at each row's own answer position; a masked LM
    runs one prompt at a time (padding would need an attention mask)."""
    if edit_positions not in EDIT_POSITIONS:
        raise ValueError(f"unknown edit_positions {edit_positions!r}; expected one of {EDIT_POSITIONS}")
    queries = [encode(model, prompt, answer, scoring) for prompt, answer in pairs]
    edits = [] if edit is None else [edit]
    if isinstance(model, HookedEncoder) or len(queries) == 1:
        out = []
        for q in queries:
            positions = torch.tensor([q.position]) if edit_positions == "answer" else None
            with torch.no_grad(), patched(model, *edits, positions=positions):
                out.append(float(answer_logprob(model, final_resid(model, q.tokens), q).exp()))
        return out
    tokens = right_padded(model, queries)
    rows = torch.tensor([q.position for q in queries]) if edit_positions == "answer" else None
    with torch.no_grad(), patched(model, *edits, row_positions=rows):
        final = final_resid(model, tokens)
        logits, owner, targets = batch_answer_logits(model, final, queries)
    logp = logits.float().log_softmax(-1)
    picked = logp[torch.arange(len(targets)), targets.to(logp.device)].cpu().double()
    total = torch.zeros(len(queries), dtype=torch.float64).index_add_(0, owner, picked)
    return total.exp().tolist()


POS_GROUPS = ("noun", "verb/adj/adv", "other")


def pos_group(text: str, concept: str) -> str:
    """The concept's part-of-speech group in `text` (Ariyama et al.'s rule): NLTK tags the tokenised text and
    the first token equal to the concept decides: NN* → "noun"; JJ*, RB*, VB* → "verb/adj/adv"; any other
    tag, or no token equal to the concept (e.g. a multi-word concept), → "other".

    Needs NLTK's punkt_tab and averaged_perceptron_tagger_eng; with `$LENSNEURONS_DATA_DIR` set, the
    local `nltk_data` dataset is put first on NLTK's search path.
    """
    import os

    import nltk

    from lensneurons.data.manifests import DATA_DIR_ENV, resolve

    if os.environ.get(DATA_DIR_ENV):
        local = str(resolve("nltk_data", verify=False))
        if local not in nltk.data.path:
            nltk.data.path.insert(0, local)
    for word, tag in nltk.pos_tag(nltk.word_tokenize(text)):
        if word == concept:
            if tag.startswith("NN"):
                return "noun"
            return "verb/adj/adv" if tag[:2] in ("JJ", "RB", "VB") else "other"
    return "other"


def summarise(rows: Sequence[Mapping]) -> list[dict]:
    """Mean relative change per (concept, target, edit), over prompts (and over sampled concepts)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["concept"], r["target"], r["edit"], r["n_neurons"]), []).append(r["relative_change"])
    return [
        {"concept": c, "target": t, "edit": e, "n_neurons": n, "n_prompts": len(v),
         "mean_relative_change": float(torch.tensor(v, dtype=torch.float64).nanmean())}
        for (c, t, e, n), v in groups.items()
    ]

