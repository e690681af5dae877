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

import argparse
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm
from transformer_lens import HookedEncoder

from lensneurons.analyses.knowledge_neurons import KnowledgeNeurons, pos_group, summarise
from lensneurons.attribution import answer_logits, batch_answer_logits, encode, final_resid, right_padded
from lensneurons.models import HookedModel
from lensneurons.results import ResultsFolder

Prompts = Mapping[str, Sequence[tuple[str, str]]]


@dataclass
class RunConfig:
    model: str = "gemma-3-270m"
    data: str = "pararel"  # or "lama" (needs lama_path or the file under the data directory)
    relations: list[str] | None = None  # PARAREL relations (None: all)
    n_concepts: int = 20  # facts / concepts kept (answered correctly), drawn at random with `seed`
    max_prompts: int = 8  # prompts per concept (first ones)
    min_correct: float = 0.5  # fraction of a concept's prompts the model must answer correctly (top-1)
    steps: int = 20
    t: float = 0.2
    p: float = 50.0
    baseline: str = "auto"  # auto | zero | mean
    alpha_power: float = 1.0
    scoring: str = "auto"  # auto (joint for causal LMs, single for masked LMs) | joint | first | single
    unrelated: str | None = None  # fixed unrelated concept (None: `default_unrelated`)
    n_random: int = 5
    seed: int = 0
    lama_path: str | None = None

    @classmethod
    def preset(cls, name: str, **overrides) -> RunConfig:
        presets = {"demo": dict(n_concepts=4, max_prompts=4, steps=8, n_random=1), "paper": dict(n_concepts=200)}
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(presets)}")
        return cls(**{**presets[name], **{k: v for k, v in overrides.items() if v is not None}})


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
    random.Random(cfg.seed).shuffle(keys)
    return {k: prompts[k][: cfg.max_prompts] for k in keys}


def top1_correct(model: HookedModel, pairs: Sequence[tuple[str, str | int]]) -> list[bool]:
    """For each (prompt, answer): whether the answer's first token is the model's most likely token after the
    prompt (at the mask). A causal LM scores all prompts in one right-padded batch."""
    queries = [encode(model, p, a, "first") for p, a in pairs]
    if not queries:
        return []
    with torch.no_grad():
        if isinstance(model, HookedEncoder):  # padding would need an attention mask: one prompt at a time
            return [int(answer_logits(model, final_resid(model, q.tokens), q)[0, 0].argmax()) == int(q.targets[0])
                    for q in queries]
        logits, _, targets = batch_answer_logits(model, final_resid(model, right_padded(model, queries)), queries)
    return (logits.argmax(-1).cpu() == targets).tolist()


def resolve_scoring(model: HookedModel, scoring: str) -> str:
    if scoring == "auto":
        return "single" if isinstance(model, HookedEncoder) else "joint"
    return scoring


def is_single_token(model: HookedModel, answer: str) -> bool:
    return len(model.tokenizer(answer, add_special_tokens=False)["input_ids"]) == 1


def select(model: HookedModel, candidates: Prompts, cfg: RunConfig, progress: bool = False) -> tuple[dict, int]:
    """The first `n_concepts` candidates answered correctly often enough; also how many were tried.
    With single-token scoring, concepts whose answer is several tokens are passed over (not counted)."""
    single = resolve_scoring(model, cfg.scoring) == "single"
    kept, tried = {}, 0
    bar = tqdm(total=cfg.n_concepts, desc="selecting facts", unit="fact", disable=not progress)
    for concept, pairs in candidates.items():
        if len(kept) >= cfg.n_concepts:
            break
        if single and not all(is_single_token(model, a) for _, a in pairs):
            continue
        tried += 1
        correct = top1_correct(model, pairs)
        if sum(correct) >= cfg.min_correct * len(pairs) and len(pairs) >= 2:
            kept[concept] = list(pairs)
            bar.update()
        bar.set_postfix(tried=tried, refresh=False)
    bar.close()
    return kept, tried


def relation_of(concept: str) -> str:
    """The PARAREL relation of a concept key ("P36:Japan -> Tokyo" → "P36"); other keys are their own group."""
    return concept.split(":", 1)[0] if ":" in concept else concept


def distribution(rows: Sequence[Mapping]) -> list[dict]:
    """Quartiles, range and share below 0 of the relative change (%) over prompts, per edit and target;
    the random targets also split by whether the other concept shares the edited concept's relation."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        targets = [r["target"]]
        if r["target"] == "random":
            same = relation_of(r["target_concept"]) == relation_of(r["concept"])
            targets.append("random, same relation" if same else "random, other relation")
        for target in targets:
            groups.setdefault((r["edit"], target), []).append(100 * r["relative_change"])
    out = []
    for (edit, target), values in sorted(groups.items()):
        v = np.asarray(values, dtype=float)
        v = v[~np.isnan(v)]
        q1, median, q3 = np.percentile(v, [25, 50, 75]) if len(v) else (np.nan,) * 3
        out.append({"edit": edit, "target": target, "n": len(v), "q1": q1, "median": median, "q3": q3,
                    "min": v.min() if len(v) else np.nan, "max": v.max() if len(v) else np.nan,
                    "share_below_0": float((v < 0).mean()) if len(v) else np.nan})
    return out


def default_unrelated(concepts: Mapping[str, object]) -> str:
    """The fixed unrelated concept: one from the relation with the fewest concepts (the last such).

    PARAREL keys are "relation:subject -> object"; a concept of another relation is the paper's
    intent ("london" for ConceptNet concepts), and the rarest relation shares it with the fewest
    concepts. Keys without a relation prefix (LAMA) each count as their own group.
    """
    if not concepts:
        raise ValueError("no concepts to choose an unrelated one from")
    relation = {c: relation_of(c) for c in concepts}
    size = Counter(relation.values())
    return min(reversed(list(concepts)), key=lambda c: size[relation[c]])


def resolve_baseline(model: HookedModel, baseline: str) -> str:
    if baseline == "auto":
        return "mean" if getattr(model.cfg, "use_normalization_before_and_after", False) else "zero"
    if baseline not in ("zero", "mean"):
        raise ValueError(f"unknown baseline {baseline!r}; expected auto, zero or mean")
    return baseline


def run(
    model: HookedModel, cfg: RunConfig, out: str | Path, prompts: Prompts | None = None, progress: bool = True
) -> dict:
    """Run the study into folder `out`; `prompts` ({concept: [(prompt, answer)]}) overrides the dataset.

    Resumable: the facts selected from the dataset (`selection.json`, reused while the configuration is the
    same) and every prompt's attribution (`ig_cache/`) are saved as soon as they are computed.
    """
    folder = ResultsFolder(out)
    folder.json("config.json", asdict(cfg))
    started = time.time()
    selection = folder.read_json("selection.json") if prompts is None else None
    if selection is not None and selection["config"] == asdict(cfg):
        kept = {c: [tuple(pair) for pair in pairs] for c, pairs in selection["kept"].items()}
        tried = selection["tried"]
    elif prompts is None:
        mask = model.tokenizer.mask_token if isinstance(model, HookedEncoder) else None
        kept, tried = select(model, candidate_prompts(cfg, mask), cfg, progress)
        folder.json("selection.json", {"config": asdict(cfg), "kept": kept, "tried": tried})
    else:
        kept, tried = select(model, {k: list(v)[: cfg.max_prompts] for k, v in prompts.items()}, cfg)
    if len(kept) < 2:
        raise ValueError(f"only {len(kept)} concept(s) answered correctly out of {tried} tried; need at least 2")
    baseline = resolve_baseline(model, cfg.baseline)
    reference = [p for pairs in kept.values() for p, _ in pairs] if baseline == "mean" else None
    kn = KnowledgeNeurons(steps=cfg.steps, t=cfg.t, p=cfg.p, baseline=baseline, scoring=resolve_scoring(model, cfg.scoring),
                          alpha_power=cfg.alpha_power, tolerance=float("inf"))
    kn.fit(model, kept, reference_texts=reference, progress=progress, cache=folder.path / "ig_cache")
    fit_s = time.time() - started
    unrelated = cfg.unrelated if cfg.unrelated is not None else default_unrelated(kept)
    rows = kn.evaluate(model, unrelated=unrelated, n_random=cfg.n_random, random_state=cfg.seed, progress=progress)
    pos = concept_pos(kept, model.tokenizer.mask_token if isinstance(model, HookedEncoder) else None)
    summary = [{**r, "pos": pos[r["concept"]]} for r in summarise(rows)]

    n_layers = model.cfg.n_layers
    folder.json("neurons.json", {
        "baseline": baseline, "unrelated": unrelated, "n_tried": tried, "n_kept": len(kept),
        "concepts": {c: {"prompts": kept[c], "neurons": kn.neurons_[c].to_dict()["neurons"],
                         "per_prompt": [len(s) for s in kn.prompt_neurons_[c]],
                         "p_answer": kn.probs_[c].tolist(), "pos": pos[c]} for c in kept},
    })
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


def concept_pos(prompts: Prompts, mask_token: str | None = None) -> dict[str, str]:
    """Part-of-speech group of each concept's answer in its first prompt (`pos_group`); "unknown" when
    NLTK's tagger data are missing."""
    out = {}
    for concept, pairs in prompts.items():
        prompt, answer = pairs[0]
        text = prompt.replace(mask_token, answer) if mask_token and mask_token in prompt else prompt + answer
        try:
            out[concept] = pos_group(text, answer.strip())
        except LookupError:
            out[concept] = "unknown"
    return out


# figures ------------------------------------------------------------------------------------------


def concept_bars(summary: Sequence[Mapping], max_concepts: int = 30) -> Figure:
    """Per concept, mean relative change of P(answer) (%) on own vs unrelated prompts (like paper K Fig. 3/4)."""
    concepts = list(dict.fromkeys(r["concept"] for r in summary))[:max_concepts]
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.35 * len(concepts) + 2), 6), squeeze=False)
    for ax, edit in zip(axes[:, 0], ("suppress", "amplify")):
        for j, (target, colour) in enumerate((("own", "tab:red"), ("unrelated", "tab:grey"), ("random", "tab:blue"))):
            vals = {r["concept"]: 100 * r["mean_relative_change"] for r in summary
                    if r["edit"] == edit and r["target"] == target}
            xs = np.arange(len(concepts)) + (j - 1) * 0.27
            ax.bar(xs, [vals.get(c, np.nan) for c in concepts], width=0.27, color=colour, label=target)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_title(edit)
        ax.set_ylabel("Δ P(answer) %")
        ax.set_xticks(range(len(concepts)), [c[:24] for c in concepts], rotation=75, fontsize=7)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def change_histograms(summary: Sequence[Mapping]) -> Figure:
    """Histograms over concepts of the mean relative change (%), own vs unrelated (like paper K Fig. 5/6)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, edit in zip(axes, ("suppress", "amplify")):
        for target, colour in (("own", "tab:red"), ("unrelated", "tab:grey"), ("random", "tab:blue")):
            vals = [100 * r["mean_relative_change"] for r in summary if r["edit"] == edit and r["target"] == target]
            vals = [v for v in vals if np.isfinite(v)]
            if vals:
                ax.hist(vals, bins=20, alpha=0.55, color=colour, label=f"{target} ({len(vals)})")
        ax.set_title(edit)
        ax.set_xlabel("Δ P(answer) %")
        ax.set_ylabel("concepts")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pos_histograms(summary: Sequence[Mapping]) -> Figure:
    """Suppression on own prompts, histogram over concepts per part-of-speech group (like paper K Fig. 7/8)."""
    groups = list(dict.fromkeys(r["pos"] for r in summary))
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(3.6 * max(1, len(groups)), 3), squeeze=False)
    for ax, group in zip(axes[0], groups):
        vals = [100 * r["mean_relative_change"] for r in summary
                if r["pos"] == group and r["edit"] == "suppress" and r["target"] == "own"]
        vals = [v for v in vals if np.isfinite(v)]
        ax.hist(vals, bins=20, color="tab:red")
        ax.set_title(f"{group} ({len(vals)})")
        ax.set_xlabel("Δ P(answer) % (suppress, own)")
    axes[0, 0].set_ylabel("concepts")
    fig.tight_layout()
    return fig


def layer_bar(counts: Sequence[int]) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 2.8))
    ax.bar(range(len(counts)), counts)
    ax.set_xlabel("layer")
    ax.set_ylabel("knowledge neurons (all concepts)")
    fig.tight_layout()
    return fig


# command line -------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="gemma-3-270m",
                        help="embedded model or any TransformerLens name (BERT names: masked-LM prompts)")
    parser.add_argument("--preset", default="paper", help="demo | paper")
    parser.add_argument("--data", default=None, help="pararel | lama")
    parser.add_argument("--relations", nargs="+", default=None, help="PARAREL relations, e.g. P36 P103")
    parser.add_argument("--n-concepts", type=int, default=None)
    parser.add_argument("--max-prompts", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--t", type=float, default=None)
    parser.add_argument("--p", type=float, default=None, help="sharing percentage, in (0, 100]")
    parser.add_argument("--baseline", default=None, help="auto | zero | mean")
    parser.add_argument("--alpha-power", type=float, default=None, help="> 1 puts IG steps near the baseline")
    parser.add_argument("--scoring", default=None, help="auto | joint | first | single (multi-token answers)")
    parser.add_argument("--unrelated", default=None, help="fixed unrelated concept (a key of the data)")
    parser.add_argument("--n-random", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--lama-path", default=None)
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--quiet", action="store_true")


def main(args: argparse.Namespace) -> None:
    from lensneurons.models import load_model

    cfg = RunConfig.preset(
        args.preset, model=args.model, data=args.data, relations=args.relations, n_concepts=args.n_concepts,
        max_prompts=args.max_prompts, steps=args.steps, t=args.t, p=args.p, baseline=args.baseline,
        alpha_power=args.alpha_power, scoring=args.scoring, unrelated=args.unrelated, n_random=args.n_random, seed=args.seed,
        lama_path=args.lama_path,
    )
    started = time.time()
    model = load_model(cfg.model, device=args.device)
    result = run(model, cfg, args.out, progress=not args.quiet)
    print(f"\n{result['n_kept']} of {result['n_tried']} concepts answered correctly; baseline {result['baseline']}")
    print("Mean relative change of P(answer) over concepts (%):")
    for edit in ("suppress", "amplify"):
        for target in ("own", "unrelated", "random"):
            vals = [r["mean_relative_change"] for r in result["summary"] if r["edit"] == edit and r["target"] == target]
            vals = [v for v in vals if np.isfinite(v)]
            if vals:
                print(f"  {edit:8s} {target:9s} {100 * float(np.mean(vals)):+7.2f}  (n={len(vals)})")
    print(f"\nResults in {result['out']}/ ({time.time() - started:.0f} s): config.json, neurons.json, "
          "completeness.csv, effects.csv, summary.csv, layer_histogram.{csv,png}, concept_bars.png, "
          "change_histograms.png, pos_histograms.png")
