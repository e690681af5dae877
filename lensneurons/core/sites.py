"""Named neuron sites and their TransformerLens hook points."""
from __future__ import annotations

from lensneurons.core.models import HookedModel
from lensneurons.core.units import check_site, unit_space  # noqa: F401  (check_site: re-exported)

try:  # TransformerLens 3 moved it; 2.x has it in utils
    from transformer_lens.utilities import get_act_name
except ImportError:
    from transformer_lens.utils import get_act_name

# site -> TransformerLens activation name (see transformer_lens.utils.get_act_name)
SITES = {
    "mlp": "post",  # blocks.{l}.mlp.hook_post: MLP hidden activation after the non-linearity (d_mlp)
    "mlp_pre": "pre",  # blocks.{l}.mlp.hook_pre: before the non-linearity (d_mlp)
    "resid": "resid_post",  # blocks.{l}.hook_resid_post: residual stream after the block (d_model)
}


def hook_name(site: str, layer: int) -> str:
    """The TransformerLens hook name of a one-hook site (``mlp``, ``mlp_pre``, ``resid``) at `layer`."""
    if site not in SITES:
        check_site(site)
        raise ValueError(f"site {site!r} is not a single TransformerLens hook point; this needs one of {sorted(SITES)}")
    return get_act_name(SITES[site], layer)


def site_width(model: HookedModel, site: str) -> int:
    """Units per layer at `site` (any unit space, see `lensneurons.core.units`); errors if the model lacks it."""
    return unit_space(model, site).width


def check_layers(model: HookedModel, layers: int | list[int] | range | None) -> list[int]:
    """Normalise a layer selection (None = all layers); negative indices count from the end."""
    n = model.cfg.n_layers
    if layers is None:
        return list(range(n))
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"layers must be whole numbers, got {layer!r} ({type(layer).__name__}) in {layers!r}")
        if not -n <= layer < n:
            raise ValueError(f"layer {layer} is out of range for a model with {n} layers (0..{n - 1})")
        out.append(layer % n)
    if not out:
        raise ValueError("no layers selected")
    if len(set(out)) != len(out):
        raise ValueError(f"layers contain duplicates: {list(layers)}")
    return out
