"""How far neurons move under a short fine-tune (paper O, step 5), from a labelled corpus into one folder.

Sentences of one source corpus (`train_on`) are split into a training and an in-domain held-out group,
and another corpus (`out_of_domain`) gives the third group. The model is fine-tuned for a few steps of
next-token loss on the training group (`lensneurons.lenses.corpus.finetune`); then every sentence's full neuron vector
(its mean-pooled activation at `site` in every layer, concatenated) is compared before and after
(`neuron_vector_distances`). Writes the losses before and after, the distances per group (Manhattan,
Euclidean, relative, per layer) and per sentence, tests of training against each other group on relative
distance (Welch's t, and a length-adjusted regression: sentence length alone changes how far a mean moves),
as JSON/CSV, and a figure.

    lensneurons finetune-shift --model gemma-3-270m --train-on pros_cons --out-of-domain inaugural --out runs/shift
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from lensneurons.core.activations import tokenize
from lensneurons.lenses.corpus.shift import neuron_vector_distances
from lensneurons.data.corpora import Corpus, from_file, nltk_corpora
from lensneurons.lenses.corpus.finetune import OPTIMIZERS, PARAM_SETS, finetune, lm_loss
from lensneurons.core.results import ResultsFolder
from lensneurons.core.study import MODEL_HELP, Study, StudyConfig, param
from lensneurons.core.models import CausalModel


@dataclass
class FinetuneShiftConfig(StudyConfig):
    model: str = param("gemma-3-270m", MODEL_HELP)
    corpora: list[str] = param(help="NLTK corpora to read", factory=lambda: ["pros_cons", "inaugural"])
    data_file: str | None = param(None, "a CSV/JSONL corpus instead of the NLTK corpora (text + metadata columns)")
    text_column: str = param("text", "text column of data_file")
    group_field: str = param("corpus", "metadata field that names each sentence's source")
    train_on: str = param("pros_cons", "source of the training and held-out sentences")
    out_of_domain: str = param("inaugural", "source of the out-of-domain sentences")
    n_per_group: int = param(256, "sentences per group", low=1)
    steps: int = param(50, "optimiser steps of the fine-tune", low=1)
    lr: float = param(1e-4, "learning rate")
    batch_size: int = param(16, "sentences per step", low=1)
    params: str = param("blocks", "parameters trained (blocks: embedding and unembedding frozen)", choices=PARAM_SETS)
    optimizer: str = param("adamw", "optimiser", choices=OPTIMIZERS)
    site: str = param("resid", "unit space: resid (the paper's) | mlp | mlp_pre | heads | linear | '+'-joined hook names")
    layers: list[int] | None = param(None, "layers whose neurons form the vector (none: all)")
    max_length: int = param(128, "tokens kept per sentence", low=2)
    random_state: int = param(0, "seed of the groups and the fine-tune", flags=("--seed",))

    presets: ClassVar[dict] = {"default": {}}


RunConfig = FinetuneShiftConfig


def load_corpus(cfg: RunConfig) -> Corpus:
    return from_file(cfg.data_file, cfg.text_column) if cfg.data_file else nltk_corpora(cfg.corpora)


def sentence_groups(corpus: Corpus, cfg: RunConfig) -> dict[str, list[str]]:
    """Training, in-domain held-out and out-of-domain sentences: disjoint seeded samples of `n_per_group`."""
    if cfg.n_per_group < 1:
        raise ValueError(f"n_per_group must be >= 1, got {cfg.n_per_group}")
    if cfg.group_field not in corpus.metadata:
        raise ValueError(f"the corpus has no metadata field {cfg.group_field!r}; it has {sorted(corpus.metadata)}")
    source = np.array([str(v) for v in corpus.metadata[cfg.group_field]], dtype=object)
    rng = np.random.default_rng(cfg.random_state)

    def members(label: str, need: int) -> np.ndarray:
        ids = np.flatnonzero(source == label)
        if len(ids) < need:
            known = sorted(set(source.tolist()))
            raise ValueError(f"{cfg.group_field} = {label!r} has {len(ids)} sentences, {need} needed "
                             f"(values: {known[:10]}{' …' if len(known) > 10 else ''})")
        return rng.permutation(ids)[:need]

    if cfg.train_on == cfg.out_of_domain:
        raise ValueError(f"train_on and out_of_domain are both {cfg.train_on!r}; out-of-domain needs another source")
    inside = members(cfg.train_on, 2 * cfg.n_per_group)
    outside = members(cfg.out_of_domain, cfg.n_per_group)
    n = cfg.n_per_group
    return {
        "training": [corpus.texts[i] for i in inside[:n]],
        f"held-out ({cfg.train_on})": [corpus.texts[i] for i in inside[n:]],
        f"out-of-domain ({cfg.out_of_domain})": [corpus.texts[i] for i in outside],
    }


def group_tests(each: dict[str, dict[str, list[float]]], n_tokens: dict[str, list[int]]) -> list[dict]:
    """The training group (the first) against each other group on per-sentence relative distance.

    Raw: Welch's t-test (the sentences differ between groups, so it is unpaired). Length-adjusted: least
    squares of relative distance on log(tokens) and one indicator per non-training group, because a mean
    over more tokens moves less by averaging alone and the groups' lengths differ; `adjusted_difference`
    is training minus the other group at equal length, with its t statistic and two-sided p-value.
    """
    from scipy.stats import t as t_dist
    from scipy.stats import ttest_ind

    names = list(each)
    rel = np.concatenate([np.asarray(each[g]["relative_euclidean"], dtype=float) for g in names])
    lengths = np.concatenate([np.asarray(n_tokens[g], dtype=float) for g in names])
    if len(lengths) != len(rel):
        raise ValueError("n_tokens must give one length per sentence of every group")
    if lengths.min() < 1:
        raise ValueError("every sentence needs at least one pooled token")
    group = np.concatenate([np.full(len(each[g]["relative_euclidean"]), i) for i, g in enumerate(names)])
    design = np.column_stack([np.ones_like(rel), np.log(lengths)] + [group == i for i in range(1, len(names))])
    beta, *_ = np.linalg.lstsq(design, rel, rcond=None)
    dof = len(rel) - design.shape[1]
    resid = rel - design @ beta
    cov = (resid @ resid / dof) * np.linalg.pinv(design.T @ design)
    out = []
    for i, other in enumerate(names[1:], start=2):
        a, b = each[names[0]]["relative_euclidean"], each[other]["relative_euclidean"]
        t, p = ttest_ind(a, b, equal_var=False)
        diff, se = -beta[i], float(np.sqrt(cov[i, i]))
        t_adj = diff / se if se > 0 else float("nan")
        out.append({"a": names[0], "b": other, "mean_a": float(np.mean(a)), "mean_b": float(np.mean(b)),
                    "welch_t": float(t), "p_value": float(p),
                    "adjusted_difference": float(diff), "adjusted_t": float(t_adj),
                    "adjusted_p_value": float(2 * t_dist.sf(abs(t_adj), dof)),
                    "log_tokens_slope": float(beta[1])})
    return out


def plot_shift(distances: dict[str, dict], losses: dict[str, dict]):
    """Bars of the mean relative distance per group, and the mean Euclidean distance per layer."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    names = list(distances)
    left.bar(range(len(names)), [distances[g]["relative_euclidean"] for g in names], color="tab:blue")
    left.set_xticks(range(len(names)), [f"{g}\nloss {losses[g]['before']:.2f}→{losses[g]['after']:.2f}" for g in names],
                    fontsize=8)
    left.set_ylabel("mean ||after − before|| / ||before||")
    left.set_title("Movement of each sentence's neuron vector")
    for g in names:
        right.plot(distances[g]["euclidean_by_layer"], marker="o", ms=3, label=g)
    right.set_xlabel("layer (position among the analysed layers)")
    right.set_yscale("log")  # the residual stream's norm, and with it every distance, grows with depth
    right.set_ylabel("mean Euclidean distance")
    right.set_title("By layer")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run(model: CausalModel, cfg: RunConfig, out: str | Path, corpus: Optional[Corpus] = None,
        progress: bool = True) -> dict:
    """Fine-tune a copy of `model` and measure how far each group's neuron vectors move; `model` is unchanged."""
    if cfg.params not in PARAM_SETS or cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"params must be one of {PARAM_SETS} and optimizer one of {OPTIMIZERS}")
    corpus = load_corpus(cfg) if corpus is None else corpus
    groups = sentence_groups(corpus, cfg)
    folder = ResultsFolder.claim(out, cfg, model)
    timings = {}

    started = time.time()
    tuned = finetune(model, groups["training"], steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
                     max_length=cfg.max_length, params=cfg.params, optimizer=cfg.optimizer, seed=cfg.random_state,
                     progress=progress)
    timings["finetune_s"] = round(time.time() - started, 2)

    started = time.time()
    losses = {name: {"before": lm_loss(model, texts, max_length=cfg.max_length),
                     "after": lm_loss(tuned, texts, max_length=cfg.max_length)} for name, texts in groups.items()}
    timings["loss_s"] = round(time.time() - started, 2)

    started = time.time()
    distances = neuron_vector_distances(model, tuned, groups, site=cfg.site, layers=cfg.layers,
                                        max_length=cfg.max_length, progress=progress, per_sentence=True)
    timings["distances_s"] = round(time.time() - started, 2)
    each = {name: d.pop("per_sentence") for name, d in distances.items()}
    skip_bos = int(model.cfg.default_prepend_bos)  # the pooled tokens: BOS is left out of the mean
    n_tokens = {name: [len(ids) - skip_bos for ids in tokenize(model, texts, max_length=cfg.max_length)]
                for name, texts in groups.items()}
    tests = group_tests(each, n_tokens)

    folder.json("groups.json", groups)
    folder.csv("per_sentence.csv", [
        {"group": name, "sentence": i, "tokens": n, "manhattan": round(l1, 4), "euclidean": round(l2, 4),
         "relative_euclidean": round(rel, 6)}
        for name, d in each.items()
        for i, (n, l1, l2, rel) in enumerate(zip(n_tokens[name], d["manhattan"], d["euclidean"], d["relative_euclidean"]))
    ])
    folder.json("finetune_shift.json", {"losses": losses, "distances": distances, "tests": tests, "timings": timings})
    folder.csv("finetune_shift.csv", [
        {"group": name, "n": d["n"], "loss_before": round(losses[name]["before"], 4),
         "loss_after": round(losses[name]["after"], 4), "manhattan": round(d["manhattan"], 4),
         "euclidean": round(d["euclidean"], 4), "relative_euclidean": round(d["relative_euclidean"], 6),
         "manhattan_std": round(d["manhattan_std"], 4), "euclidean_std": round(d["euclidean_std"], 4)}
        for name, d in distances.items()
    ])
    folder.figure("finetune_shift.png", plot_shift(distances, losses))
    return {"out": str(folder.path), "losses": losses, "distances": distances, "tests": tests, "timings": timings}



def prepare(cfg: FinetuneShiftConfig) -> Corpus:
    """The corpus, with the groups checked: a bad split fails before the model takes its time to load."""
    corpus = load_corpus(cfg)
    sentence_groups(corpus, cfg)
    return corpus


def report(result: dict) -> str:
    lines = []
    for name, d in result["distances"].items():
        loss = result["losses"][name]
        lines.append(f"{name:>32}: loss {loss['before']:.3f} -> {loss['after']:.3f}; mean Manhattan "
                     f"{d['manhattan']:.1f}, Euclidean {d['euclidean']:.2f}, relative {d['relative_euclidean']:.4f}")
    for t in result["tests"]:
        lines.append(f"relative distance, {t['a']} vs {t['b']}: Welch t = {t['welch_t']:.2f}, p = {t['p_value']:.3g}; "
                     f"at equal length {t['adjusted_difference']:+.4f}, t = {t['adjusted_t']:.2f}, "
                     f"p = {t['adjusted_p_value']:.3g}")
    return "\n".join(lines)


STUDY = Study("finetune-shift", "how far each sentence's neuron vector moves under a short fine-tune",
              FinetuneShiftConfig, run, prepare=prepare, report=report, data_keyword="corpus")

# the entry points of the hand-written command line this module had before the Study frame
add_arguments, main = STUDY.add_arguments, STUDY.main
