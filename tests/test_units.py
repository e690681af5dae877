"""Unit spaces (issue 19): widths, hook points, pooling against a per-text reference, exact edits, bad input."""
import pytest
import torch

import lensneurons as ln
from lensneurons.core.models import toy_model
from lensneurons.core.neurons import NeuronSet
from lensneurons.core.units import custom_site, unit_space

TEXTS = ["the cat sat on the mat", "a dog", "où est la gare ?", "x"]


@pytest.fixture(scope="module")
def gemma_like():
    """Gated MLP, grouped-query attention (1 key/value head for 4 query heads), norms after attention and MLP."""
    return toy_model(n_layers=2, d_model=16, d_mlp=24, n_heads=4, post_mlp_norm=True, gated_mlp=True,
                     n_key_value_heads=1, seed=3)


@pytest.fixture(scope="module")
def gpt2_like():
    return toy_model(n_layers=2, d_model=16, d_mlp=24, n_heads=2, seed=4)


def test_named_spaces_have_the_papers_widths(gemma_like, gpt2_like):
    d_head = 4
    lin = unit_space(gemma_like, "linear")
    # q (4 heads) + k, v (1 head each) + o + gate + up + down, as the language paper counts a block
    assert [(c.label, c.width) for c in lin.components] == [
        ("q", 4 * d_head), ("k", d_head), ("v", d_head), ("o", 16), ("gate", 24), ("up", 24), ("down", 16)]
    assert ln.site_width(gemma_like, "linear") == 16 + 4 + 4 + 16 + 24 + 24 + 16
    assert [c.label for c in unit_space(gpt2_like, "linear").components] == ["q", "k", "v", "o", "up", "down"]
    assert ln.site_width(gpt2_like, "linear") == 3 * 16 + 16 + 24 + 16
    assert ln.site_width(gemma_like, "heads") == 4 * d_head
    assert [ln.site_width(gemma_like, s) for s in ("mlp", "mlp_pre", "resid")] == [24, 24, 16]
    attn_only = toy_model(n_layers=1, d_model=16, attn_only=True)
    assert [c.label for c in unit_space(attn_only, "linear").components] == ["q", "k", "v", "o"]
    space = unit_space(gemma_like, custom_site(["attn.hook_v", "mlp.hook_post"]))
    assert space.site == "attn.hook_v+mlp.hook_post" and space.width == 4 + 24
    assert space.component_of(5) == (space.components[1], 1)
    assert space.unit_labels()[:5] == ["v"] * 4 + ["mlp"]


def _reference(model, text, layer):
    """Each Linear output of `layer` for one unpadded text, mean over tokens: from the cache, with the
    attention and MLP output projections recomputed from their inputs (z and the MLP hidden units)."""
    _, cache = model.run_with_cache(model.to_tokens([text]))
    b = f"blocks.{layer}."
    attn, mlp = model.blocks[layer].attn, model.blocks[layer].mlp
    o = torch.einsum("bphd,hdm->bpm", cache[b + "attn.hook_z"], attn.W_O) + attn.b_O
    down = cache[b + "mlp.hook_post"] @ mlp.W_out + mlp.b_out
    parts = [cache[b + "attn.hook_q"], cache[b + "attn.hook_k"], cache[b + "attn.hook_v"], o,
             cache[b + "mlp.hook_pre"], cache[b + "mlp.hook_pre_linear"], down]
    return torch.cat([p.flatten(2) for p in parts], dim=-1)[0].mean(0)


def test_linear_pooling_equals_a_per_text_unpadded_reference(gemma_like):
    pooled = ln.pooled_activations(gemma_like, TEXTS, site="linear", batch_size=3, progress=False)
    assert pooled.shape == (4, 2, ln.site_width(gemma_like, "linear"))
    for i, text in enumerate(TEXTS):
        for layer in range(2):
            torch.testing.assert_close(pooled[i, layer], _reference(gemma_like, text, layer), atol=1e-5, rtol=1e-5)
    heads = ln.pooled_activations(gemma_like, TEXTS, site="heads", layers=[1], progress=False)
    _, cache = gemma_like.run_with_cache(gemma_like.to_tokens([TEXTS[0]]))
    torch.testing.assert_close(heads[0, 0], cache["blocks.1.attn.hook_z"][0].flatten(1).mean(0), atol=1e-5, rtol=1e-5)


def _all_linear(model, tokens, edit=None):
    """Every linear unit of every layer at every position, with `edit` applied."""
    seen = {}
    from lensneurons.core.units import unit_hooks

    def read(layer, index, act):
        seen[(layer, index)] = act.clone()

    with torch.inference_mode():
        if edit is None:
            with unit_hooks(model, "linear", [0, 1], read):
                logits = model(tokens)
        else:
            # the edit's hooks run first (registered first), the reader sees the edited values
            with ln.patched(model, edit), unit_hooks(model, "linear", [0, 1], read):
                logits = model(tokens)
    return seen, logits


@pytest.mark.parametrize("op", ["zero", "scale", "set"])
def test_edits_on_linear_units_change_only_those_units(gemma_like, op):
    space = unit_space(gemma_like, "linear")
    # layer 0: one unit in q, one in v (both computed from the block's input), one in o, one in down
    units = [2, space.offsets[2] + 1, space.offsets[3] + 5, space.offsets[6] + 7]
    neurons = NeuronSet.from_pairs("linear", 2, space.width, torch.zeros(4, dtype=torch.long), torch.tensor(units))
    edit = {"zero": ln.zero(neurons), "scale": ln.scale(neurons, 3.0), "set": ln.set_to(neurons, torch.full((4,), 2.5))}[op]
    tokens = gemma_like.to_tokens(TEXTS[:1])
    before, logits_before = _all_linear(gemma_like, tokens)
    after, logits_after = _all_linear(gemma_like, tokens, edit)
    flat = lambda seen: torch.cat([seen[(0, i)] for i in range(len(space.components))], -1)  # noqa: E731
    b, a = flat(before), flat(after)
    qkv = space.offsets[3]  # q, k and v read only the block's input: untouched ones are exactly equal
    keep = torch.ones(qkv, dtype=torch.bool)
    keep[units[:2]] = False
    assert torch.equal(a[..., :qkv][..., keep], b[..., :qkv][..., keep])
    new = {"zero": lambda x: torch.zeros_like(x), "scale": lambda x: 3.0 * x, "set": lambda x: torch.full_like(x, 2.5)}[op]
    torch.testing.assert_close(a[..., units[:2]], new(b[..., units[:2]]))
    if op != "scale":  # o and down are set after their inputs changed: only set/zero values are known
        torch.testing.assert_close(a[..., units[2:]], new(b[..., units[2:]]))
    assert not torch.equal(logits_after, logits_before)


def test_edit_exactness_per_component(gemma_like):
    """An edit of one down-projection unit: every other unit of layer 0 (all computed before or beside it)
    keeps exactly its value; only layer 1 sees the change."""
    space = unit_space(gemma_like, "linear")
    unit = space.offsets[6] + 3
    neurons = NeuronSet.from_pairs("linear", 2, space.width, torch.tensor([0]), torch.tensor([unit]))
    tokens = gemma_like.to_tokens(TEXTS[:2])
    before, _ = _all_linear(gemma_like, tokens)
    after, _ = _all_linear(gemma_like, tokens, ln.zero(neurons))
    flat = lambda seen: torch.cat([seen[(0, i)] for i in range(len(space.components))], -1)  # noqa: E731
    keep = torch.ones(space.width, dtype=torch.bool)
    keep[unit] = False
    assert torch.equal(flat(after)[..., keep], flat(before)[..., keep])
    assert flat(after)[..., unit].eq(0).all() and not flat(before)[..., unit].eq(0).all()
    assert not torch.equal(after[(1, 0)], before[(1, 0)])  # layer 1's queries see it


def test_language_neurons_and_generation_on_linear_units(gemma_like):
    from lensneurons.data.multilingual import LanguageTexts
    from lensneurons.lenses.language.analysis import SteeringConfig

    texts = LanguageTexts.from_texts({"en": ["the cat", "a dog runs", "good day"], "fr": ["le chat", "un chien", "bonjour"]})
    lang = ln.LanguageNeurons(k=5, site="linear").fit(gemma_like, texts, progress=False)
    assert lang.top_["fr"].site == "linear" and lang.top_["fr"].width == ln.site_width(gemma_like, "linear")
    out = lang.generate(gemma_like, "fr", "both", SteeringConfig(seeds=[1], max_new_tokens=4))
    assert len(out) == 1


def test_bad_sites_name_the_hook(gemma_like):
    with pytest.raises(ValueError, match="no hook point or module 'blocks.0.attn.hook_zz'"):
        unit_space(gemma_like, "attn.hook_zz")
    with pytest.raises(ValueError, match=r"does not output one tensor of shape \(batch, position"):
        unit_space(gemma_like, "attn.hook_pattern")  # (batch, head, query, key)
    with pytest.raises(ValueError, match="unknown hook site"):
        unit_space(gemma_like, "attn.hook_q+attn.hook_q")
    with pytest.raises(ValueError, match="non-empty list"):
        custom_site([])
    with pytest.raises(ValueError, match="attention-only"):
        unit_space(toy_model(n_layers=1, attn_only=True), "mlp")
    s = NeuronSet.from_pairs("linear", 2, 5, torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="does not match the model"):
        with ln.patched(gemma_like, ln.zero(s)):
            pass


def test_language_study_on_linear_units_counts_unit_types(gemma_like, tmp_path):
    import csv

    from lensneurons.data.multilingual import LanguageTexts
    from lensneurons.lenses.language.study import RunConfig, run

    paper = RunConfig.preset("paper")
    assert (paper.site, paper.max_new_tokens, paper.temperature) == ("linear", 64, 0.8)
    assert RunConfig.preset("mlp-units").site == "mlp"
    texts = LanguageTexts.from_texts({"en": ["the cat", "a dog runs", "good day"], "fr": ["le chat", "un chien", "bonjour"]})
    cfg = RunConfig(site="linear", k=6, seeds=1, max_new_tokens=3, temperature=0.8, ablation_ks=[])
    run(gemma_like, cfg, tmp_path, data=texts, progress=False)
    rows = list(csv.DictReader((tmp_path / "unit_types.csv").open()))
    for lang in ("en", "fr"):
        for group in ("top", "bottom"):
            counts = [int(r["count"]) for r in rows if r["lang"] == lang and r["group"] == group]
            assert sum(counts) == 6
    labels = {r["unit"] for r in rows}
    assert labels <= {"q", "k", "v", "o", "gate", "up", "down"}
    with pytest.raises(ValueError, match="--k must be at most half the model's units at site 'linear'"):
        run(gemma_like, RunConfig(site="linear", k=10**6), tmp_path / "other", data=texts, progress=False)


def test_corpus_neurons_on_heads_and_linear_units(gemma_like, tmp_path):
    from lensneurons.data.corpora import Corpus
    from lensneurons.lenses.corpus.report import token_activations

    texts = ["the cat sat", "a dog ran home", "le chat dort", "good film", "bad film here", "x y z"]
    for site in ("heads", "linear", "attn.hook_v+mlp.hook_post"):
        cn = ln.CorpusNeurons(k=2, n_sample=0, site=site).fit(gemma_like, Corpus(texts), progress=False)
        pooled = ln.pooled_activations(gemma_like, texts, site=site, include_bos=False, progress=False)
        # top-K against brute force on the same pooled values
        assert torch.equal(cn.top_ids_[0], pooled.topk(1, dim=0).indices[0])
        unit = ln.site_width(gemma_like, site) - 1
        tokens, values = token_activations(gemma_like, texts[0], 1, unit, site=site)
        torch.testing.assert_close(values.mean(), pooled[0, 1, unit], atol=1e-5, rtol=1e-5)
    described = cn.report(tmp_path, neurons=[(1, 0)], model=gemma_like, patterns=False)
    assert "blocks.{layer}.attn.hook_v" in (tmp_path / "neuron_L1_0.html").read_text() and described


def test_sparse_probing_on_linear_units_through_the_study(gemma_like, tmp_path):
    from lensneurons.data.blimp import MinimalPair
    from lensneurons.lenses.grammar.study import RunConfig, run

    pairs = {"t": [MinimalPair("t", f"the cat sat {i}.", f"cat the sat {i}.", i) for i in range(10)]}
    cfg = RunConfig(site="linear", lams=[1.0], ks=[2], random_ks=[2], n_random=1, steps=20, top_fraction=0.05)
    run(gemma_like, cfg, tmp_path, pairs=pairs, progress=False)
    from lensneurons.lenses.grammar.store import ActivationStore

    import json

    store = ActivationStore(tmp_path / "activations", config=json.loads((tmp_path / "activations" / "config.json").read_text()))
    acts, labels, _ = store.read("t")
    assert acts.shape[-1] == ln.site_width(gemma_like, "linear") and store.config["site"] == "linear"
    import dataclasses

    collection = dataclasses.replace(ln.SparseProbing.default_collection, site="linear")
    sp = ln.SparseProbing(lams=[1.0], ks=[2], random_ks=[2], n_random=1, steps=20, top_fraction=0.05,
                          collection=collection).fit(gemma_like, pairs, progress=False)
    top = sp.top_neurons("t", 2, layer=1)
    assert (top.site, top.width, len(top)) == ("linear", ln.site_width(gemma_like, "linear"), 2)
    with ln.patched(gemma_like, ln.zero(top)):  # a probe's units patch the model like any others
        gemma_like(gemma_like.to_tokens(["the cat sat."]))


# --------------------------------------------------------------------------- SAE latents (sae-lens)


@pytest.fixture(scope="module")
def saes(gemma_like):
    pytest.importorskip("sae_lens")
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    out = {layer: StandardSAE(StandardSAEConfig(d_in=16, d_sae=40)) for layer in (0, 1)}
    for sae in out.values():  # sae-lens starts b_dec at zero; a non-zero one exercises the decoder's bias
        with torch.no_grad():
            sae.b_dec.normal_()
    return out


def test_sae_latents_pool_like_encoding_the_cached_hook(gemma_like, saes):
    from lensneurons.core.units import sae_site

    site = sae_site(gemma_like, {1: saes[1]}, path="hook_resid_post", name="resid1")
    assert site == "sae:resid1" and ln.site_width(gemma_like, site) == 40
    pooled = ln.pooled_activations(gemma_like, TEXTS, site=site, progress=False)  # layers: the SAE's
    assert pooled.shape == (4, 1, 40)
    for i, text in enumerate(TEXTS):
        with torch.inference_mode():
            _, cache = gemma_like.run_with_cache(gemma_like.to_tokens([text]))
            want = saes[1].encode(cache["blocks.1.hook_resid_post"])[0].mean(0)
        torch.testing.assert_close(pooled[i, 0], want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"has SAEs at layers \[1\] only, not at \[0\]"):
        ln.pooled_activations(gemma_like, TEXTS, site=site, layers=[0], progress=False)


def test_sae_edits_decode_back_with_the_error_term(gemma_like, saes):
    from lensneurons.core.units import sae_site

    site = sae_site(gemma_like, saes, path="hook_resid_post", name="both")
    tokens = gemma_like.to_tokens(TEXTS[:2])
    with torch.inference_mode():
        plain = gemma_like(tokens)
        nothing = NeuronSet.from_pairs(site, 2, 40, torch.tensor([1]), torch.tensor([3]))
        with ln.patched(gemma_like, ln.scale(nothing, 1.0)):  # an edit that changes no latent: no change at all
            same = gemma_like(tokens)
        torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-5)
        # zeroing latent 3 of layer 1 moves the residual by exactly -a3 * W_dec[3] (the SAE decodes linearly)
        _, cache = gemma_like.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
        x = cache["blocks.1.hook_resid_post"]
        a3 = saes[1].encode(x)[..., 3:4]
        seen = {}
        with ln.patched(gemma_like, ln.zero(nothing)):  # a hook registered after the edit's sees its result
            handle = gemma_like.blocks[1].hook_resid_post.register_forward_hook(lambda m, a, o: seen.update(x=o.clone()))
            edited = gemma_like(tokens)
            handle.remove()
        want = x - a3 * saes[1].W_dec[3]
    torch.testing.assert_close(seen["x"], want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(edited, plain)


def test_sae_sites_refuse_mismatches(gemma_like, saes):
    from sae_lens import StandardSAE, StandardSAEConfig

    from lensneurons.core.units import sae_site

    with pytest.raises(ValueError, match=r"reads 24 values but 'blocks.0.hook_resid_post' has 16"):
        sae_site(gemma_like, {0: StandardSAE(StandardSAEConfig(d_in=24, d_sae=8))}, path="hook_resid_post")
    with pytest.raises(ValueError, match="no SAEs are attached"):
        ln.site_width(gemma_like, "sae:nothing")
    with pytest.raises(ValueError, match="out of range"):
        sae_site(gemma_like, {5: saes[0]}, path="hook_resid_post")
