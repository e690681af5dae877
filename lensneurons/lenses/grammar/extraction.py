"""EOS states of BLiMP sentences into an `ActivationStore`, one chunk per task (paper S's extraction stage)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from lensneurons.core.activations import pooled_activations
from lensneurons.core.models import CausalModel, weights_digest
from lensneurons.core.sites import check_layers, site_width
from lensneurons.data.blimp import MinimalPair, sentences
from lensneurons.lenses.grammar.store import ActivationStore


def eos_states(
    model: CausalModel,
    texts: Sequence[str],
    layers: int | Sequence[int] | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    progress: bool = False,
    site: str = "resid",
) -> Float[Tensor, "text layer neuron"]:
    """The units of `site` (default ``blocks.{l}.hook_resid_post``) at an EOS token appended to each text, for
    every requested layer."""
    return pooled_activations(
        model, list(texts), site=site, layers=layers, pooling="last", append_eos=True,
        batch_size=batch_size, max_length=max_length, progress=progress,
    )


def store_config(model: CausalModel, layers: Sequence[int], site: str = "resid") -> dict:
    config = {
        "kind": "eos_resid_post", "model": model.cfg.model_name, "weights": weights_digest(model),
        "layers": list(layers), "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model,
    }
    if site != "resid":
        config.update(kind="eos_units", site=site, width=site_width(model, site))
    return config


def extract_to_store(
    model: CausalModel,
    pairs: Mapping[str, Sequence[MinimalPair]],
    store: ActivationStore | str | os.PathLike,
    layers: int | Sequence[int] | None = None,
    batch_size: int = 32,
    progress: bool = True,
    site: str = "resid",
) -> ActivationStore:
    """EOS states of every task's sentences into ``store`` (one chunk per task), skipping finished tasks.

    The store is marked complete after the last task; an interrupted run resumes where it stopped.
    """
    layers = check_layers(model, layers)
    if not isinstance(store, ActivationStore):
        store = ActivationStore(store, config=store_config(model, layers, site))
    tasks = list(pairs)
    for task in tqdm(tasks, desc="EOS states", unit="task", disable=not progress):
        if store.has(task):
            n_stored = store.read(task)[1].shape[0]
            if n_stored != 2 * len(pairs[task]):
                raise ValueError(
                    f"activation store {store.path} holds {n_stored // 2} pairs of task {task!r} but "
                    f"{len(pairs[task])} were asked for; use another store folder"
                )
            continue
        texts, labels, pair_index = sentences(pairs[task])
        acts = eos_states(model, texts, layers=layers, batch_size=batch_size, site=site)
        store.write(task, acts, labels, pair_index)
    if not store.is_complete(tasks):
        store.mark_complete(tasks)
    return store
