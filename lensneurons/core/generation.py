"""Seeded random sampling from the BOS token alone (or BOS and a prompt), many samples per batch.

Each sample has its own seed and its own `torch.Generator`, so sample i is the same text whatever
batch it runs in (up to floating-point differences of batched matrix products). Any hooks active on
the model (e.g. `lensneurons.core.patching.patched`) apply at every step.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from lensneurons.core.models import CausalModel, is_bridge

try:  # TransformerLens 3
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache as KeyValueCache
except ImportError:  # TransformerLens 2.x
    from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCache as KeyValueCache


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (lower is closer to greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] or be None, got {top_p}")


def sample_next(
    logits: Float[Tensor, "batch vocab"],
    generators: Sequence[torch.Generator],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Int[Tensor, "batch"]:
    """One token per row, drawn with that row's generator (Gumbel-max over the filtered distribution)."""
    check_sampling(temperature, top_k, top_p)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix reaching top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    uniform = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in generators]).to(logits.device)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
    return (logits + gumbel).argmax(-1)


def generate_from_bos(
    model: CausalModel,
    seeds: Sequence[int] = range(1, 101),
    max_new_tokens: int = 32,
    batch_size: int = 50,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    progress: bool = True,
    prompt: str | None = None,
) -> list[str]:
    """Texts sampled from [BOS] alone, one per seed (the language-neuron paper's protocol); with `prompt`,
    from [BOS] + the prompt, and only the continuation is returned (what a language identifier should judge)."""
    if len(seeds) == 0:
        raise ValueError("seeds is empty")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens} and {batch_size}")
    check_sampling(temperature, top_k, top_p)
    tok = model.tokenizer
    start_ids = [tok.bos_token_id] + (tok(prompt, add_special_tokens=False)["input_ids"] if prompt else [])
    if len(start_ids) + max_new_tokens > model.cfg.n_ctx:
        raise ValueError(f"the prompt ({len(start_ids)} tokens with BOS) and {max_new_tokens} new tokens exceed the "
                         f"model's context of {model.cfg.n_ctx}")
    texts: list[str] = []
    bar = tqdm(total=len(seeds) * max_new_tokens, desc="sampling", unit="tok", disable=not progress)
    for start in range(0, len(seeds), batch_size):
        chunk = list(seeds)[start : start + batch_size]
        generators = [torch.Generator().manual_seed(int(s)) for s in chunk]
        tokens = torch.tensor([start_ids] * len(chunk), dtype=torch.long, device=model.cfg.device)
        step = _decoder(model, len(chunk))
        out = []
        done = torch.zeros(len(chunk), dtype=torch.bool, device=model.cfg.device)
        with torch.inference_mode():
            for _ in range(max_new_tokens):
                logits = step(tokens)
                tokens = sample_next(logits, generators, temperature, top_k, top_p)[:, None]
                out.append(tokens)
                bar.update(len(chunk))
                done |= tokens[:, 0] == tok.eos_token_id
                if done.all():
                    break
        for row in torch.cat(out, 1).tolist():
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            texts.append(tok.decode(row, skip_special_tokens=True))
    bar.close()
    return texts


def _decoder(model, batch: int):
    """One decoding step: the logits of the last position, given the new tokens. A `HookedTransformer` keeps a
    key-value cache. A `TransformerBridge` runs the whole sequence again at every step: in TransformerLens 3.9
    with transformers 5 its bridged attention neither fills nor reads Hugging Face's cache (each new token would
    be read alone), and it ignores TransformerLens' one."""
    if is_bridge(model):
        seen: list[Tensor] = []

        def step(tokens):
            seen.append(tokens)
            return model(torch.cat(seen, 1))[:, -1]

        return step
    cache = KeyValueCache.init_cache(model.cfg, model.cfg.device, batch)
    return lambda tokens: model(tokens, past_kv_cache=cache)[:, -1]
