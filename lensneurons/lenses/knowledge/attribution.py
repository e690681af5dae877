"""Integrated gradients over MLP neurons at the answer position (Dai et al. 2022, paper K).

For a prompt x and its answer y, neuron i of layer l gets

    Attr_i = (a_i - b_i) · ∫_0^1 ∂P(y | x; a_l ← b + α (a - b)) / ∂a_i dα,

where a is layer l's MLP activation (`blocks.{l}.mlp.hook_post`) at the answer position and b the
baseline. The integral is a midpoint Riemann sum over `steps` values of α, evaluated as one batch.

How it is computed: one clean forward pass caches the residual stream entering every requested block
(`blocks.{l}.hook_resid_pre`) and the activations at the answer position, and one pass over the prompt's
earlier positions stores their keys and values. Layer l's steps then start at block l from the cached
residual stream, so the blocks before l are never recomputed; they run only the positions from the
answer position on (the earlier positions cannot see an edit at the answer position, so their keys and
values are reused); and the final norm and the unembedding are applied to the answer positions only
(Gemma's vocabulary has 262k entries). The steps of all layers run as one batch that grows block by
block (layer l's rows join at block l), so each block and the unembedding run once per batch instead of
once per layer: on Gemma-3-270M that is 1.6× faster with the same scores.

Answer scoring (`scoring`):
- ``"joint"`` (default): P(answer) = Π_j P(t_j | prompt, t_<j) over the answer's tokens t_1..t_n with teacher
  forcing (the prompt is followed by t_1..t_{n-1}); the neurons are scaled at the last prompt position only.
  For a one-token answer this is the next-token probability.
- ``"first"``: the probability of the answer's first token.
- ``"single"``: like ``"first"``, but the answer must be exactly one token (Dai et al.'s setting); anything
  else is a ValueError.

Masked LMs (`HookedEncoder`, BERT; Dai et al.'s and paper K's setting): the prompt holds one mask token
where the answer goes and P(answer) is the probability of the answer's token at the mask (``"single"``,
or ``"first"`` for the first token of a longer answer; ``"joint"`` needs a causal LM). Attention there is
bidirectional, so the steps run every position from block l on; the blocks before l are still not rerun.

Baselines: ``"zero"`` (the paper's), or a per-neuron table such as `mean_activations` over reference texts.

Completeness: the attributions of a layer sum to P(x) - P(x with layer l at its baseline) up to the
quadrature error. Each result carries that check per layer and a `CompletenessWarning` is raised when the
relative error exceeds `tolerance`. Models with a norm after the MLP (Gemma-2/3) break it for the zero
baseline: scaling all of a layer's activations together barely changes the normalised MLP output until
α is tiny, so a uniform grid misses the change. Remedies offered here: a mean baseline, steps
concentrated near α = 0 (`alpha_power` > 1), and per-neuron paths (`mode="neuron"`).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedEncoder

from lensneurons.core.activations import collect, pad_id, right_pad, tokenize
from lensneurons.core.models import HookedModel, is_bridge
from lensneurons.core.neurons import NeuronSet
from lensneurons.core.results import load_state, save_state
from lensneurons.core.sites import check_layers, get_act_name, hook_name, site_width
from lensneurons.core.stats import MeanVar

try:  # TransformerLens 3
    from transformer_lens import TransformerLensKeyValueCache, TransformerLensKeyValueCacheEntry
    from transformer_lens.utilities import apply_softcap
except ImportError:  # 2.x: the same key-value cache under its old names (not tested here); no soft-cap helper
    from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCache as TransformerLensKeyValueCache
    from transformer_lens.past_key_value_caching import (
        HookedTransformerKeyValueCacheEntry as TransformerLensKeyValueCacheEntry,
    )

    def apply_softcap(x, cap):
        return x if not cap else cap * torch.tanh(x / cap)

SCORINGS = ("joint", "first", "single")
MODES = ("layer", "neuron")
BASELINES = ("zero", "mean")


class CompletenessWarning(UserWarning):
    """A layer's attributions do not add up to P(x) - P(baseline)."""


@dataclass(frozen=True)
class Query:
    """A prompt and answer as the model sees them."""

    tokens: Int[Tensor, "batch pos"]  # batch = 1: the prompt (+ all answer tokens but the last for "joint")
    position: int  # the answer position: the last prompt token, where the neurons are scaled
    targets: Int[Tensor, "k"]  # scored tokens, predicted at position, position + 1, ...


@dataclass
class Attribution:
    """IG attributions of one prompt. Rows of layers that were not requested are 0 (NaN in diagnostics)."""

    scores: Float[Tensor, "layer neuron"]
    layers: list[int]
    prob: float  # P(answer | prompt), as defined by the scoring
    baseline_prob: Float[Tensor, "layer"]  # P(answer) with layer l at its baseline ("layer" mode)
    completeness_error: Float[Tensor, "layer"]  # |Σ_i Attr_i - (P - P_baseline)| / max(|P - P_baseline|, 1e-3 P)
    steps: int
    mode: str

    def state_dict(self) -> dict:
        """Tensors and plain values (`torch.load(..., weights_only=True)` reads them back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> Attribution:
        return cls(**state)

    def save(self, path: str | os.PathLike) -> None:
        save_state(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Attribution:
        return cls.from_state_dict(load_state(path))

    def to_frame(self):
        """One row per neuron of the attributed layers: layer, neuron, attribution (a pandas DataFrame)."""
        import pandas as pd

        width = self.scores.shape[1]
        return pd.DataFrame({"layer": [layer for layer in self.layers for _ in range(width)],
                             "neuron": list(range(width)) * len(self.layers),
                             "attribution": self.scores[self.layers].flatten().tolist()})

    def top(self, k: int) -> NeuronSet:
        """The k neurons of largest attribution (site "mlp"), numbered by the model's layers."""
        return NeuronSet.top_k("mlp", self.scores, k)


# inputs ---------------------------------------------------------------------------------------


def encode(model: HookedModel, prompt: str, answer: str | int, scoring: str = "joint") -> Query:
    """Tokenise a prompt and its answer for `scoring` (see the module docstring)."""
    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; expected one of {SCORINGS}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    answer_ids = _answer_ids(model, answer, scoring)
    if isinstance(model, HookedEncoder):
        return _encode_masked(model, prompt, answer_ids, scoring)
    prompt_ids = tokenize(model, [prompt])[0]
    n_prompt = len(model.tokenizer(prompt, add_special_tokens=False)["input_ids"]) + model.cfg.default_prepend_bos
    if n_prompt > len(prompt_ids):  # tokenize cut it to the context: the answer position would be wrong
        raise ValueError(f"the prompt needs {n_prompt} tokens, more than the model's context ({model.cfg.n_ctx})")
    if scoring == "joint":
        ids, targets = prompt_ids + answer_ids[:-1], answer_ids
    else:
        ids, targets = prompt_ids, answer_ids[:1]
    if len(ids) > model.cfg.n_ctx:
        raise ValueError(f"prompt and answer need {len(ids)} tokens, more than the context ({model.cfg.n_ctx})")
    return Query(
        torch.tensor([ids], device=model.cfg.device),
        len(prompt_ids) - 1,
        torch.tensor(targets, device=model.cfg.device),
    )


def right_padded(model: HookedModel, queries: Sequence[Query]) -> Int[Tensor, "batch pos"]:
    """The queries' tokens as one batch, padded on the right. In a causal LM padding after a prompt cannot
    reach it, so each row's positions see what they see alone (a masked LM would need an attention mask)."""
    if not queries:
        raise ValueError("no queries to batch")
    tokens, _ = right_pad([q.tokens[0].tolist() for q in queries], pad_id(model), model.cfg.device)
    return tokens


def _encode_masked(model: HookedEncoder, prompt: str, answer_ids: list[int], scoring: str) -> Query:
    if scoring == "joint":
        raise ValueError(
            "scoring='joint' scores an answer token by token after the prompt, which needs a causal LM; "
            "a masked LM scores the answer's token at the mask: use scoring='single' (Dai et al.) or 'first'"
        )
    mask = model.tokenizer.mask_token
    if prompt.count(mask) != 1:
        raise ValueError(
            f"a masked-LM prompt needs exactly one {mask} where the answer goes, found {prompt.count(mask)} "
            f"in {prompt!r}"
        )
    ids = model.tokenizer(prompt)["input_ids"]
    if len(ids) > model.cfg.n_ctx:
        raise ValueError(f"the prompt needs {len(ids)} tokens, more than the context ({model.cfg.n_ctx})")
    device = model.cfg.device
    return Query(torch.tensor([ids], device=device), ids.index(model.tokenizer.mask_token_id),
                 torch.tensor(answer_ids[:1], device=device))


def _answer_ids(model: HookedModel, answer: str | int, scoring: str) -> list[int]:
    if isinstance(answer, bool):
        raise ValueError(f"answer must be a string or a token id, got {answer!r}")
    if isinstance(answer, int):
        if not 0 <= answer < model.cfg.d_vocab:
            raise ValueError(f"answer token id {answer} is not in the vocabulary (0..{model.cfg.d_vocab - 1})")
        answer_ids = [answer]
    else:
        if not answer:
            raise ValueError("answer is empty")
        answer_ids = model.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not answer_ids:
            raise ValueError(f"answer {answer!r} has no tokens")
        if any(not 0 <= t < model.cfg.d_vocab for t in answer_ids):
            raise ValueError(f"answer {answer!r} has token ids outside the model's vocabulary ({model.cfg.d_vocab})")
        if scoring == "single" and len(answer_ids) != 1:
            raise ValueError(
                f"answer {answer!r} is not a single token in the vocabulary (it tokenises to {answer_ids}); "
                "use scoring='joint' or 'first' for multi-token answers"
            )
    return answer_ids


def mean_activations(
    model: HookedModel, texts: Sequence[str], pooling: str = "last", batch_size: int = 16
) -> Float[Tensor, "layer neuron"]:
    """Per-neuron mean MLP activation over reference texts, for the mean baseline.

    `pooling="last"` averages each text's last-token activation: the position that predicts the next
    token, like the answer position (and it keeps BOS, whose activations are often outliers, out).
    For a masked LM the texts are masked prompts and the mean is taken at their mask tokens.
    """
    if isinstance(model, HookedEncoder):
        return _mask_position_means(model, texts)
    (mv,) = collect(model, list(texts), [MeanVar()], site="mlp", pooling=pooling, batch_size=batch_size,
                    progress=False)
    return mv.mean.float()


def _mask_position_means(model: HookedEncoder, texts: Sequence[str]) -> Tensor:
    if not texts:
        raise ValueError("mean_activations needs at least one reference text")
    total = torch.zeros(model.cfg.n_layers, site_width(model, "mlp"), dtype=torch.float64)
    for text in texts:
        # the answer is irrelevant here: only the activations at the mask are used
        query = encode(model, text, model.tokenizer.mask_token_id, "single")
        _, acts, _ = _clean_pass(model, query, list(range(model.cfg.n_layers)))
        total += torch.stack([acts[layer].double().cpu() for layer in range(model.cfg.n_layers)])
    return (total / len(texts)).float()


def quadrature(steps: int, alpha_power: float | int = 1.0) -> tuple[Float[Tensor, "step"], Float[Tensor, "step"]]:
    """Nodes α and weights w with Σ_k w_k f(α_k) ≈ ∫_0^1 f(α) dα.

    Midpoint rule in u with α = u^alpha_power: power 1 is the uniform grid; a larger power puts more
    steps near α = 0 (weights carry the Jacobian alpha_power · u^(alpha_power - 1)).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not alpha_power >= 1.0:
        raise ValueError(f"alpha_power must be >= 1, got {alpha_power}")
    u = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    return (u**alpha_power).float(), (alpha_power * u ** (alpha_power - 1) / steps).float()


def final_resid(model: HookedModel, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
    """The residual stream after the last block (no unembedding)."""
    if isinstance(model, HookedEncoder):
        return model.encoder_output(tokens)
    if is_bridge(model):
        return _bridge_final_resid(model, tokens)
    return model(tokens, stop_at_layer=model.cfg.n_layers)


def _bridge_final_resid(model, tokens: Tensor, hooks=()) -> Tensor:
    """A `TransformerBridge` runs the Hugging Face forward whole (it cannot stop at a layer): the residual
    stream after the last block is read by a hook on the way (the logits are computed and dropped)."""
    out = {}

    def keep(x, hook):
        out["resid"] = x

    with model.hooks(fwd_hooks=[*hooks, (get_act_name("resid_post", model.cfg.n_layers - 1), keep)]):
        model(tokens)
    return out["resid"]


def answer_logits(
    model: HookedModel, resid: Float[Tensor, "batch pos d_model"], query: Query
) -> Float[Tensor, "batch k vocab"]:
    """Logits at the scored positions from the residual stream after the last block: the final norm (or
    the MLM head) and the unembedding are applied to those positions only."""
    r = resid[:, query.position : query.position + len(query.targets)]
    if isinstance(model, HookedEncoder):
        return model.unembed(model.mlm_head(r))
    if model.cfg.normalization_type is not None:
        r = model.ln_final(r)
    return apply_softcap(model.unembed(r), model.cfg.output_logits_soft_cap)


def answer_logprob(
    model: HookedModel, resid: Float[Tensor, "batch pos d_model"], query: Query
) -> Float[Tensor, "batch"]:
    """log P(answer) from the residual stream after the last block (see `answer_logits`)."""
    k = len(query.targets)
    logp = answer_logits(model, resid, query).float().log_softmax(-1)
    return logp[:, torch.arange(k, device=logp.device), query.targets].sum(-1)


def batch_answer_logits(
    model: HookedModel, final: Float[Tensor, "batch pos d_model"], queries: Sequence[Query]
) -> tuple[Float[Tensor, "scored vocab"], Int[Tensor, "scored"], Int[Tensor, "scored"]]:
    """Logits at every scored position of a right-padded batch (row i = queries[i]), all through one final
    norm and unembedding (with a 262k vocabulary one product per row is costly); also which query each
    scored position belongs to and its target token."""
    owner = torch.cat([torch.full((len(q.targets),), i) for i, q in enumerate(queries)])
    at = torch.cat([torch.arange(q.position, q.position + len(q.targets)) for q in queries])
    targets = torch.cat([q.targets.cpu() for q in queries])
    logits = answer_logits(model, final[owner, at][:, None], Query(queries[0].tokens, 0, targets[:1]))[:, 0]
    return logits, owner, targets


# attribution ---------------------------------------------------------------------------------


def _baseline_table(model: HookedModel, baseline, reference_texts: Sequence[str] | None = None) -> Tensor:
    width = site_width(model, "mlp")
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(
                f"unknown baseline {baseline!r}; expected 'zero', 'mean' (with reference_texts) or a (layer, "
                "neuron) tensor of per-neuron values, e.g. mean_activations(model, reference_texts)"
            )
        if baseline == "mean":
            if not reference_texts:
                raise ValueError("baseline='mean' needs reference_texts: the texts each neuron's activation is "
                                 "averaged over (mean_activations(model, reference_texts))")
            return mean_activations(model, reference_texts)
        return torch.zeros(model.cfg.n_layers, width)
    if tuple(baseline.shape) != (model.cfg.n_layers, width):
        raise ValueError(f"baseline table has shape {tuple(baseline.shape)}, expected ({model.cfg.n_layers}, {width})")
    return baseline.detach().float()


@contextmanager
def _frozen(model: HookedModel):
    """No parameter gradients (they are never needed and cost memory); restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _clean_pass(model: HookedModel, query: Query, layers: list[int]):
    resid: dict[int, Tensor] = {}
    acts: dict[int, Tensor] = {}

    def save_resid(layer):
        def hook(x, hook):
            resid[layer] = x.detach().clone()

        return hook

    def save_act(layer):
        def hook(x, hook):
            acts[layer] = x[0, query.position].detach().clone()

        return hook

    hooks = [(get_act_name("resid_pre", layer), save_resid(layer)) for layer in layers]
    hooks += [(hook_name("mlp", layer), save_act(layer)) for layer in layers]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        final = final_resid(model, query.tokens)
        prob = float(answer_logprob(model, final, query).exp())
    return resid, acts, prob


def _rows(mode: str, width: int, steps: int, alpha_power: float):
    """(alpha, weight, neuron) per row; neuron = -1 scales the whole layer. One α = 0 row per path gives
    P(baseline) for the completeness check (weight 0)."""
    alphas, weights = quadrature(steps, alpha_power)
    alphas, weights = torch.cat([alphas, torch.zeros(1)]), torch.cat([weights, torch.zeros(1)])
    if mode == "layer":
        return alphas, weights, torch.full((steps + 1,), -1)
    neurons = torch.arange(width).repeat_interleave(steps + 1)
    return alphas.repeat(width), weights.repeat(width), neurons


def _scaled_inputs(a: Tensor, b: Tensor, alphas: Tensor, neurons: Tensor) -> Tensor:
    x = a.expand(len(alphas), -1).clone()
    whole = neurons < 0
    if whole.any():
        x[whole] = b + alphas[whole, None] * (a - b)
    rows = torch.nonzero(~whole).flatten()
    if len(rows):
        i = neurons[rows]
        x[rows, i] = b[i] + alphas[rows] * (a[i] - b[i])
    return x


def _prefix_cache(model: HookedModel, resid0: Tensor, position: int):
    """Keys and values of every layer for the positions before the answer position. Edits at the answer
    position cannot reach them (causal attention), so every step can reuse them."""
    if position == 0 or isinstance(model, HookedEncoder):  # bidirectional attention: nothing to reuse
        return None
    if is_bridge(model):  # its blocks cannot be run one by one over a TransformerLens cache
        return None
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 1)
    with torch.no_grad():
        model(resid0[:, :position], start_at_layer=0, stop_at_layer=model.cfg.n_layers, past_kv_cache=cache)
    cache.freeze()
    return cache


def _expand_entry(entry, rows: int):
    if entry is None:
        return None
    return TransformerLensKeyValueCacheEntry(
        entry.past_keys.expand(rows, -1, -1, -1), entry.past_values.expand(rows, -1, -1, -1), frozen=True
    )


def _final_resid_edited(
    model: HookedModel, resid: dict[int, Tensor], query: Query, entries: list[tuple[int, Tensor]], cache
) -> tuple[Tensor, Query]:
    """The residual stream after the last block for every row of the (layer, x) entries (distinct layers,
    ascending), where a row of x replaces its layer's activations at the answer position; and the query
    that scores it.

    The rows run as one batch that grows block by block: the rows of layer l join at block l, starting from
    the clean residual stream entering it, so every block runs once for all rows that have reached it.
    Causal LMs run only the positions from the answer position on, over the cached keys and values of the
    earlier positions; masked LMs run every position (attention sees both ways). A `TransformerBridge` cannot
    start at a block, so each layer's rows run a whole forward pass from the tokens."""
    if is_bridge(model):  # whole forward passes from the tokens, one per layer's rows
        parts = [_bridge_final_resid(model, query.tokens.expand(len(x), -1),
                                     [(hook_name("mlp", layer), _replacing(x, 0, query.position))])
                 for layer, x in entries]
        return torch.cat(parts), query
    encoder = isinstance(model, HookedEncoder)
    first = 0 if encoder else query.position  # the positions that are run
    at = query.position - first  # the answer position among them
    joining = dict(entries)

    h = None
    for layer in range(min(joining), model.cfg.n_layers):
        hooks = []
        if layer in joining:
            x = joining[layer]
            n_before = 0 if h is None else len(h)
            fresh = resid[layer][:, first:].expand(len(x), -1, -1)
            h = fresh if h is None else torch.cat([h, fresh])
            hooks = [(hook_name("mlp", layer), _replacing(x, n_before, at))]
        block = model.blocks[layer]
        with model.hooks(fwd_hooks=hooks):
            if encoder:
                h = block(h)
            else:
                entry = cache.entries[layer] if cache is not None else None
                h = block(h, past_kv_cache_entry=_expand_entry(entry, len(h)))
    return h, _at_position(query, at)


def _replacing(x: Tensor, n_before: int, at: int):
    """A hook that puts row i of `x` at position `at` of row n_before + i (the rows before stay as they are)."""
    def hook(act, hook):
        rows = torch.cat([act[n_before:, :at], x[:, None].to(act.dtype), act[n_before:, at + 1 :]], dim=1)
        return torch.cat([act[:n_before], rows])

    return hook


def _at_position(query: Query, position: int) -> Query:
    return Query(query.tokens, position, query.targets)


def _groups(layers: list[int], n_rows: int, batch_size: int):
    """Every layer's n_rows rows cut into groups of at most batch_size rows, in order: lists of
    (layer, row slice), each layer at most once per group."""
    group, free = [], batch_size
    for layer in layers:
        start = 0
        while start < n_rows:
            take = min(free, n_rows - start)
            group.append((layer, slice(start, start + take)))
            start, free = start + take, free - take
            if free == 0:
                yield group
                group, free = [], batch_size
    if group:
        yield group


def integrated_gradients(
    model: HookedModel,
    prompt: str,
    answer: str | int,
    layers: int | Sequence[int] | None = None,
    steps: int = 20,
    baseline: str | Float[Tensor, "layer neuron"] = "zero",
    scoring: str = "joint",
    mode: str = "layer",
    alpha_power: float | int = 1.0,
    batch_size: int = 512,
    tolerance: float | int = 0.1,
    warn: bool = True,
    reference_texts: Sequence[str] | None = None,
) -> Attribution:
    """IG attribution of every MLP neuron at the answer position (see the module docstring).

    baseline: ``"zero"``, ``"mean"`` (each neuron's mean over ``reference_texts``; computing it once with
    `mean_activations` and passing the table is cheaper for many prompts), or a (layer, neuron) table.

    mode: ``"layer"`` scales all of a layer's neurons together (Dai et al.; completeness holds per layer);
    ``"neuron"`` follows a separate path for each neuron, the others kept at their value (width × steps
    rows per layer; completeness holds per neuron). batch_size: rows (steps of any layers) run together
    through the blocks, the unembedding and back; the default holds every layer's steps of "layer" mode
    for an 18-layer model at 20 steps. Few large products are much faster than many small ones (the
    unembedding of a 262k vocabulary is most of the work); peak memory grows by about
    13 × batch_size × d_vocab bytes (1.7 GB for Gemma-3 at 512). tolerance: relative completeness
    error above which a `CompletenessWarning` is raised (when `warn`).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    width = site_width(model, "mlp")
    layers = check_layers(model, layers)
    table = _baseline_table(model, baseline, reference_texts).to(model.cfg.device)
    query = encode(model, prompt, answer, scoring)
    alphas, weights, neurons = _rows(mode, width, steps, alpha_power)
    alphas, weights, neurons = (t.to(model.cfg.device) for t in (alphas, weights, neurons))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    resid, acts, prob = _clean_pass(model, query, sorted(set(layers) | {0}))
    cache = _prefix_cache(model, resid[0], query.position)
    grad_sum = {layer: torch.zeros(width, device=model.cfg.device) for layer in layers}
    probs = {layer: torch.empty(len(alphas), device=model.cfg.device) for layer in layers}
    with _frozen(model), torch.enable_grad():
        for group in _groups(sorted(layers), len(alphas), batch_size):
            xs = [
                _scaled_inputs(acts[layer].float(), table[layer], alphas[sl], neurons[sl]).requires_grad_(True)
                for layer, sl in group
            ]
            final, scored = _final_resid_edited(model, resid, query, [(lay, x) for (lay, _), x in zip(group, xs)], cache)
            p = answer_logprob(model, final, scored).exp()
            grads = torch.autograd.grad(p.sum(), xs)
            for (layer, sl), g, p_rows in zip(group, grads, p.detach().split([len(x) for x in xs])):
                w = weights[sl, None] * g
                if mode == "neuron":  # only the scaled neuron's derivative belongs to its path
                    w = torch.zeros_like(w).scatter_(1, neurons[sl, None], w.gather(1, neurons[sl, None]))
                grad_sum[layer] += w.sum(0)
                probs[layer][sl] = p_rows

    scores = torch.zeros(model.cfg.n_layers, width)
    base_prob = torch.full((model.cfg.n_layers,), float("nan"))
    error = torch.full((model.cfg.n_layers,), float("nan"))
    for layer in layers:
        a, b = acts[layer].float(), table[layer]
        scores[layer] = ((a - b) * grad_sum[layer]).cpu()
        at_baseline = probs[layer][weights == 0]  # one per path
        expected = prob - at_baseline
        if mode == "layer":
            base_prob[layer] = float(at_baseline[0])
            err = (scores[layer].sum() - expected[0].cpu()).abs()
            error[layer] = float(err / max(abs(float(expected[0])), 1e-3 * prob))
        else:
            err = (scores[layer] - expected.cpu()).abs().sum()
            error[layer] = float(err / max(float(expected.abs().sum()), 1e-3 * prob))
    result = Attribution(scores, layers, prob, base_prob, error, steps, mode)
    bad = [layer for layer in layers if error[layer] > tolerance]
    if warn and bad:
        worst = max(bad, key=lambda layer: float(error[layer]))
        detail = (
            f"attributions sum to {float(scores[worst].sum()):.4g}, P(x) - P(baseline) = "
            f"{prob - float(base_prob[worst]):.4g}" if mode == "layer" else "per-neuron paths"
        )
        warnings.warn(
            f"integrated gradients for {prompt!r} → {answer!r}: completeness error above {tolerance:.0%} at "
            f"layers {bad} (worst: layer {worst}, {float(error[worst]):.1%}; {detail}). "
            "More steps help if the error shrinks with steps; if not, the model may normalise after its MLP "
            "(post-MLP norm, Gemma-2/3) and a mean baseline (baseline='mean' with reference_texts, or "
            "baseline=mean_activations(model, texts)), alpha_power > 1 or mode='neuron' is needed.",
            CompletenessWarning,
            stacklevel=2,
        )
    return result


def integrated_gradients_naive(
    model: HookedModel,
    prompt: str,
    answer: str | int,
    layers: int | Sequence[int] | None = None,
    steps: int = 20,
    baseline: str | Float[Tensor, "layer neuron"] = "zero",
    scoring: str = "joint",
    alpha_power: float | int = 1.0,
    batch_size: int | None = None,
) -> Float[Tensor, "layer neuron"]:
    """The straightforward computation (as in Dai et al.'s code), for benchmarks and checks: one layer at a
    time, a full forward pass from the tokens with logits at every position, and a full backward, for every
    batch of steps. Same scores as `integrated_gradients(mode="layer")`, slower."""
    width = site_width(model, "mlp")
    layers = check_layers(model, layers)
    table = _baseline_table(model, baseline).to(model.cfg.device)
    query = encode(model, prompt, answer, scoring)
    alphas, weights = (t.to(model.cfg.device) for t in quadrature(steps, alpha_power))
    batch_size = steps if batch_size is None else batch_size
    k = len(query.targets)
    _, acts, _ = _clean_pass(model, query, layers)
    scores = torch.zeros(model.cfg.n_layers, width)
    for layer in layers:
        a, b = acts[layer].float(), table[layer]
        grad_sum = torch.zeros(width, device=a.device)
        for start in range(0, steps, batch_size):
            al = alphas[start : start + batch_size]
            x = (b + al[:, None] * (a - b)).requires_grad_(True)

            def replace(act, hook, x=x):
                act = act.clone()
                act[:, query.position] = x
                return act

            logits = model.run_with_hooks(
                query.tokens.expand(len(al), -1), fwd_hooks=[(hook_name("mlp", layer), replace)]
            )
            logp = logits.log_softmax(-1)[:, query.position : query.position + k]
            p = logp[:, torch.arange(k), query.targets].sum(-1).exp()
            p.sum().backward()
            grad_sum += (weights[start : start + batch_size, None] * x.grad).sum(0)
        model.zero_grad(set_to_none=True)
        scores[layer] = ((a - b) * grad_sum).cpu()
    return scores
