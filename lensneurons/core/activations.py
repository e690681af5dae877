"""Pooled activations per text, streamed from hook points into reducers.

Nothing here builds an `ActivationCache`: a hook on each requested layer pools its activations over
the text's real tokens (padding excluded) into one row per text, and each batch of rows goes straight
to the reducers (`lensneurons.core.stats`). Texts are batched by length to keep padding low, and the forward
pass stops after the last requested layer, so the unembedding is never computed.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from lensneurons.core import distributed
from lensneurons.core.sites import check_layers
from lensneurons.core.units import unit_hooks, unit_space
from lensneurons.core.stats import Reducer, Stack
from lensneurons.core.models import CausalModel

POOLINGS = ("mean", "last", "max")


@dataclass
class TokenBatch:
    tokens: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]  # True on real tokens; padding is on the right
    ids: Int[Tensor, "batch"]  # positions of these texts in the caller's list


def check_texts(texts: Sequence[str]) -> None:
    """Refuse what is not a list of valid strings, naming what was given instead."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string (it would be read character by "
                        "character); wrap one text in a list")
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list (or other sequence) of strings, got a {type(texts).__name__}; "
                        f"pass list(texts)")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a string: {text!r:.80}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"texts[{i}] is not valid Unicode: {err.reason} at character {err.start} "
                             f"({text[max(0, err.start - 20):err.start]!r} ...)") from None


def tokenize(
    model: CausalModel,
    texts: Sequence[str],
    prepend_bos: bool | None = None,
    append_eos: bool = False,
    max_length: int | None = None,
) -> list[list[int]]:
    """Token ids per text, with BOS (the model's default) and optionally EOS; truncated to max_length (at most
    the model's context, `n_ctx`)."""
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; pass one to the HookedTransformer")
    check_texts(texts)
    prepend_bos = model.cfg.default_prepend_bos if prepend_bos is None else prepend_bos
    if max_length is not None and max_length < 1 + prepend_bos + append_eos:
        raise ValueError(f"max_length must leave at least one token of the text besides BOS/EOS (or be None for "
                         f"the model's context), got {max_length}")
    # the model reads at most its context: a longer max_length is cut to it
    max_length = model.cfg.n_ctx if max_length is None else min(max_length, model.cfg.n_ctx)
    tok = model.tokenizer
    out = []
    for ids in tok(list(texts), add_special_tokens=False)["input_ids"]:
        ids = ([tok.bos_token_id] if prepend_bos else []) + list(ids)
        if append_eos:
            ids = ids[: max_length - 1] + [tok.eos_token_id]
        out.append(ids[:max_length])
    if any(len(ids) == 0 for ids in out):
        raise ValueError("a text has no tokens (empty string without BOS); drop empty texts first")
    return out


def pad_id(model: CausalModel) -> int:
    """The id that fills padded positions: the tokenizer's pad token, else 0 (padding is masked out or, on
    the right of a causal LM's text, never seen, so its value does not matter)."""
    pad = model.tokenizer.pad_token_id if model.tokenizer is not None else None
    return 0 if pad is None else pad


def right_pad(
    token_ids: Sequence[Sequence[int]], pad: int, device: torch.device | str = "cpu"
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """Texts' token ids as one right-padded batch, and the mask of real tokens."""
    width = max(len(seq) for seq in token_ids)
    tokens = torch.full((len(token_ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.bool)
    for row, seq in enumerate(token_ids):
        tokens[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = True
    return tokens.to(device), mask.to(device)


def length_batches(
    token_ids: Sequence[Sequence[int]],
    batch_size: int,
    pad_id: int,
    ids: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
) -> Iterator[TokenBatch]:
    """Right-padded batches of texts of similar length (longest first, so peak memory shows at once)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = list(range(len(token_ids))) if ids is None else list(ids)
    order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        tokens, mask = right_pad([token_ids[i] for i in chunk], pad_id, device)
        yield TokenBatch(tokens, mask, torch.tensor([ids[i] for i in chunk], device=device))


def pool(
    acts: Float[Tensor, "batch pos neuron"], mask: Bool[Tensor, "batch pos"], how: str = "mean"
) -> Float[Tensor, "batch neuron"]:
    """Pool over the real tokens of each text: their mean, their maximum, or the last one."""
    if how == "mean":
        weights = mask.to(acts.dtype)
        return torch.einsum("bpn,bp->bn", acts, weights) / weights.sum(1, keepdim=True)
    if how == "max":
        return acts.masked_fill(~mask[..., None], float("-inf")).amax(1)
    if how == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = torch.where(mask, positions, -1).amax(1)
        return acts[torch.arange(acts.shape[0], device=acts.device), last]
    raise ValueError(f"unknown pooling {how!r}; expected one of {POOLINGS}")


def shard_range(n_texts: int, shard: tuple[int, int] | None) -> range:
    """The contiguous block of text ids that shard (i, n) owns."""
    if shard is None:
        return range(n_texts)
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    return range(i * n_texts // n, (i + 1) * n_texts // n)


def stream_pooled(
    model: CausalModel,
    texts: Sequence[str],
    site: str = "mlp",
    layers: int | Sequence[int] | None = None,
    pooling: str = "mean",
    batch_size: int = 16,
    max_length: int | None = None,
    append_eos: bool = False,
    include_bos: bool = True,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> Iterator[tuple[Int[Tensor, "batch"], Float[Tensor, "batch layer neuron"]]]:
    """Yield (text ids, pooled activations) batch by batch for this shard's texts.

    The model still reads the BOS token its config prepends; `include_bos=False` leaves that
    position out of the pooling. Its activation is the same for every text, so keeping it in a
    mean adds a constant weighted by 1 / length: short texts drift towards the BOS value.
    Under `torchrun`, a shard of None means this rank's share of the texts.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    check_texts(texts)
    space = unit_space(model, site)
    # an SAE space has units only where an SAE is attached: those layers by default
    layers = check_layers(model, space.layers if layers is None and space.layers else layers)
    width = space.width
    if len(texts) == 0:
        raise ValueError("texts is empty")
    empty = [i for i, text in enumerate(texts) if not text.strip()]
    if empty:
        raise ValueError(f"texts {empty[:10]} are empty (no word to pool); drop them first")
    if shard is None and distributed.is_active():
        shard = (distributed.rank(), distributed.world_size())
    own = shard_range(len(texts), shard)
    if len(own) == 0:
        raise ValueError(f"shard {shard} of {len(texts)} texts holds no text; use fewer shards than texts")
    token_ids = tokenize(model, [texts[i] for i in own], append_eos=append_eos, max_length=max_length)
    skip_first = not include_bos and model.cfg.default_prepend_bos
    if skip_first and any(len(ids) < 2 for ids in token_ids):
        raise ValueError("a text has no tokens besides BOS; drop empty texts or pool with include_bos=True")
    device = model.cfg.device

    current: dict[str, Tensor] = {}
    slot_of = {layer: slot for slot, layer in enumerate(layers)}
    spans = [(start, start + c.width) for c, start in zip(space.components, space.offsets)]

    def read(layer: int, index: int, act: Tensor) -> None:
        start, stop = spans[index]
        current["pooled"][:, slot_of[layer], start:stop] = pool(act, current["mask"], pooling).to(current["pooled"].dtype)

    bar = tqdm(total=len(own), desc=f"pooling {site} activations", unit="text", disable=not progress)
    for batch in length_batches(token_ids, batch_size, pad_id(model), ids=own, device=device):
        current["mask"] = batch.mask
        if skip_first:
            current["mask"] = batch.mask.clone()
            current["mask"][:, 0] = False
        current["pooled"] = torch.empty(len(batch.ids), len(layers), width, device=device)
        # inference mode only around the forward: a `with` around the loop would stay on in the caller's
        # code between yields, and the caller's tensors would become inference tensors
        with torch.inference_mode(), unit_hooks(model, site, layers, read):
            model(batch.tokens, attention_mask=batch.mask.long(), stop_at_layer=max(layers) + 1)
        bar.update(len(batch.ids))
        yield batch.ids, current["pooled"]
    bar.close()


def collect(model: CausalModel, texts: Sequence[str], reducers: Sequence[Reducer], **kwargs) -> list[Reducer]:
    """Stream pooled activations of `texts` into `reducers` (each with `update(x, ids)`).

    Keyword arguments go to `stream_pooled`. Under `torchrun` every rank reduces its shard and the
    reducers' states are merged, so each rank returns the single-process result.
    """
    reducers = list(reducers)
    for ids, pooled in stream_pooled(model, texts, **kwargs):
        _feed(reducers, pooled, ids)
    if distributed.is_active() and kwargs.get("shard") is None:
        reducers = [distributed.merge_across_ranks(r) for r in reducers]
    return reducers


def reduce_rows(
    x: Float[Tensor, "text *neuron"], reducers: Sequence[Reducer], batch_size: int = 256
) -> list[Reducer]:
    """Feed rows already in memory (one per text, ids 0..n-1) to `reducers` in batches, as `collect` would."""
    reducers = list(reducers)
    for start in range(0, x.shape[0], batch_size):
        ids = torch.arange(start, min(start + batch_size, x.shape[0]))
        _feed(reducers, x[ids], ids)
    return reducers


def _feed(reducers: list, x: Tensor, ids: Tensor) -> None:
    for reducer in reducers:
        reducer.update(x, ids)


def pooled_activations(model: CausalModel, texts: Sequence[str], **kwargs) -> Float[Tensor, "text layer neuron"]:
    """All texts' pooled activations as one tensor (text order preserved). See `stream_pooled`."""
    (stack,) = collect(model, texts, [Stack()], **kwargs)
    return stack.values
