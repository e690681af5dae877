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

import argparse
import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from transformer_lens import HookedTransformer  # noqa: E402

from lensneurons.analyses.sparse_probing import SparseProbing, extract_to_store, store_config  # noqa: E402
from lensneurons.data.blimp import load_blimp  # noqa: E402
from lensneurons.results import ResultsFolder  # noqa: E402
from lensneurons.sites import check_layers  # noqa: E402
from lensneurons.store import ActivationStore  # noqa: E402


@dataclass
class RunConfig:
    model: str = "gemma-3-270m"
    tasks: list[str] | None = None  # None: all 67 BLiMP tasks
    n_pairs: int | None = None  # pairs per task (None: all 1,000)
    layers: list[int] | None = None  # None: every layer
    lams: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01])
    ks: list[int] | None = None  # None: powers of two up to d_model, the top-1% size, d/4 and 40 (default_ks)
    random_ks: list[int] | None = None  # None: powers of two from the top-1% size
    n_random: int = 5
    top_fraction: float = 0.01
    test_fraction: float = 0.2
    cross_layer: int | None = None  # a model layer among `layers`; None: the middle probed layer
    cross_lam: float = 0.2
    steps: int = 300
    lr: float = 0.05
    C: float = 1.0
    task_chunk: int = 8
    batch_size: int = 32
    seed: int = 0
    store: str | None = None  # activation store folder (default: <out>/activations)

    @classmethod
    def preset(cls, name: str, **overrides) -> RunConfig:
        presets = {
            "demo": dict(tasks=["adjunct_island", "passive_1", "determiner_noun_agreement_1"], n_pairs=100,
                         lams=[1.0, 0.2, 0.05], n_random=2, steps=150),
            "paper": dict(),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(presets)}")
        return cls(**{**presets[name], **{k: v for k, v in overrides.items() if v is not None}})


def run(model: HookedTransformer, cfg: RunConfig, out: str | Path, progress: bool = True) -> dict:
    """Run the study into folder ``out``; the activation store is reused when it is complete."""
    folder = ResultsFolder(out)
    previous = folder.read_json("config.json")
    if previous is not None and previous != asdict(cfg):
        raise ValueError(f"{out} holds results of a different configuration; choose another --out or delete it")
    folder.json("config.json", asdict(cfg))
    pairs = load_blimp(cfg.tasks, limit=cfg.n_pairs)
    layers = check_layers(model, cfg.layers)
    store_path = Path(cfg.store) if cfg.store else folder.path / "activations"
    started = time.time()
    store = extract_to_store(
        model, pairs, ActivationStore(store_path, config={**store_config(model, layers), "n_pairs": cfg.n_pairs}),
        layers=layers, batch_size=cfg.batch_size, progress=progress,
    )
    timings = {"extraction_s": round(time.time() - started, 1), "store_bytes": store.nbytes()}
    if cfg.cross_layer is None:
        cross_layer = len(layers) // 2
    elif cfg.cross_layer % model.cfg.n_layers in layers:
        cross_layer = layers.index(cfg.cross_layer % model.cfg.n_layers)
    else:
        raise ValueError(f"cross_layer {cfg.cross_layer} is not among the probed layers {layers}")
    sp = SparseProbing(
        lams=cfg.lams, ks=cfg.ks, random_ks=cfg.random_ks, n_random=cfg.n_random, top_fraction=cfg.top_fraction,
        test_fraction=cfg.test_fraction, cross_layer=cross_layer, cross_lam=cfg.cross_lam, C=cfg.C, steps=cfg.steps,
        lr=cfg.lr, task_chunk=cfg.task_chunk, random_state=cfg.seed,
    )
    saved = folder.read_tensor("probes.pt")
    if saved is not None and saved["params"] == sp.get_params() and saved["tasks_"] == list(pairs):
        sp.load_state_dict(saved)  # a finished fit of this configuration: only the tables and figures are redone
        timings["probing_s"] = (folder.read_json("summary.json") or {}).get("timings", {}).get("probing_s")
    else:
        started = time.time()
        sp.fit_store(store, tasks=list(pairs), progress=progress, checkpoint=folder.path / "probing_checkpoint.pt")
        timings["probing_s"] = round(time.time() - started, 1)
        folder.tensor("probes.pt", sp.state_dict())
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
    folder.csv("mask_probes.csv", [
        {"task": task, "lam": lam, "layer": layer, "density": round(float(sp.mask_density_[li, s, ti]), 5),
         "accuracy": round(float(sp.mask_accuracy_[li, s, ti]), 5),
         "dense_accuracy": round(float(sp.dense_accuracy_[s, ti]), 5)}
        for ti, task in enumerate(sp.tasks_) for li, lam in enumerate(lams) for s, layer in enumerate(layers)
    ])
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


# --------------------------------------------------------------------------- figures


def mask_figure(sp: SparseProbing, layers: list[int]) -> Figure:
    """Paper S Fig. 2: per λ, the fraction of neurons used and the accuracy relative to the dense probe."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    dense = sp.dense_accuracy_.mean(-1)
    for li, lam in enumerate(sp.lams_.tolist()):
        ax1.plot(layers, sp.mask_density_[li].mean(-1).numpy(), marker=".", label=f"λ={lam:g}")
        ax2.plot(layers, (sp.mask_accuracy_[li].mean(-1) / dense).numpy(), marker=".", label=f"λ={lam:g}")
    ax1.set(xlabel="layer", ylabel="fraction of neurons used", title="mask density")
    ax2.set(xlabel="layer", ylabel="accuracy / dense accuracy", title="mask probe accuracy")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def topk_figure(sp: SparseProbing, layers: list[int]) -> Figure:
    """Paper S Fig. 3: accuracy of top-k (Welch t) probes against k, one line per layer."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    cmap = plt.get_cmap("viridis")
    for s, layer in enumerate(layers):
        ax.plot(sp.ks_, sp.topk_accuracy_[:, s].mean(-1).numpy(), color=cmap(s / max(1, len(layers) - 1)),
                label=f"layer {layer}" if s in (0, len(layers) - 1) else None)
    ax.set(xscale="log", xlabel="k (top |t| neurons)", ylabel="accuracy", title="top-k probes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def spearman_figure(sp: SparseProbing, layers: list[int]) -> Figure:
    """Paper S Fig. 4: Spearman correlation of learned mask values with |t|, per layer and λ."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for li, lam in enumerate(sp.lams_.tolist()):
        ax.plot(layers, sp.spearman_[li].nanmean(-1).numpy(), marker=".", label=f"λ={lam:g}")
    ax.set(xlabel="layer", ylabel="Spearman ρ (mask, |t|)", title="agreement of the selections")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def random_figure(sp: SparseProbing, layers: list[int]) -> Figure:
    """Paper S Fig. 5: the top-1% probe against probes on k random neurons from the complement."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    cmap = plt.get_cmap("viridis")
    for s, layer in enumerate(layers):
        colour = cmap(s / max(1, len(layers) - 1))
        ax.plot(sp.random_ks_, sp.random_accuracy_[:, :, s].mean((1, 2)).numpy(), color=colour,
                label=f"layer {layer}" if s in (0, len(layers) - 1) else None)
        ax.axhline(float(sp.top_reference_accuracy_[s].mean()), color=colour, linestyle=":", linewidth=0.8)
    ax.set(xscale="log", xlabel="k random neurons", ylabel="accuracy",
           title=f"random-k (lines) vs top-{sp.top_k_} (dotted)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def cross_task_figure(sp: SparseProbing, layers: list[int], phenomena: dict[str, str] | None = None) -> Figure:
    """Paper S Fig. 6: train task × test task accuracy of the sparse probe, and sparse − dense.

    With ``phenomena`` the tasks are grouped by phenomenon (lines between groups, group names on the axes);
    up to 12 tasks are labelled one by one."""
    label = (lambda i: phenomena.get(sp.tasks_[i], "")) if phenomena else (lambda i: "")
    order = sorted(range(len(sp.tasks_)), key=lambda i: (label(i), i))
    groups: list[tuple[str, int, int]] = []  # (phenomenon, first row, end row)
    if phenomena:
        for name, rows in itertools.groupby(range(len(order)), key=lambda row: label(order[row])):
            rows = list(rows)
            groups.append((name, rows[0], rows[-1] + 1))
    idx = torch.tensor(order)
    sparse, diff = sp.cross_task_[idx][:, idx], sp.cross_task_diff_[idx][:, idx]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 6))
    im = ax1.imshow(sparse.numpy(), vmin=0, vmax=1, cmap="viridis")
    fig.colorbar(im, ax=ax1, fraction=0.046)
    lim = max(0.05, float(diff.abs().max()))
    im2 = ax2.imshow(diff.numpy(), vmin=-lim, vmax=lim, cmap="RdBu")
    fig.colorbar(im2, ax=ax2, fraction=0.046)
    ax1.set(title=f"sparse probe (λ={sp.cross_lam:g}, layer {layers[sp.cross_layer_]})", xlabel="test task", ylabel="train task")
    ax2.set(title="sparse − dense (λ=1)", xlabel="test task", ylabel="train task")
    for ax in (ax1, ax2):
        if len(order) <= 12:
            names = [sp.tasks_[i] for i in order]
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
            ax.set_yticks(range(len(names)), names, fontsize=6)
        elif groups:
            centres = [(start + end - 1) / 2 for _, start, end in groups]
            ax.set_xticks(centres, [g[0] for g in groups], rotation=90, fontsize=6)
            ax.set_yticks(centres, [g[0] for g in groups], fontsize=6)
        for _, start, _ in groups[1:]:
            ax.axhline(start - 0.5, color="0.3", linewidth=0.6)
            ax.axvline(start - 0.5, color="0.3", linewidth=0.6)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``sparse-probing`` subcommand."""
    parser.add_argument("--model", default="gemma-3-270m", help="embedded model or any TransformerLens name")
    parser.add_argument("--preset", default="paper", help="demo | paper")
    parser.add_argument("--tasks", nargs="+", default=None, help="BLiMP tasks (default: the preset's; paper: all 67)")
    parser.add_argument("--n-pairs", type=int, default=None, help="pairs per task (default: all 1,000)")
    parser.add_argument("--layers", type=int, nargs="+", default=None)
    parser.add_argument("--lams", type=float, nargs="+", default=None, help="λ values in (0, 1] of the mask probes")
    parser.add_argument("--ks", type=int, nargs="+", default=None, help="k values of the top-k probes")
    parser.add_argument("--n-random", type=int, default=None, help="random draws per k")
    parser.add_argument("--cross-layer", type=int, default=None)
    parser.add_argument("--cross-lam", type=float, default=None)
    parser.add_argument("--steps", type=int, default=None, help="Adam steps per probe")
    parser.add_argument("--store", default=None, help="activation store folder (default: <out>/activations)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--quiet", action="store_true")


def main(args: argparse.Namespace) -> None:
    """Run the ``sparse-probing`` subcommand and print where the results are."""
    from lensneurons.models import load_model

    cfg = RunConfig.preset(
        args.preset, model=args.model, tasks=args.tasks, n_pairs=args.n_pairs, layers=args.layers, lams=args.lams,
        ks=args.ks, n_random=args.n_random, cross_layer=args.cross_layer, cross_lam=args.cross_lam,
        steps=args.steps, store=args.store,
    )
    started = time.time()
    model = load_model(cfg.model, device=args.device)
    result = run(model, cfg, args.out, progress=not args.quiet)
    print("\nlayer  λ      density  accuracy  dense")
    for row in result["summary"]["per_layer"]:
        print(f"{row['layer']:>5}  {row['lam']:<5g}  {row['density']:.3f}    {row['accuracy']:.3f}     "
              f"{row['dense_accuracy']:.3f}")
    print(f"\nResults, tables and figures are in {result['out']}/ ({time.time() - started:.0f} s)")
