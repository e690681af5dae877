"""A short next-token fine-tune on given texts, returning a copy (the input model is left untouched).

Enough to make a "before / after" pair for comparing neurons across models (paper O's
fine-tuning comparison, `lenses.corpus.analysis.neuron_vector_distances`) on a CPU: a few
optimiser steps of causal language-model loss over the texts, padding excluded.

    tuned = finetune(model, train_texts, steps=20, lr=1e-4, params="blocks")
    lm_loss(model, held_out), lm_loss(tuned, held_out)
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor
from tqdm.auto import tqdm

from lensneurons.core.activations import pad_id, right_pad, tokenize
from lensneurons.core.models import CausalModel

PARAM_SETS = ("all", "blocks")
OPTIMIZERS = ("adamw", "sgd")


def _padded(model: CausalModel, texts: list[str], max_length: int) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    return right_pad(tokenize(model, texts, max_length=max_length), pad_id(model), model.cfg.device)


def _batch_loss(model: CausalModel, tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"]) -> tuple[Tensor, Tensor]:
    """Sum of next-token negative log-likelihoods over real target tokens, and their count."""
    logits = model(tokens, attention_mask=mask.long(), return_type="logits")
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, tokens[:, 1:, None])[..., 0]
    target = mask[:, 1:]
    return (nll * target).sum(), target.sum()


def lm_loss(model: CausalModel, texts: Sequence[str], batch_size: int = 8, max_length: int = 128) -> float:
    """Mean next-token cross-entropy (nats per predicted token) of `model` on `texts`, padding excluded."""
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty")
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens, mask = _padded(model, texts[start : start + batch_size], max_length)
            s, n = _batch_loss(model, tokens, mask)
            total, count = total + float(s), count + int(n)
    if count == 0:
        raise ValueError("the texts hold no next-token targets (each needs at least two tokens with BOS)")
    return total / count


def finetune(
    model: CausalModel,
    texts: Sequence[str],
    steps: int = 10,
    lr: float = 1e-4,
    batch_size: int = 8,
    max_length: int = 128,
    params: str = "all",
    optimizer: str = "adamw",
    seed: int = 0,
    progress: bool = False,
) -> CausalModel:
    """A copy of `model` after `steps` optimiser steps of next-token loss on `texts`.

    Each step takes the next `batch_size` texts of a seeded shuffle (reshuffled after each pass).
    ``params="blocks"`` trains the transformer blocks only (embedding, unembedding and final norm
    frozen), which on Gemma-3 leaves the 262k-token embedding matrices alone: less memory and time.
    `optimizer` is ``"adamw"`` or ``"sgd"`` (no optimiser state: the least memory). The copy comes
    back in eval mode; `model` itself is not changed. `progress` shows a bar with the running loss.
    """
    if isinstance(texts, str) or not list(texts):
        raise ValueError("texts must be a non-empty list of strings")
    texts = list(texts)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if params not in PARAM_SETS:
        raise ValueError(f"params must be one of {PARAM_SETS}, got {params!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    tuned = copy.deepcopy(model)
    flags = {name: p.requires_grad for name, p in tuned.named_parameters()}
    trainable = []
    for name, p in tuned.named_parameters():
        p.requires_grad_(params == "all" or name.startswith("blocks."))
        if p.requires_grad:
            trainable.append(p)
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0) if optimizer == "adamw" else torch.optim.SGD(trainable, lr=lr)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    tuned.train()
    bar = tqdm(range(steps), desc="fine-tuning", unit="step", disable=not progress)
    with torch.enable_grad():
        for _ in bar:
            if len(order) < batch_size:
                order += rng.permutation(len(texts)).tolist()
            chunk, order = order[:batch_size], order[batch_size:]
            tokens, mask = _padded(tuned, [texts[i] for i in chunk], max_length)
            s, n = _batch_loss(tuned, tokens, mask)
            if int(n) == 0:
                continue
            opt.zero_grad(set_to_none=True)
            loss = s / n
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    for name, p in tuned.named_parameters():
        p.requires_grad_(flags[name])
        p.grad = None
    return tuned.eval()
