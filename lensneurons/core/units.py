"""Unit spaces: which activations of a block count as its units.

A unit space is an ordered list of *components* per block, each a hook point or a module whose output is
read (``attn.hook_q``, ``mlp.hook_post``, or ``attn`` for the attention module's own output), flattened and
concatenated into one unit index per layer. Everything built on `(layer, unit)` pairs (`NeuronSet`, AP
tables, top-K, probes, edits) works on any space unchanged.

Named spaces (the `site` of every analysis):

- ``mlp``, ``mlp_pre``: the MLP's hidden units after / before the non-linearity (``d_mlp``);
- ``resid``: the residual stream after the block (``d_model``);
- ``heads``: every head's ``z`` (``attn.hook_z``, ``n_heads × d_head``);
- ``linear``: every Linear output of the block, read before any non-linearity or norm, as in the language
  paper: queries, keys and values (per head, flattened; grouped-query attention has fewer key/value
  heads), the attention output projection (the attention module's output, before a post-attention norm),
  the MLP's input projections (gate and up for gated MLPs, one for ungated ones) and its output projection
  (the MLP module's output, before a post-MLP norm).

Sparse-autoencoder latents are a space too: `sae_site(model, saes)` attaches sae-lens SAEs (one per layer, all
at the same hook point) and returns their site, ``"sae:<name>"``. A latent is read by encoding the hook's
output; an edit of latents is written back by decoding with the SAE's error term kept (the hook's value
becomes ``x + decode(edited) - decode(encode(x))``), so an SAE with no edit leaves the model unchanged.

Any other site is a ``+``-joined list of block-relative hook points or module paths, e.g.
``"attn.hook_q+attn.hook_k"``; `custom_site([...])` builds one. Widths are measured on the model
(one forward of a few tokens, once per model and site), so they always match it.
"""
from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

NAMED_SPACES = ("mlp", "mlp_pre", "resid", "heads", "linear")
_SIMPLE = {"mlp": "mlp.hook_post", "mlp_pre": "mlp.hook_pre", "resid": "hook_resid_post", "heads": "attn.hook_z"}
# what each component of `linear` is, for tables and histograms per unit type
_LABELS = {"attn.hook_q": "q", "attn.hook_k": "k", "attn.hook_v": "v", "attn": "o", "mlp.hook_pre_linear": "up",
           "mlp": "down", "attn.o.hook_out": "o", "mlp.out.hook_out": "down", "mlp.hook_post": "mlp", "mlp.hook_pre": "mlp_pre", "hook_resid_post": "resid",
           "attn.hook_z": "z"}
_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


@dataclass(frozen=True)
class Component:
    """One hook point (or module output) of a block: its block-relative path, a short label and its width."""

    path: str
    label: str
    width: int
    shape: tuple[int, ...]  # the trailing shape of its output, e.g. (n_heads, d_head)


@dataclass(frozen=True)
class UnitSpace:
    """The components of `site` in one model; unit `i` of a layer lies in the component whose span holds it."""

    site: str
    components: tuple[Component, ...]
    saes: tuple[tuple[int, object], ...] = ()  # (layer, SAE) for an SAE space: its units are their latents

    @property
    def layers(self) -> list[int] | None:
        """The layers that have these units (None: every layer)."""
        return [layer for layer, _ in self.saes] if self.saes else None

    @property
    def width(self) -> int:
        return sum(c.width for c in self.components)

    @property
    def offsets(self) -> list[int]:
        out, start = [], 0
        for c in self.components:
            out.append(start)
            start += c.width
        return out

    def unit_labels(self) -> list[str]:
        """The component label of every unit of a layer (``width`` entries)."""
        return [c.label for c in self.components for _ in range(c.width)]

    def component_of(self, unit: int) -> tuple[Component, int]:
        """The component holding `unit`, and the unit's index within it."""
        if not 0 <= unit < self.width:
            raise ValueError(f"unit {unit} is out of range for site {self.site!r} ({self.width} units per layer)")
        for c, start in zip(self.components, self.offsets):
            if unit < start + c.width:
                return c, unit - start
        raise AssertionError("unreachable")


def custom_site(paths: Sequence[str]) -> str:
    """The site string of a list of block-relative hook points or module paths (``["attn.hook_q", ...]``)."""
    if isinstance(paths, str) or not paths:
        raise ValueError(f"give a non-empty list of block-relative hook names, got {paths!r}")
    return check_site("+".join(paths))


def check_site(site: str) -> str:
    """A site's spelling: a named space or ``+``-joined block-relative names (whether the model has them is
    checked by `unit_space`)."""
    if not isinstance(site, str) or not site:
        raise ValueError(f"a site is a non-empty string, got {site!r}")
    if site in NAMED_SPACES:
        return site
    if site.startswith("sae:") and _NAME.match(site[4:]):
        return site
    parts = site.split("+")
    bad = [p for p in parts if not _NAME.match(p) or p.startswith("blocks")]
    if bad or len(set(parts)) != len(parts):
        raise ValueError(
            f"unknown hook site {site!r}; expected one of {list(NAMED_SPACES)} or '+'-joined block-relative hook "
            f"names such as 'attn.hook_q+mlp.hook_post' (without 'blocks.<layer>.', no repeats)"
        )
    return site


def _component_paths(model, site: str) -> list[str]:
    if site in _SIMPLE:
        return [_SIMPLE[site]]
    if site != "linear":
        return site.split("+")
    block = model.blocks[0]
    # a TransformerBridge hooks each Linear's output (attn.o, mlp.out); in a HookedTransformer the attention and
    # MLP modules' own outputs are those of their output projections
    out = {part: f"{part}.{proj}.hook_out" if _has(block, f"{part}.{proj}.hook_out") else part
           for part, proj in (("attn", "o"), ("mlp", "out"))}
    paths = ["attn.hook_q", "attn.hook_k", "attn.hook_v", out["attn"]]
    if getattr(model.cfg, "attn_only", False) or not hasattr(block, "mlp"):
        return paths
    mlp = block.mlp
    if not hasattr(mlp, "hook_pre"):
        raise ValueError(f"site 'linear' does not know this MLP ({type(mlp).__name__}, e.g. a mixture of experts); "
                         f"name its hook points as a custom site")
    return paths + ["mlp.hook_pre"] + (["mlp.hook_pre_linear"] if hasattr(mlp, "hook_pre_linear") else []) + [out["mlp"]]


def _has(module: torch.nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def _label(model, path: str) -> str:
    if path == "mlp.hook_pre" and hasattr(model.blocks[0].mlp, "hook_pre_linear"):
        return "gate"
    if path == "mlp.hook_pre":
        return "up"
    return _LABELS.get(path, path)


_SPACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def unit_space(model, site: str) -> UnitSpace:
    """The unit space `site` in `model`, with widths measured on it (cached per model)."""
    check_site(site)
    cache = _SPACES.setdefault(model, {})
    if site not in cache:
        if site.startswith("sae:"):
            raise ValueError(f"no SAEs are attached to this model as {site!r}; attach them with "
                             f"lensneurons.core.units.sae_site(model, saes)")
        cache[site] = _measure(model, site)
    return cache[site]


def sae_site(model, saes, path: str | None = None, name: str | None = None) -> str:
    """Attach sae-lens SAEs to `model` as a unit space and return its site (``"sae:<name>"``).

    `saes` is one SAE or ``{layer: SAE}``; every SAE reads the same block-relative hook point `path`
    (default: from the SAE's ``cfg.metadata.hook_name``, e.g. ``blocks.3.hook_resid_post``). The SAEs'
    ``d_in`` must equal the hook's width and their ``d_sae`` must agree (it is the space's width)."""
    if not isinstance(saes, dict):
        hook = getattr(getattr(saes.cfg, "metadata", None), "hook_name", None)
        match = re.match(r"^blocks\.(\d+)\.(.+)$", hook or "")
        if not match:
            raise ValueError("give {layer: sae}, or an SAE whose cfg.metadata.hook_name is 'blocks.<layer>.<hook>'")
        saes, path = {int(match.group(1)): saes}, path or match.group(2)
    if not saes:
        raise ValueError("no SAEs given")
    if path is None:
        hooks = {getattr(getattr(s.cfg, "metadata", None), "hook_name", None) for s in saes.values()}
        paths = {re.sub(r"^blocks\.\d+\.", "", h) for h in hooks if h}
        if len(paths) != 1:
            raise ValueError(f"give path=: the SAEs' hook names do not name one hook point ({sorted(map(str, hooks))})")
        path = paths.pop()
    check_site(path)
    n = model.cfg.n_layers
    bad = [layer for layer in saes if not isinstance(layer, int) or not 0 <= layer < n]
    if bad:
        raise ValueError(f"SAE layers {bad} are out of range for a model with {n} layers")
    hooked = unit_space(model, path).width
    widths = {int(s.cfg.d_sae) for s in saes.values()}
    for layer, sae in saes.items():
        if int(sae.cfg.d_in) != hooked:
            raise ValueError(f"the SAE of layer {layer} reads {sae.cfg.d_in} values but 'blocks.{layer}.{path}' "
                             f"has {hooked}")
    if len(widths) != 1:
        raise ValueError(f"the SAEs have different numbers of latents ({sorted(widths)}); one space needs one width")
    site = check_site(f"sae:{name or path}")
    d_sae = widths.pop()
    space = UnitSpace(site, (Component(path, "sae", d_sae, (d_sae,)),), tuple(sorted(saes.items())))
    _SPACES.setdefault(model, {})[site] = space
    return site


def module_at(model, layer: int, path: str) -> torch.nn.Module:
    try:
        return model.get_submodule(f"blocks.{layer}.{path}")
    except AttributeError:
        names = sorted(n.split(".", 2)[2] for n, _ in model.named_modules() if n.startswith(f"blocks.{layer}.")
                       and ("hook_" in n or n.count(".") == 2))
        raise ValueError(f"this model has no hook point or module 'blocks.{layer}.{path}'; block {layer} has: "
                         f"{', '.join(names)}") from None


def _measure(model, site: str) -> UnitSpace:
    paths = _component_paths(model, site)
    if site in ("mlp", "mlp_pre") and (getattr(model.cfg, "attn_only", False) or model.cfg.d_mlp is None):
        raise ValueError(f"site {site!r} needs MLP layers, but this model is attention-only")
    n = model.cfg.n_layers
    shapes: dict[tuple[int, str], tuple[int, ...]] = {}

    n_pos = min(5, model.cfg.n_ctx)

    def record(layer, path):
        def hook(module, args, output):
            if not isinstance(output, Tensor) or output.dim() < 3 or output.shape[:2] != (1, n_pos):
                got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
                raise ValueError(f"'blocks.{layer}.{path}' does not output one tensor of shape (batch, position, "
                                 f"...), so its values cannot be units (got {got} for 1 text of {n_pos} tokens)")
            shapes[(layer, path)] = tuple(output.shape[2:])
        return hook

    handles = [module_at(model, layer, path).register_forward_hook(record(layer, path))
               for layer in range(n) for path in paths]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, n_pos, dtype=torch.long, device=model.cfg.device))
    finally:
        for h in handles:
            h.remove()
    components = []
    for path in paths:
        per_layer = {shapes.get((layer, path)) for layer in range(n)}
        if None in per_layer:
            raise ValueError(f"'blocks.<layer>.{path}' did not run in a forward pass of this model")
        if len(per_layer) != 1:
            raise ValueError(f"'{path}' has different shapes in different layers ({sorted(per_layer)}); a unit "
                             f"space needs one width per layer")
        shape = per_layer.pop()
        components.append(Component(path, _label(model, path), int(torch.Size(shape).numel()), shape))
    return UnitSpace(site, tuple(components))


# A reader gets (layer, component index, output flattened to (batch, position, width)) and returns a
# replacement of the flat output or None.
Reader = Callable[[int, int, Tensor], "Tensor | None"]


@contextmanager
def unit_hooks(model, site: str, layers: Sequence[int], reader: Reader) -> Iterator[None]:
    """Call `reader` on every component of `site` at `layers` in every forward pass inside the block (also in
    generation); a returned tensor replaces the component's output. Hooks are always removed after."""
    space = unit_space(model, site)
    saes = dict(space.saes)
    missing = [layer for layer in layers if saes and layer not in saes]
    if missing:
        raise ValueError(f"site {site!r} has SAEs at layers {space.layers} only, not at {missing}; pass layers=")
    handles = []

    def make(layer: int, index: int):
        def hook(module, args, output):
            flat = output.reshape(*output.shape[:2], -1)
            new = reader(layer, index, flat)
            return None if new is None else new.reshape(output.shape)

        def sae_hook(module, args, output):
            sae = saes[layer]
            latents = sae.encode(output)
            new = reader(layer, index, latents.clone())  # the reader may edit in place
            if new is None:
                return None
            # the SAE's error term x - decode(encode(x)) is kept: only the edit's change is added
            return output + (sae.decode(new) - sae.decode(latents)).reshape(output.shape).to(output.dtype)

        return sae_hook if saes else hook

    try:
        for layer in layers:
            for index, c in enumerate(space.components):
                handles.append(module_at(model, layer, c.path).register_forward_hook(make(layer, index)))
        yield
    finally:
        for h in handles:
            h.remove()
