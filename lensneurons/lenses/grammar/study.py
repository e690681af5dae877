"""The sparse-probing study (paper S) into one results folder.

Stages: BLiMP pairs → EOS states of every layer in an fp16 activation store (resumable, reused by later
runs) → mask / dense / top-k / random-k probes for every layer × task → tables and the five figures:

  fig2_mask_density_accuracy.png  per layer and λ: fraction of neurons used and accuracy vs dense
  fig3_topk_accuracy.png          accuracy of Welch-t top-k probes against k, per layer
  fig4_spearman.png               Spearman(mask, |t|) per layer and λ
  fig5_top_vs_random.png          the top-1% probe against k random neurons from the complement
  fig6_cross_task.png             cross-task accuracy (sparse) and its difference to the dense probe

Tables: per_layer.csv (averages over tasks), mask_probes.csv, topk_probes.csv, random_probes.csv,
cross_task.csv and summary.json; config.json records the run's settings.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


from lensneurons.core.results import ResultsFolder, fingerprint
from lensneurons.core.sites import check_layers, site_width
from lensneurons.core.study import MODEL_HELP, Study, StudyConfig, param
from lensneurons.data.blimp import MinimalPair, load_blimp
from lensneurons.lenses.grammar.analysis import SparseProbing
from lensneurons.lenses.grammar.extraction import extract_to_store, store_config
from lensneurons.lenses.grammar.figures import cross_task_figure, mask_figure, random_figure, spearman_figure, topk_figure
from lensneurons.lenses.grammar.store import ActivationStore
from lensneurons.core.models import CausalModel


@dataclass
class SparseProbingConfig(StudyConfig):
    model: str = param("gemma-3-270m", MODEL_HELP)
    tasks: list[str] | None = param(None, "BLiMP tasks (none: all 67)")
    n_pairs: int | None = param(None, "pairs per task (none: all 1,000)", low=2)
    layers: list[int] | None = param(None, "layers probed (none: every layer)")
    site: str = param("resid", "unit space read at the EOS token: resid (the paper's) | mlp | linear | heads | ...")
    lams: list[float] = param(help="λ values in (0, 1] of the L0 mask probes",
                              factory=lambda: [1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01], low=0.0, high=1.0)
    ks: list[int] | None = param(None, "k values of the Welch-t top-k probes (none: powers of two up to d, the "
                                       "top-1% size, d/4 and 40)", low=1)
    random_ks: list[int] | None = param(None, "k values of the random-k probes (none: powers of two from the top-1% size)", low=1)
    n_random: int = param(5, "random draws per k", low=0)
    top_fraction: float = param(0.01, "size of the top set compared with random sets, as a fraction of d", low=0.0, high=1.0)
    test_fraction: float = param(0.2, "share of each task's pairs held out for testing", low=0.0, high=1.0)
    cross_layer: int | None = param(None, "layer of the cross-task matrix, among the probed ones (none: the middle one)")
    cross_lam: float = param(0.2, "λ of the cross-task sparse probes", low=0.0, high=1.0)
    steps: int = param(300, "Adam steps per probe", low=1)
    lr: float = param(0.05, "Adam learning rate")
    C: float = param(1.0, "inverse L2 strength of the logistic probes")
    task_chunk: int = param(8, "tasks probed together (one checkpoint per chunk)", low=1)
    batch_size: int = param(32, "sentences per forward pass", low=1)
    random_state: int = param(0, "seed of splits and random subsets", flags=("--seed",))
    store: str | None = param(None, "activation store folder (none: <out>/activations)")

    presets: ClassVar[dict] = {
        "paper": {},
        "demo": dict(tasks=["adjunct_island", "passive_1", "determiner_noun_agreement_1"], n_pairs=100,
                     lams=[1.0, 0.2, 0.05], n_random=2, steps=150),
    }

    def check_model(self, model) -> None:
        super().check_model(model)
        layers = check_layers(model, self.layers)
        if self.cross_layer is not None and (not -model.cfg.n_layers <= self.cross_layer < model.cfg.n_layers
                                             or self.cross_layer % model.cfg.n_layers not in layers):
            raise ValueError(f"--cross-layer {self.cross_layer} is not among the probed layers {layers}")
        width = site_width(model, self.site)
        too_wide = [k for k in (self.ks or []) + (self.random_ks or []) if k > width]
        if too_wide:
            raise ValueError(f"--ks / --random-ks {too_wide} exceed the width of site {self.site!r} "
                             f"({width} units per layer)")


RunConfig = SparseProbingConfig


def load_pairs(cfg: SparseProbingConfig) -> dict[str, list[MinimalPair]]:
    return load_blimp(cfg.tasks, limit=cfg.n_pairs)


def run(model: CausalModel, cfg: SparseProbingConfig, out: str | Path,
        pairs: Mapping[str, Sequence[MinimalPair]] | None = None, progress: bool = True) -> dict:
    """Run the study into folder ``out``; ``pairs`` ({task: minimal pairs}) default to the BLiMP tasks ``cfg``
    names. The activation store is reused when it is complete, and a finished fit (``probes.pt``) too."""
    pairs = load_blimp(cfg.tasks, limit=cfg.n_pairs) if pairs is None else pairs
    folder = ResultsFolder.claim(out, cfg, model)
    layers = check_layers(model, cfg.layers)
    store_path = Path(cfg.store) if cfg.store else folder.path / "activations"
    started = time.time()
    store = extract_to_store(
        model, pairs, ActivationStore(store_path, config={**store_config(model, layers, cfg.site), "n_pairs": cfg.n_pairs}),
        layers=layers, batch_size=cfg.batch_size, progress=progress, site=cfg.site,
    )
    timings = {"extraction_s": round(time.time() - started, 1), "store_bytes": store.nbytes()}
    if cfg.cross_layer is None:
        cross_layer = len(layers) // 2
    else:  # among the probed layers: checked by claim
        cross_layer = layers.index(cfg.cross_layer % model.cfg.n_layers)
    sp = SparseProbing(
        lams=cfg.lams, ks=cfg.ks, random_ks=cfg.random_ks, n_random=cfg.n_random, top_fraction=cfg.top_fraction,
        test_fraction=cfg.test_fraction, cross_layer=cross_layer, cross_lam=cfg.cross_lam, C=cfg.C, steps=cfg.steps,
        lr=cfg.lr, task_chunk=cfg.task_chunk, random_state=cfg.random_state,
        collection=dataclasses.replace(SparseProbing.default_collection, site=cfg.site),
    )
    key = fingerprint(store.config, sp.get_params(), list(pairs))
    saved = folder.read_stage("probes.pt", key)
    if saved is not None:
        sp.load_state_dict(saved)  # a finished fit of this configuration: only the tables and figures are redone
        timings["probing_s"] = (folder.read_json("summary.json") or {}).get("timings", {}).get("probing_s")
    else:
        started = time.time()
        sp.fit_store(store, tasks=list(pairs), progress=progress,
                     checkpoint=folder.checkpoint("probing_checkpoint.pt", key))
        timings["probing_s"] = round(time.time() - started, 1)
        folder.save_stage("probes.pt", key, sp.state_dict())
    phenomena = {task: task_pairs[0].phenomenon for task, task_pairs in pairs.items() if task_pairs}
    summary = write_results(folder, sp, layers, phenomena)
    summary["timings"] = timings
    folder.json("summary.json", summary)
    return {"out": str(folder.path), "summary": summary}


def write_results(
    folder: ResultsFolder, sp: SparseProbing, layers: list[int], phenomena: dict[str, str] | None = None
) -> dict:
    """Tables and figures of a fitted SparseProbing; returns the per-layer summary. ``phenomena`` (task → BLiMP
    phenomenon) orders and labels the cross-task figure."""
    lams = sp.lams_.tolist()
    dense = sp.dense_accuracy_.mean(-1)
    rows = []
    for li, lam in enumerate(lams):
        for slot, layer in enumerate(layers):
            rows.append({"lam": lam, "layer": layer,
                         "density": round(float(sp.mask_density_[li, slot].mean()), 5),
                         "accuracy": round(float(sp.mask_accuracy_[li, slot].mean()), 5),
                         "dense_accuracy": round(float(dense[slot]), 5),
                         "spearman": round(float(sp.spearman_[li, slot].nanmean()), 5)})
    folder.csv("per_layer.csv", rows)
    folder.csv("mask_probes.csv", sp.rows())
    folder.csv("topk_probes.csv", [
        {"task": task, "k": k, "layer": layer, "accuracy": round(float(sp.topk_accuracy_[ki, s, ti]), 5)}
        for ti, task in enumerate(sp.tasks_) for ki, k in enumerate(sp.ks_) for s, layer in enumerate(layers)
    ])
    if sp.n_random:
        match = sp.random_match_k()
        folder.csv("random_probes.csv", [
            {"task": task, "layer": layer, "top_k": sp.top_k_, "top_accuracy": round(float(sp.top_reference_accuracy_[s, ti]), 5),
             **{f"random_{k}": round(float(sp.random_accuracy_[ki, :, s, ti].mean()), 5) for ki, k in enumerate(sp.random_ks_)},
             "random_k_matching_top": float(match[s, ti])}
            for ti, task in enumerate(sp.tasks_) for s, layer in enumerate(layers)
        ])
    folder.csv("cross_task.csv", [
        {"train_task": a, "test_task": b, "sparse": round(float(sp.cross_task_[i, j]), 5),
         "dense": round(float(sp.cross_task_dense_[i, j]), 5), "diff": round(float(sp.cross_task_diff_[i, j]), 5)}
        for i, a in enumerate(sp.tasks_) for j, b in enumerate(sp.tasks_)
    ])
    folder.figure("fig2_mask_density_accuracy.png", mask_figure(sp, layers))
    folder.figure("fig3_topk_accuracy.png", topk_figure(sp, layers))
    folder.figure("fig4_spearman.png", spearman_figure(sp, layers))
    if sp.n_random:
        folder.figure("fig5_top_vs_random.png", random_figure(sp, layers))
    folder.figure("fig6_cross_task.png", cross_task_figure(sp, layers, phenomena))
    return {"tasks": sp.tasks_, "layers": layers, "per_layer": rows,
            "cross_layer": layers[sp.cross_layer_], "cross_lam": sp.cross_lam}


def report(result: dict) -> str:
    lines = ["layer  λ      density  accuracy  dense"]
    for row in result["summary"]["per_layer"]:
        lines.append(f"{row['layer']:>5}  {row['lam']:<5g}  {row['density']:.3f}    {row['accuracy']:.3f}     "
                     f"{row['dense_accuracy']:.3f}")
    return "\n".join(lines)


STUDY = Study("sparse-probing", "sparse probing of grammaticality on BLiMP: L0 mask and Welch-t top-k probes",
              SparseProbingConfig, run, prepare=load_pairs, report=report, data_keyword="pairs")

# the entry points of the hand-written command line this module had before the Study frame
add_arguments, main = STUDY.add_arguments, STUDY.main
