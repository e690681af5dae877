"""Figures of the knowledge-neuron study (like paper K Fig. 3–8) from its summary rows."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


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
