"""Train a sparse autoencoder with sae-lens's own trainer, and measure its quality on held-out text.

`train_sae` wraps `sae_lens.LanguageModelSAETrainingRunner`: the texts become an in-memory Hugging Face
`Dataset` (``override_dataset``), the model is passed as ``override_model``, nothing is downloaded or logged
to wandb, and the SAE is saved in sae-lens's own format (``SAE.load_from_disk(out_dir)`` reads it).
`sae_quality` measures the SAE itself, independently of the training logs: explained variance, L0, dead
latents, and how much of the next-token loss survives when the SAE's reconstruction replaces the activation.

    sae, info = train_sae(model, train_texts, "blocks.6.hook_resid_post", d_sae=4096,
                          training_tokens=2_000_000, out_dir="results/sae")
    sae_quality(model, sae, "blocks.6.hook_resid_post", heldout_texts)

Both need the optional dependency sae-lens (``pip install sae-lens``).
"""
from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from lensneurons.core.models import CausalModel
from jaxtyping import Int
from torch import Tensor


def _sae_config(architecture: str, d_in: int, d_sae: int, k: int, l1_coefficient: float, l1_warm_up_steps: int):
    from sae_lens import StandardTrainingSAEConfig, TopKTrainingSAEConfig

    # "expected_average_only_in" rescales inputs to mean norm sqrt(d_in) while training (so the learning
    # rate does not depend on the model's residual scale) and folds the factor into the weights at the end.
    common = dict(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu",
                  normalize_activations="expected_average_only_in")
    if architecture == "topk":
        return TopKTrainingSAEConfig(k=k, **common)
    if architecture == "standard":
        return StandardTrainingSAEConfig(l1_coefficient=l1_coefficient, l1_warm_up_steps=l1_warm_up_steps, **common)
    raise ValueError(f"unknown architecture {architecture!r}; expected 'topk' or 'standard'")


def train_sae(
    model: CausalModel,
    texts: Sequence[str],
    hook_name: str,
    d_sae: int,
    training_tokens: int,
    out_dir: str | Path,
    *,
    architecture: Literal["topk", "standard"] = "topk",
    k: int = 32,
    l1_coefficient: float = 5.0,
    context_size: int = 128,
    train_batch_size_tokens: int = 2048,
    store_batch_size_prompts: int = 8,
    buffer_tokens: int = 65_536,
    lr: float = 3e-3,
    lr_warm_up_steps: int = 0,
    lr_decay_fraction: float = 0.2,
    dead_feature_window: int = 50,
    init_b_dec_batches: int = 8,
    n_batches_for_norm_estimate: int = 10,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Train an SAE on `hook_name` activations of `model` over `texts` with sae-lens; save it to `out_dir`.

    Texts (documents) are shuffled with `seed`, tokenized by sae-lens on the fly, concatenated with BOS
    between them and cut into `context_size`-token contexts that each start with BOS; BOS (and any other
    special token) positions are left out of training (``exclude_special_tokens=True``). If the texts hold
    fewer tokens than `training_tokens`, sae-lens goes through them again (more than one epoch).

    `architecture`: ``"topk"`` (keep the `k` largest latents per token, with sae-lens's auxiliary loss for
    dead latents) or ``"standard"`` (ReLU with an L1 penalty `l1_coefficient`, warmed up over the first 5%
    of steps). The learning rate is constant after `lr_warm_up_steps` and decays linearly to lr/10 over the
    last `lr_decay_fraction` of steps. A latent counts as dead for the top-k auxiliary loss after
    `dead_feature_window` steps without firing. `buffer_tokens` activations are kept in sae-lens's mixing
    buffer (half of it is carried over and reshuffled with each refill). The decoder bias starts at the
    mean of `init_b_dec_batches` model batches of activations (0: at zero, sae-lens's own start).

    Returns the saved SAE read back with ``SAE.load_from_disk(out_dir)`` (inference form, activation scale
    folded in) and a dict: wall time of the training run (`seconds`), `training_tokens`, `tokens_per_s`,
    and the trainer's own end-of-training `train_l0` and `train_dead_latents` (from the SAE's metadata).
    """
    from datasets import Dataset
    from sae_lens import SAE, LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig

    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("texts is empty: train_sae needs at least one non-blank text")
    if training_tokens < train_batch_size_tokens:
        raise ValueError(f"training_tokens ({training_tokens}) must be at least one batch ({train_batch_size_tokens})")
    out_dir = Path(out_dir)
    random.Random(seed).shuffle(texts)  # sae-lens reads the dataset in order; its buffer only mixes locally
    torch.manual_seed(seed)  # sae-lens does not seed the SAE's initialisation or its buffer shuffles itself

    steps = training_tokens // train_batch_size_tokens
    cfg = LanguageModelSAERunnerConfig(
        sae=_sae_config(architecture, _hook_width(model, hook_name), d_sae, k, l1_coefficient,
                        l1_warm_up_steps=max(1, steps // 20)),
        model_name=model.cfg.model_name,
        hook_name=hook_name,
        dataset_path="in-memory texts (override_dataset)",
        streaming=False,
        is_dataset_tokenized=False,
        context_size=context_size,
        prepend_bos=True,
        exclude_special_tokens=True,
        training_tokens=training_tokens,
        train_batch_size_tokens=train_batch_size_tokens,
        store_batch_size_prompts=store_batch_size_prompts,
        # sae-lens sizes its mixing buffer as n_batches_in_buffer * context_size tokens
        n_batches_in_buffer=max(1, math.ceil(max(buffer_tokens, train_batch_size_tokens) / context_size)),
        n_batches_for_norm_estimate=n_batches_for_norm_estimate,  # its default, 1,000 batches, is 4M tokens
        lr=lr,
        lr_warm_up_steps=lr_warm_up_steps,
        lr_decay_steps=int(steps * lr_decay_fraction),
        dead_feature_window=dead_feature_window,
        feature_sampling_window=max(dead_feature_window, steps),
        device="cpu",
        seed=seed,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,  # else it makes ./checkpoints/<id> in the working directory
        n_checkpoints=0,
        output_path=str(out_dir),
        verbose=False,
    )
    dataset = Dataset.from_dict({"text": texts})
    runner = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model)
    started = time.perf_counter()
    if init_b_dec_batches:
        _init_b_dec_at_mean(runner, init_b_dec_batches)
    trained = runner.run()
    seconds = time.perf_counter() - started
    sae = SAE.load_from_disk(out_dir, device="cpu")
    meta = trained.cfg.metadata
    info = {
        "seconds": seconds,
        "training_tokens": training_tokens,
        "tokens_per_s": training_tokens / seconds,
        "train_l0": getattr(meta, "l0", None),
        "train_dead_latents": getattr(meta, "num_dead_features", None),
    }
    return sae, info


@torch.no_grad()
def _init_b_dec_at_mean(runner: Any, n_batches: int) -> None:
    """Start the decoder bias at the mean activation, in the units the trainer will scale inputs to.

    sae-lens 6 starts b_dec at zero; the residual stream has a large mean that Adam at lr ~1e-4 would need
    thousands of steps to move b_dec to, so a short run would spend latents on it. The `n_batches` model
    batches read here are taken from the start of the training stream (and not trained on).
    """
    acts = torch.cat([runner.activations_store.get_filtered_llm_batch() for _ in range(n_batches)])
    scale = runner.sae.cfg.d_in**0.5 / acts.norm(dim=-1).mean()  # as "expected_average_only_in" scales them
    runner.sae.b_dec.data.copy_(acts.mean(0) * scale)


def _hook_width(model: CausalModel, hook_name: str) -> int:
    """The last dimension of the activation at `hook_name` (one forward pass on a BOS token)."""
    bos = model.tokenizer.bos_token_id
    _, cache = model.run_with_cache(torch.tensor([[bos]]), names_filter=[hook_name])
    return cache[hook_name].shape[-1]


def eval_tokens(model: CausalModel, texts: Sequence[str], context_size: int = 128) -> Int[Tensor, "seq pos"]:
    """Held-out texts as `context_size`-token rows, laid out as sae-lens lays out training contexts.

    The texts are tokenized without BOS and joined with BOS between them; the stream is cut into pieces of
    ``context_size - 1`` tokens, each given a leading BOS. The last, shorter piece is dropped.
    """
    bos = model.tokenizer.bos_token_id
    stream: list[int] = []
    for text in texts:
        ids = model.to_tokens(text, prepend_bos=False, truncate=False)[0].tolist()
        if ids:
            stream += ([bos] if stream else []) + ids
    n = context_size - 1
    rows = [[bos] + stream[i:i + n] for i in range(0, len(stream) - n + 1, n)]
    if not rows:
        raise ValueError(f"the texts hold {len(stream)} tokens, fewer than one context of {context_size}")
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def sae_quality(
    model: CausalModel,
    sae: Any,
    hook_name: str,
    texts: Sequence[str] | Int[Tensor, "seq pos"],
    batch_size: int = 4,
    context_size: int = 128,
    ce_rows: int | None = None,
) -> dict[str, float]:
    """Quality of `sae` at `hook_name` on held-out `texts` (or ready token rows from `eval_tokens`).

    Every measure is over real tokens: BOS positions (each row's first token and the BOS between texts)
    are excluded, and their activations are left as they are when the reconstruction is spliced in.

    - ``explained_variance``: 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the mean activation over those tokens.
    - ``l0``: mean number of active (non-zero) latents per token.
    - ``dead_fraction``: fraction of latents never active on these tokens.
    - ``ce_clean``, ``ce_sae``, ``ce_zero``: mean next-token loss (nats) of the model as it is, with x̂ in
      place of x at the hook, and with zeros in place of x; over predictions made at those tokens.
    - ``loss_recovered``: (ce_zero − ce_sae) / (ce_zero − ce_clean); 1 when x̂ = x, 0 when x̂ is as bad as 0.
    - ``tokens``: how many tokens were measured; ``ce_tokens``: how many of them the losses are over.

    The losses need three full forward passes per batch; `ce_rows` limits them to the first `ce_rows`
    rows (None: all), the other rows are only run up to the hook for the reconstruction measures.
    """
    tokens = texts if isinstance(texts, Tensor) else eval_tokens(model, texts, context_size)
    bos = model.tokenizer.bos_token_id
    sq_err = sum_sq = 0.0
    sum_x = None
    n_tok = 0
    active_total = 0.0
    ever_active = None
    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    n_pred = n_ce_tok = 0
    ce_rows = len(tokens) if ce_rows is None else min(ce_rows, len(tokens))
    layer = re.match(r"blocks\.(\d+)\.", hook_name)
    stop = int(layer.group(1)) + 1 if layer else None
    batches = [(lo, min(lo + batch_size, ce_rows), True) for lo in range(0, ce_rows, batch_size)]
    batches += [(lo, min(lo + batch_size, len(tokens)), False) for lo in range(ce_rows, len(tokens), batch_size)]
    for lo, hi, with_ce in batches:
        batch = tokens[lo:hi].to(model.cfg.device)
        keep = batch != bos  # [b, pos]: real tokens
        if with_ce:
            clean_loss, cache = model.run_with_cache(batch, names_filter=[hook_name], return_type="loss",
                                                     loss_per_token=True)
        else:
            _, cache = model.run_with_cache(batch, names_filter=[hook_name], stop_at_layer=stop)
        x = cache[hook_name]
        feats = sae.encode(x.to(sae.W_enc.device))
        x_hat = sae.decode(feats).to(x.dtype).to(x.device)

        xs, xh = x[keep].double(), x_hat[keep].double()
        sq_err += (xs - xh).pow(2).sum().item()
        sum_sq += xs.pow(2).sum().item()
        sum_x = xs.sum(0) if sum_x is None else sum_x + xs.sum(0)
        n_tok += len(xs)
        active = feats[keep.to(feats.device)] > 0
        active_total += active.sum().item()
        ever_active = active.any(0) if ever_active is None else ever_active | active.any(0)
        if not with_ce:
            continue

        def splice(replacement):
            def hook(act, hook):  # noqa: ARG001
                return torch.where(keep[..., None], replacement, act)
            return model.run_with_hooks(batch, fwd_hooks=[(hook_name, hook)], return_type="loss",
                                        loss_per_token=True)

        pred = keep[:, :-1]  # loss_per_token[:, i] is the prediction made at position i
        ce["clean"] += clean_loss[pred].sum().item()
        ce["sae"] += splice(x_hat)[pred].sum().item()
        ce["zero"] += splice(torch.zeros_like(x))[pred].sum().item()
        n_pred += pred.sum().item()
        n_ce_tok += keep.sum().item()
    if n_tok == 0:
        raise ValueError("the texts hold no token other than BOS")
    total_var = sum_sq - sum_x.pow(2).sum().item() / n_tok
    ce = {name: v / n_pred if n_pred else float("nan") for name, v in ce.items()}
    return {
        "explained_variance": 1.0 - sq_err / total_var,
        "l0": active_total / n_tok,
        "dead_fraction": 1.0 - ever_active.double().mean().item(),
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero": ce["zero"],
        "loss_recovered": (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]),
        "tokens": float(n_tok),
        "ce_tokens": float(n_ce_tok),
    }
