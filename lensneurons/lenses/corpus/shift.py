"""How far each sentence's neuron vector moves between two models (paper O step 5: before and after a fine-tune)."""
from __future__ import annotations

from collections.abc import Sequence

from jaxtyping import Float
from torch import Tensor

from lensneurons.core.activations import pooled_activations
from lensneurons.core.sites import check_layers, check_site
from lensneurons.core.models import CausalModel


def vector_distances(
    a: Float[Tensor, "text *neuron"], b: Float[Tensor, "text_b *neuron_b"]
) -> tuple[Float[Tensor, "text"], Float[Tensor, "text"]]:
    """Manhattan (L1) and Euclidean (L2) distance between row i of `a` and row i of `b` (all trailing dims flattened)."""
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    diff = (a.double() - b.double()).reshape(a.shape[0], -1)
    return diff.abs().sum(1), diff.square().sum(1).sqrt()


def neuron_vector_distances(
    model_a: CausalModel,
    model_b: CausalModel,
    groups: dict[str, Sequence[str]],
    site: str = "resid",
    layers: int | Sequence[int] | None = None,
    batch_size: int = 16,
    max_length: int = 128,
    include_bos: bool = False,
    progress: bool = False,
    per_sentence: bool = False,
) -> dict[str, dict]:
    """How far each sentence's full neuron vector moves between two models, per sentence group.

    A sentence's vector is its mean-pooled activation at `site` in every one of `layers` (default
    all), concatenated (n_layers × width values). For each group (e.g. ``{"train": ...,
    "held_out": ..., "out_of_domain": ...}``) the result holds the mean Manhattan and Euclidean
    distance between the two models' vectors over its sentences, their standard deviations and n;
    `relative_euclidean`, the mean of ||a - b|| / ||a|| (a: model_a's vector), which does not grow
    with the vectors' scale (mean-pooled vectors of short sentences are larger); and
    `euclidean_by_layer`, the mean Euclidean distance within each layer's part of the vector. With
    `per_sentence`, `per_sentence` holds each sentence's three distances (for tests between groups).
    The models must share the architecture's shape and the tokenizer (e.g. a model and its fine-tune).
    """
    check_site(site)
    for attr in ("n_layers", "d_model", "d_vocab"):
        if getattr(model_a.cfg, attr) != getattr(model_b.cfg, attr):
            raise ValueError(f"the models differ in {attr}: {getattr(model_a.cfg, attr)} vs {getattr(model_b.cfg, attr)}")
    if model_a.tokenizer is None or model_b.tokenizer is None or model_a.tokenizer.get_vocab() != model_b.tokenizer.get_vocab():
        raise ValueError("the models must share one tokenizer: the same sentence has to be read as the same tokens")
    if not groups:
        raise ValueError("groups is empty: give at least one named list of sentences")
    layers = check_layers(model_a, layers if layers is None or isinstance(layers, int) else list(layers))
    out = {}
    for name, texts in groups.items():
        texts = list(texts)
        if not texts:
            raise ValueError(f"sentence group {name!r} is empty")
        kw = dict(site=site, layers=layers, pooling="mean", batch_size=batch_size, include_bos=include_bos,
                  max_length=min(max_length, model_a.cfg.n_ctx), progress=progress)
        a = pooled_activations(model_a, texts, **kw).cpu()  # (text, layer, neuron)
        b = pooled_activations(model_b, texts, **kw).cpu()
        l1, l2 = vector_distances(a, b)
        by_layer = (a.double() - b.double()).norm(dim=-1).mean(0)
        relative = l2 / a.double().reshape(len(texts), -1).norm(dim=1)
        several = len(texts) > 1
        out[name] = {
            "manhattan": float(l1.mean()), "euclidean": float(l2.mean()),
            "manhattan_std": float(l1.std()) if several else 0.0,
            "euclidean_std": float(l2.std()) if several else 0.0,
            "relative_euclidean": float(relative.mean()),
            "relative_euclidean_std": float(relative.std()) if several else 0.0,
            "euclidean_by_layer": [float(v) for v in by_layer],
            "n": len(texts),
        }
        if per_sentence:
            out[name]["per_sentence"] = {"manhattan": l1.tolist(), "euclidean": l2.tolist(),
                                         "relative_euclidean": relative.tolist()}
    return out
