"""The knowledge-neuron study (paper K) into one results folder.

Stages: facts (PARAREL, or LAMA ConceptNet concepts) → keep those the model answers correctly (top-1
first answer token) for at least `min_correct` of their prompts → integrated gradients and refinement
(`KnowledgeNeurons`) → suppress / amplify edits on own, one fixed unrelated and `n_random` random other
concepts' prompts → JSON / CSV tables and figures.

Baseline: ``"auto"`` uses the paper's zero baseline, except on models that normalise after the MLP
(Gemma-2/3), where scaling a whole layer towards 0 is invisible until α is tiny and IG with a uniform
grid loses completeness; there it uses each neuron's mean activation at the last token of the study's
prompts (measured on Gemma-3-270M, "The capital of Finland is" → " Helsinki", 20 steps: completeness
error 5–244% per layer with zero, ≤ 1.2% with the mean baseline, ≤ 2.4% with zero and steps concentrated
near 0, `alpha_power=3`). The mean keeps the paper's uniform grid and a baseline the model actually visits.

Masked LMs (BERT names load as `HookedEncoder`): prompts are the masked patterns (PARAREL `[Y]` or the LAMA
sentence's `[MASK]` replaced by the tokenizer's mask token) and, with ``scoring="auto"``, only facts whose
answer is a single token are kept (Dai et al.'s setting), scored at the mask.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import numpy as np
import torch
from transformer_lens import HookedEncoder

from lensneurons.lenses.knowledge.figures import change_histograms, concept_bars, layer_bar, pos_histograms
from lensneurons.lenses.knowledge.analysis import KnowledgeNeurons, summarise
from lensneurons.lenses.knowledge.facts import (  # noqa: F401 (top1_correct, distribution: their old home)
    Prompts,
    concept_pos,
    default_unrelated,
    distribution,
    resolve_baseline,
    resolve_scoring,
    select_facts,
    top1_correct,
)
from lensneurons.core.models import HookedModel, weights_digest
from lensneurons.core.results import ResultsFolder, fingerprint
from lensneurons.core.study import MODEL_HELP, Study, StudyConfig, param

@dataclass
class KnowledgeNeuronsConfig(StudyConfig):
    model: str = param("gemma-3-270m", MODEL_HELP + " (BERT names: masked-LM prompts)")
    data: str = param("pararel", "facts: PARAREL relations or LAMA ConceptNet concepts", choices=("pararel", "lama"))
    relations: list[str] | None = param(None, "PARAREL relations, e.g. P36 P103 (none: all)")
    n_concepts: int = param(200, "facts / concepts kept (answered correctly), drawn in seeded random order", low=1)
    max_prompts: int = param(8, "prompts per concept (the first ones)", low=2)
    min_correct: float = param(0.5, "fraction of a concept's prompts the model must answer correctly (top-1)", low=0.0, high=1.0)
    steps: int = param(20, "Riemann steps of integrated gradients", low=1)
    t: float = param(0.2, "per-prompt threshold, a fraction of the prompt's largest attribution", low=0.0, high=1.0)
    p: float = param(50.0, "sharing percentage in (0, 100]: a neuron must pass t in this share of the prompts", low=0.0, high=100.0)
    baseline: str = param("auto", "IG baseline: zero, mean (each neuron's mean activation over the prompts) or "
                                  "auto (mean where the model normalises after the MLP)",
                          choices=("auto", "zero", "mean"))
    alpha_power: float = param(1.0, "> 1 puts IG steps near the baseline")
    scoring: str = param("auto", "multi-token answers: auto (joint for causal LMs, single for masked LMs) | joint | "
                                 "first | single", choices=("auto", "joint", "first", "single"))
    unrelated: str | None = param(None, "fixed unrelated concept, a key of the data (none: one of the rarest relation)")
    n_random: int = param(5, "random other concepts whose prompts each edit is measured on", low=0)
    random_state: int = param(0, "seed of the concept order and the random targets", flags=("--seed",))
    lama_path: str | None = param(None, "LAMA ConceptNet file (none: under the data directory)")

    presets: ClassVar[dict] = {"paper": {}, "demo": dict(n_concepts=4, max_prompts=4, steps=8, n_random=1)}


RunConfig = KnowledgeNeuronsConfig


def candidate_prompts(cfg: RunConfig, mask_token: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """All concepts of the configured dataset, in random order (seeded), as (prompt, answer) pairs:
    prompts that end where the answer starts, or masked prompts when `mask_token` is given."""
    if cfg.data == "pararel":
        from lensneurons.data.pararel import pararel, to_prompts

        style = dict(style="masked", mask_token=mask_token) if mask_token else {}
        prompts = to_prompts(pararel(relations=cfg.relations, **style))
    elif cfg.data == "lama":
        from lensneurons.data.lama import lama_conceptnet

        concepts = lama_conceptnet(cfg.lama_path)
        if mask_token:
            prompts = {c.name: [(p.replace("[MASK]", mask_token), a) for p, a in c.masked_pairs()] for c in concepts}
        else:
            prompts = {c.name: c.decoder_pairs() for c in concepts}
        prompts = {k: v for k, v in prompts.items() if len(v) >= 2}
    else:
        raise ValueError(f"unknown data {cfg.data!r}; expected 'pararel' or 'lama'")
    keys = list(prompts)
    random.Random(cfg.random_state).shuffle(keys)
    return {k: prompts[k][: cfg.max_prompts] for k in keys}


def select(model: HookedModel, candidates: Prompts, cfg: KnowledgeNeuronsConfig, progress: bool = False) -> tuple[dict, int]:
    """`select_facts` with the configuration's n_concepts, min_correct and scoring."""
    return select_facts(model, candidates, cfg.n_concepts, cfg.min_correct, cfg.scoring, progress)


def run(
    model: HookedModel, cfg: RunConfig, out: str | Path, prompts: Prompts | None = None, progress: bool = True
) -> dict:
    """Run the study into folder `out`; `prompts` ({concept: [(prompt, answer)]}) overrides the dataset.

    Resumable: the facts selected from the dataset (`selection.json`, reused while the configuration is the
    same) and every prompt's attribution (`ig_cache/`) are saved as soon as they are computed.
    """
    folder = ResultsFolder.claim(out, cfg, model)
    started = time.time()
    if prompts is None:
        mask = model.tokenizer.mask_token if isinstance(model, HookedEncoder) else None
        selection = folder.stage("selection.json", fingerprint(weights_digest(model), cfg),
                                 lambda: dict(zip(("kept", "tried"), select(model, candidate_prompts(cfg, mask), cfg,
                                                                              progress))))
        kept = {c: [tuple(pair) for pair in pairs] for c, pairs in selection["kept"].items()}
        tried = selection["tried"]
    else:
        kept, tried = select(model, {k: list(v)[: cfg.max_prompts] for k, v in prompts.items()}, cfg)
    if len(kept) < 2:
        raise ValueError(f"only {len(kept)} concept(s) answered correctly out of {tried} tried; need at least 2")
    baseline = resolve_baseline(model, cfg.baseline)
    reference = [p for pairs in kept.values() for p, _ in pairs] if baseline == "mean" else None
    kn = KnowledgeNeurons(steps=cfg.steps, t=cfg.t, p=cfg.p, baseline=baseline, scoring=resolve_scoring(model, cfg.scoring),
                          alpha_power=cfg.alpha_power, tolerance=float("inf"))
    kn.fit(model, kept, reference_texts=reference, progress=progress, cache=folder.cache("ig_cache"))
    fit_s = time.time() - started
    unrelated = cfg.unrelated if cfg.unrelated is not None else default_unrelated(kept)
    rows = kn.evaluate(model, unrelated=unrelated, n_random=cfg.n_random, random_state=cfg.random_state, progress=progress)
    pos = concept_pos(kept, model.tokenizer.mask_token if isinstance(model, HookedEncoder) else None)
    summary = [{**r, "pos": pos[r["concept"]]} for r in summarise(rows)]

    n_layers = model.cfg.n_layers
    folder.json("neurons.json", {
        "baseline": baseline, "unrelated": unrelated, "n_tried": tried, "n_kept": len(kept),
        "concepts": {c: {"prompts": kept[c], "neurons": kn.neurons_[c].to_dict()["neurons"],
                         "per_prompt": [len(s) for s in kn.prompt_neurons_[c]],
                         "p_answer": kn.probs_[c].tolist(), "pos": pos[c]} for c in kept},
    })
    folder.csv("knowledge_neurons.csv", kn.rows())  # each concept's neurons with their mean attribution
    folder.csv("completeness.csv", [
        {"concept": c, "prompt": kept[c][i][0], **{f"layer{l}": round(float(e[i, l]), 5) for l in range(n_layers)}}
        for c, e in kn.completeness_errors_.items() for i in range(e.shape[0])
    ])
    folder.csv("effects.csv", rows)
    folder.csv("summary.csv", summary)
    folder.csv("distribution.csv", distribution(rows))
    hist = torch.stack([s.layer_histogram() for s in kn.neurons_.values()]).sum(0)
    folder.csv("layer_histogram.csv", [{"layer": l, "neurons": int(n)} for l, n in enumerate(hist)])
    folder.figure("concept_bars.png", concept_bars(summary))
    folder.figure("change_histograms.png", change_histograms(summary))
    folder.figure("layer_histogram.png", layer_bar(hist.tolist()))
    folder.figure("pos_histograms.png", pos_histograms(summary))
    timings = {"fit_and_select_s": round(fit_s, 1), "total_s": round(time.time() - started, 1)}
    folder.json("timings.json", timings)
    return {"out": str(folder.path), "summary": summary, "n_kept": len(kept), "n_tried": tried,
            "baseline": baseline, "timings": timings}


def report(result: dict) -> str:
    lines = [f"{result['n_kept']} of {result['n_tried']} concepts answered correctly; baseline {result['baseline']}",
             "Mean relative change of P(answer) over concepts (%):"]
    for edit in ("suppress", "amplify"):
        for target in ("own", "unrelated", "random"):
            vals = [r["mean_relative_change"] for r in result["summary"] if r["edit"] == edit and r["target"] == target]
            vals = [v for v in vals if np.isfinite(v)]
            if vals:
                lines.append(f"  {edit:8s} {target:9s} {100 * float(np.mean(vals)):+7.2f}  (n={len(vals)})")
    return "\n".join(lines)


STUDY = Study("knowledge-neurons", "knowledge neurons: integrated gradients, refinement, suppress/amplify",
              KnowledgeNeuronsConfig, run, report=report, data_keyword="prompts")

# the entry points of the hand-written command line this module had before the Study frame
add_arguments, main = STUDY.add_arguments, STUDY.main
