"""Figures of the corpus-neuron lens: per-neuron summary maps, SSE curves, neuron clusters."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
from jaxtyping import Float, Int
from torch import Tensor


def plot_summary_map(values: Float[Tensor, "layer neuron"], title: str = "mean length of top sentences", layers: Optional[Sequence[int]] = None):
    """Heatmap of a per-neuron summary, one row per layer (as the paper's length figure)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.4 * values.shape[0] + 1.5), layout="constrained")
    im = ax.imshow(values.double().numpy(), aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_xlabel("neuron (dimension)")
    ax.set_ylabel("layer")
    ticks = list(range(values.shape[0]))
    ax.set_yticks(ticks, [str(l) for l in (layers if layers is not None else ticks)])
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    return fig


def plot_neuron_clusters(embedding: Float[Tensor, "layer neuron 2"], labels: Int[Tensor, "layer neuron"]):
    """t-SNE map of neurons coloured by k-means cluster."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), layout="constrained")
    xy = embedding.reshape(-1, 2).numpy()
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels.reshape(-1).numpy(), cmap="tab10", s=8)
    ax.set_title("neurons by activation pattern (t-SNE, k-means colours)")
    fig.colorbar(sc, ax=ax, label="cluster")
    return fig


def plot_sse_curves(sse: Float[Tensor, "layer k"], layers: Optional[Sequence[int]] = None, relative: bool = True):
    """SSE against k, one line per layer; ``relative=True`` divides each curve by its k = 1 value."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    values = sse.double()
    if relative:
        values = values / values[:, :1].clamp(min=1e-300)
    ks = np.arange(1, values.shape[1] + 1)
    names = layers if layers is not None else range(values.shape[0])
    for row, layer in zip(values.numpy(), names):
        ax.plot(ks, row, marker="o", ms=3, label=f"layer {layer}")
    ax.set_xlabel("k (clusters of neurons)")
    ax.set_ylabel("SSE / SSE(k=1)" if relative else "SSE")
    ax.set_title("k-means of neurons' top-set embeddings")
    ax.legend()
    return fig
