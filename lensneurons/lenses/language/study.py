"""The whole language-neuron study (paper L) into one results folder, resumable.

Stages: pooled activations (cached) → AP scores, neuron sets, histograms, overlap, distributions →
steered generation per language × {none, top, bottom, both} → k-ablation with BLEU-4. Each finished
stage and each finished steering condition is saved at once, so a rerun continues where it stopped.
"""
from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from lensneurons.lenses.language import figures
from lensneurons.core.activations import pooled_activations
from lensneurons.lenses.language.analysis import (
    CONDITIONS,
    LanguageNeurons,
    SteeringConfig,
    reference_set,
    score_generations,
)
from lensneurons.data.multilingual import LanguageTexts, flores200, kojima2024
from lensneurons.core.memory import map_large_blocks, release_freed_memory
from lensneurons.core.models import CausalModel, weights_digest
from lensneurons.core.results import ResultsFolder, fingerprint
from lensneurons.core.sites import site_width
from lensneurons.core.units import UnitSpace, unit_space
from lensneurons.core.study import MODEL_HELP, Study, StudyConfig, param


@dataclass
class LanguageNeuronsConfig(StudyConfig):
    model: str = param("gemma-3-270m", MODEL_HELP)
    data: str = param("kojima2024", "sentence sets: the paper's (kojima2024) or FLORES-200 (flores200)",
                      choices=("kojima2024", "flores200"))
    languages: list[str] | None = param(None, "languages (none: the dataset's default set)")
    n_positive: int | None = param(None, "kojima2024 positives per language (none: all 500)", low=1)
    n_negative: int | None = param(None, "kojima2024 negatives per language (none: all 2,500)", low=1)
    n_per_language: int = param(500, "flores200 sentences per language", low=1)
    site: str = param("mlp", "unit space: mlp (MLP neurons), linear (every Linear output, the paper's units), "
                             "mlp_pre, resid, heads, or '+'-joined hook names")
    k: int = param(1000, "top-k and bottom-k neurons per language", low=1)
    pooling: str = param("mean", "pooling of each text's token activations", choices=("mean", "last", "max"))
    batch_size: int = param(16, "texts per forward pass", low=1)
    max_length: int = param(256, "tokens kept per text", low=2)
    seeds: int = param(100, "generations per steering condition (seeds 1..N)", low=1)
    max_new_tokens: int = param(32, "tokens generated per sample", low=1)
    temperature: float = param(1.0, "sampling temperature of the generations")
    gen_batch_size: int = param(100, "samples generated together", low=1)
    ablation_ks: list[int] = param(help="k values of the k-ablation (empty: skip it)",
                                   factory=lambda: [100, 316, 1000, 3162, 10000, 18432], low=1)
    ablation_which: str = param("both", "neuron set clamped in the k-ablation", choices=("top", "bottom", "both"))
    ablation_seeds: int = param(100, "generations per k and language in the k-ablation", low=1)

    presets: ClassVar[dict] = {
        # the paper's protocol on its own sentence sets: its units (every Linear output of a block, 124,416 on
        # Gemma-3-270M) and the authors' decoding (64 new tokens at temperature 0.8, their generation script)
        "paper": dict(site="linear", max_new_tokens=64, temperature=0.8,
                      ablation_ks=[100, 316, 1000, 3162, 10000, 31623, 62208]),
        # what the results docs ran until session 23: MLP neurons (36,864), 32 tokens at temperature 1
        "mlp-units": {},
        # a few minutes on 2 CPU cores: the whole path at a small size
        "demo": dict(n_positive=20, n_negative=40, seeds=8, max_new_tokens=16, ablation_ks=[100, 1000, 10000],
                     ablation_seeds=8),
        # all 17 FLORES-200 languages (not in the paper)
        "flores17": dict(data="flores200", n_per_language=200, ablation_ks=[]),
    }

    def check_model(self, model) -> None:
        super().check_model(model)
        half = model.cfg.n_layers * site_width(model, self.site) // 2
        if self.k > half:
            raise ValueError(f"--k must be at most half the model's units at site {self.site!r} ({half}) so that "
                             f"the top-k and bottom-k sets do not overlap, got {self.k}")
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")


RunConfig = LanguageNeuronsConfig


def load_texts(cfg: RunConfig) -> LanguageTexts:
    if cfg.data == "kojima2024":
        kw = {"languages": tuple(cfg.languages)} if cfg.languages else {}
        return kojima2024(n_positive=cfg.n_positive, n_negative=cfg.n_negative, **kw)
    if cfg.data == "flores200":
        return flores200(languages=cfg.languages, n_per_language=cfg.n_per_language)
    raise ValueError(f"unknown dataset {cfg.data!r}; expected 'kojima2024' or 'flores200'")


def run(
    model: CausalModel, cfg: RunConfig, out: str | Path, data: LanguageTexts | None = None, progress: bool = True
) -> dict:
    """Run (or resume) the study into folder `out`; `data` defaults to the dataset `cfg` names.

    Sets glibc to map blocks of 4 MiB and more separately for the rest of the process: otherwise the
    AP worker threads' arenas keep freed temporaries (two threads: AP-stage peak 4.41 → 4.18 GB).
    """
    map_large_blocks()
    data = load_texts(cfg) if data is None else data
    folder = ResultsFolder.claim(out, cfg, model)
    timings = folder.read_json("timings.json", {})

    key = fingerprint(weights_digest(model), data.texts, cfg.site, cfg.pooling, cfg.max_length)
    acts = folder.read_stage("pooled_activations.pt", key)
    if acts is None:
        started = time.time()
        acts = pooled_activations(model, data.texts, site=cfg.site, pooling=cfg.pooling, batch_size=cfg.batch_size,
                                  max_length=cfg.max_length, progress=progress)
        timings["activations_s"] = round(time.time() - started, 1)
        folder.save_stage("pooled_activations.pt", key, acts)
        folder.json("timings.json", timings)
    ln = LanguageNeurons(k=cfg.k, site=cfg.site, pooling=cfg.pooling).fit_activations(acts, data)
    _write_neurons(folder, ln, unit_space(model, cfg.site))
    del acts  # generation needs only the scores and medians: keep peak memory down
    ln.drop_activations()
    release_freed_memory()

    steering = _steering(model, ln, data, cfg, folder, progress)
    if cfg.ablation_ks:
        _ablation(model, ln, data, cfg, folder, progress)
    folder.json("timings.json", {**timings, **folder.read_json("timings.json", {})})
    return {"out": str(folder.path), "steering": steering}


def _write_neurons(folder: ResultsFolder, ln: LanguageNeurons, space: UnitSpace) -> None:
    folder.csv("language_neurons.csv", ln.rows())
    if len(space.components) > 1:  # which kinds of unit the language neurons are, against their share of units
        labels = np.array(space.unit_labels())
        shares = {c.label: c.width / space.width for c in space.components}
        folder.csv("unit_types.csv", [
            {"lang": lang, "group": group, "unit": label, "count": int(n), "share": round(n / ln.k, 4),
             "share_of_units": round(shares[label], 4)}
            for lang in ln.languages_ for group in ("top", "bottom")
            for label, n in zip(*np.unique(labels[ln.neurons(lang, group).indices.numpy()], return_counts=True))
        ])
    folder.tensor("ap_scores.pt", {"languages": ln.languages_, "scores": ln.scores_, "medians": ln.medians_,
                                   "mean_differences": ln.mean_differences_})
    hists = {lang: ln.layer_histograms(lang) for lang in ln.languages_}
    folder.csv("layer_histograms.csv", [
        {"lang": lang, "group": g, **{f"layer{i}": int(c) for i, c in enumerate(counts)}}
        for lang, groups in hists.items() for g, counts in groups.items()
    ])
    folder.figure("layer_histograms.png", figures.layer_histograms(hists))
    overlap = ln.overlap("both")
    folder.csv("overlap.csv", [{"lang": a, **{b: int(overlap[i, j]) for j, b in enumerate(ln.languages_)}}
                               for i, a in enumerate(ln.languages_)])
    folder.figure("overlap.png", figures.overlap_table(overlap, ln.languages_, f"shared neurons (top+bottom {ln.k})"))
    splits = {lang: {g: ln.activation_split(lang, g) for g in ("top", "bottom")} for lang in ln.languages_}
    folder.figure("activation_distributions.png", figures.activation_distributions(splits))


def _steering(model, ln: LanguageNeurons, data: LanguageTexts, cfg: RunConfig, folder: ResultsFolder, progress):
    done = folder.read_json("steering.json", {})
    steer = SteeringConfig(seeds=list(range(1, cfg.seeds + 1)), max_new_tokens=cfg.max_new_tokens,
                           temperature=cfg.temperature, batch_size=cfg.gen_batch_size)
    todo = [(lang, c) for lang in ln.languages_ for c in CONDITIONS if f"{lang}/{c}" not in done]
    for lang, cond in tqdm(todo, desc="steering", disable=not progress):
        # "none" does not depend on the language; generate it once and score it against each language
        cached = next((v["texts"] for key, v in done.items() if key.endswith("/none")), None)
        texts = cached if cond == "none" and cached else ln.generate(model, lang, cond, steer)
        done[f"{lang}/{cond}"] = {**score_generations(texts, lang, steer.threshold), "texts": texts}
        folder.json("steering.json", done)
    rates = {lang: {c: done[f"{lang}/{c}"]["rate"] for c in CONDITIONS} for lang in ln.languages_}
    table = [{"lang": lang, **{c: round(100 * r, 1) for c, r in row.items()}} for lang, row in rates.items()]
    table.append({"lang": "avg", **{c: round(100 * float(np.mean([rates[l][c] for l in rates])), 1)
                                    for c in CONDITIONS}})
    folder.csv("steering.csv", table)
    folder.figure("steering.png", figures.steering_bars(rates, CONDITIONS))
    samples = ["# Sample generations (first 3 seeds per condition)\n"]
    for lang in ln.languages_:
        for cond in CONDITIONS:
            samples.append(f"\n## {lang} / {cond}: {100 * rates[lang][cond]:.0f}% in {lang}\n")
            samples += [f"- `{t[:200]!r}`" for t in done[f"{lang}/{cond}"]["texts"][:3]]
    folder.text("samples.md", "\n".join(samples) + "\n")
    return table


def _ablation(model, ln: LanguageNeurons, data: LanguageTexts, cfg: RunConfig, folder: ResultsFolder, progress):
    done = folder.read_json("ablation.json", {})
    steer = SteeringConfig(seeds=list(range(1, cfg.ablation_seeds + 1)), max_new_tokens=cfg.max_new_tokens,
                           temperature=cfg.temperature, batch_size=cfg.gen_batch_size)
    n_neurons = ln.n_layers_ * ln.width_
    ks = [k for k in cfg.ablation_ks if k <= n_neurons]
    todo = [(lang, k) for lang in ln.languages_ for k in ks if f"{lang}/{k}" not in done]
    refs = {}
    for lang, k in tqdm(todo, desc="k-ablation", disable=not progress):
        if lang not in refs:
            refs[lang] = reference_set(data, lang, model.tokenizer)
        texts = ln.generate(model, lang, cfg.ablation_which, steer, k=k)
        row = score_generations(texts, lang, steer.threshold, refs[lang], model.tokenizer)
        done[f"{lang}/{k}"] = {"lang": lang, "k": k, "rate": row["rate"], "bleu": row["bleu"], "texts": texts}
        folder.json("ablation.json", done)
    rows = [{k: v for k, v in r.items() if k != "texts"} for r in done.values()]
    folder.csv("ablation.csv", rows)
    folder.figure("ablation.png", figures.ablation_curves(rows))


def report(result: dict) -> str:
    lines = ["Steering: % of generations in the target language (fastText score > 0.5)"]
    lines += ["  " + "  ".join(f"{k}={v}" for k, v in row.items()) for row in result["steering"]]
    return "\n".join(lines)


STUDY = Study("language-neurons", "language-specific neurons and steering (Kojima et al. 2024)",
              LanguageNeuronsConfig, run, prepare=load_texts, report=report)

# the entry points of the hand-written command line this module had before the Study frame
add_arguments, main = STUDY.add_arguments, STUDY.main
