"""The atlas's per-layer overview: how many units of each layer each lens singles out."""
from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lensneurons.atlas.cards import Thresholds, dominant_labels  # noqa: E402


def overview(cards: list[dict], n_layers: int, th: Thresholds = Thresholds()):
    """Four bar charts over layers: language-set members, knowledge neurons, units with a large |t| on some
    BLiMP task, units whose top sentences one metadata label dominates."""
    panels = {
        "in a language's top/bottom set": lambda c: bool((c.get("language") or {}).get("sets")),
        "in a knowledge-neuron set": lambda c: bool((c.get("knowledge") or {}).get("facts")),
        f"|t| ≥ {th.t:g} on a BLiMP task": lambda c: ((c.get("grammar") or {}).get("max_abs_t") or 0) >= th.t,
        f"top sentences ≥ {th.share:.0%} one label": lambda c: bool(dominant_labels(c.get("corpus"), th)),
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), sharex=True)
    for ax, (title, test) in zip(axes, panels.items()):
        counts = [0] * n_layers
        for c in cards:
            counts[c["layer"]] += test(c)
        ax.bar(range(n_layers), counts, color="#b58900")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[0].set_ylabel("units")
    fig.tight_layout()
    return fig
