"""Figures that mirror the papers'. Each function takes results and returns a matplotlib Figure."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

GROUP_COLOURS = {"top": "tab:red", "middle": "tab:grey", "bottom": "tab:blue"}


def _grid(n: int, width: float = 3.2, height: float = 2.6):
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def layer_histograms(hists: Mapping[str, Mapping[str, Tensor]]) -> Figure:
    """Per language, how many top / middle / bottom neurons each layer holds (paper L, Fig. 2)."""
    fig, axes = _grid(len(hists))
    for ax, (lang, groups) in zip(axes, hists.items()):
        for group, counts in groups.items():
            ax.plot(range(len(counts)), counts.numpy(), marker=".", label=group, color=GROUP_COLOURS.get(group))
        ax.set_title(lang)
        ax.set_xlabel("layer")
        ax.set_ylabel("neurons")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def overlap_table(matrix: Tensor, names: Sequence[str], title: str = "shared language neurons") -> Figure:
    """Heat map of |A ∩ B| between the languages' neuron sets, with the counts written in."""
    m = matrix.numpy()
    fig, ax = plt.subplots(figsize=(1 + 0.7 * len(names), 0.8 + 0.6 * len(names)))
    ax.imshow(np.log1p(m), cmap="Blues")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def activation_distributions(splits: Mapping[str, Mapping[str, tuple[Tensor, Tensor]]]) -> Figure:
    """Per language: mean activation of its top (and bottom) neurons on target vs other texts."""
    fig, axes = _grid(len(splits))
    for ax, (lang, groups) in zip(axes, splits.items()):
        for group, (on, off) in groups.items():
            colour = GROUP_COLOURS.get(group)
            bins = np.linspace(float(min(on.min(), off.min())), float(max(on.max(), off.max())), 40)
            ax.hist(on.numpy(), bins=bins, alpha=0.6, color=colour, label=f"{group}: {lang} texts")
            ax.hist(off.numpy(), bins=bins, alpha=0.6, color=colour, histtype="step", label=f"{group}: others")
        ax.set_title(lang)
        ax.set_xlabel("mean activation over the neuron set")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def steering_bars(rates: Mapping[str, Mapping[str, float]], conditions: Sequence[str]) -> Figure:
    """Share of generations in the target language per language and intervention (paper L, Table 2)."""
    langs = list(rates)
    x = np.arange(len(langs) + 1)
    width = 0.8 / len(conditions)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(x), 3))
    for i, cond in enumerate(conditions):
        vals = [100 * rates[lang][cond] for lang in langs]
        ax.bar(x + i * width, vals + [float(np.mean(vals))], width, label=cond)
    ax.set_xticks(x + width * (len(conditions) - 1) / 2, langs + ["avg"])
    ax.set_ylabel("% in target language")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncols=len(conditions))
    fig.tight_layout()
    return fig


def ablation_curves(rows: Sequence[Mapping]) -> Figure:
    """Target-language rate and BLEU-4 against log10 k (paper L, Fig. 5)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    for lang in sorted({r["lang"] for r in rows}):
        mine = sorted((r for r in rows if r["lang"] == lang), key=lambda r: r["k"])
        ks = np.log10([r["k"] for r in mine])
        a.plot(ks, [100 * r["rate"] for r in mine], marker=".", label=lang)
        b.plot(ks, [r["bleu"] for r in mine], marker=".", label=lang)
    a.set(xlabel="log10 k", ylabel="% in target language", ylim=(0, 100))
    b.set(xlabel="log10 k", ylabel="BLEU-4 of target-language texts")
    a.legend(fontsize=7)
    fig.tight_layout()
    return fig


