"""Figures of the sparse-probing study (paper S Fig. 2–6) from a fitted `SparseProbing`."""
from __future__ import annotations

import itertools

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lensneurons.lenses.grammar.analysis import SparseProbing  # noqa: E402



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
