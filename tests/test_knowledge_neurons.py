import json
import warnings

import pytest
import torch

from lensneurons.lenses.knowledge.analysis import KnowledgeNeurons, answer_prob, refine, summarise
from lensneurons.lenses.knowledge.attribution import (
    CompletenessWarning,
    encode,
    integrated_gradients,
    integrated_gradients_naive,
    mean_activations,
    quadrature,
)
from lensneurons.core.models import toy_model
from lensneurons.core.neurons import NeuronSet
from lensneurons.core.patching import patched, scale
from lensneurons.core.sites import hook_name

PROMPT, ANSWER = "the cat sat on the m", "at"


@pytest.fixture(scope="module")
def model():
    return toy_model(n_layers=3, d_model=16, d_mlp=24, seed=1)


@pytest.fixture(scope="module")
def postnorm_model():
    return toy_model(n_layers=2, d_model=16, d_mlp=24, post_mlp_norm=True, seed=2)


def reference_prob(model, tokens, position, targets, layer=None, values=None):
    """P(answer) from the model's full logits, with layer's activations at `position` set to `values`."""
    hooks = []
    if layer is not None:
        def hook(act, hook):
            act = act.clone()
            act[:, position] = values
            return act

        hooks = [(hook_name("mlp", layer), hook)]
    with torch.set_grad_enabled(values is not None and values.requires_grad):
        logits = model.run_with_hooks(tokens.expand(len(values) if values is not None else 1, -1), fwd_hooks=hooks)
    logp = torch.log_softmax(logits, -1)
    rows = torch.arange(position, position + len(targets))
    return logp[:, rows, targets].sum(-1).exp()


def reference_ig(model, prompt, answer, layer, steps, baseline=None, scoring="joint"):
    """Per-step loop: full forward with full logits and backward for each α (midpoint rule)."""
    q = encode(model, prompt, answer, scoring)
    _, cache = model.run_with_cache(q.tokens, names_filter=[hook_name("mlp", layer)])
    a = cache[hook_name("mlp", layer)][0, q.position]
    b = torch.zeros_like(a) if baseline is None else baseline
    total = torch.zeros_like(a)
    for k in range(steps):
        x = (b + (k + 0.5) / steps * (a - b)).detach().requires_grad_(True)
        p = reference_prob(model, q.tokens, q.position, q.targets, layer, x[None])
        (g,) = torch.autograd.grad(p.sum(), x)
        total += g / steps
    return (a - b) * total


# attribution -----------------------------------------------------------------------------------


def test_fast_ig_matches_per_step_full_forward_reference(model):
    fast = integrated_gradients(model, PROMPT, ANSWER, steps=8)
    for layer in range(model.cfg.n_layers):
        ref = reference_ig(model, PROMPT, ANSWER, layer, steps=8)
        rel = (fast.scores[layer] - ref).abs().max() / ref.abs().max()
        assert rel <= 1e-4, (layer, float(rel))


def test_naive_batched_ig_matches_fast(model):
    base = torch.randn(model.cfg.n_layers, model.cfg.d_mlp) * 0.1
    fast = integrated_gradients(model, PROMPT, ANSWER, steps=10, baseline=base, batch_size=4)
    naive = integrated_gradients_naive(model, PROMPT, ANSWER, steps=10, baseline=base, batch_size=3)
    rel = (fast.scores - naive).abs().max() / naive.abs().max()
    assert rel <= 1e-4


@pytest.mark.parametrize("mode", ["layer", "neuron"])
def test_rows_batched_across_layers_give_each_layers_own_scores(model, mode):
    """Groups that mix layers (rows join at their own block) and groups that cut a layer's rows apart give
    the scores of each layer computed alone."""
    steps = 4
    alone = {layer: integrated_gradients(model, PROMPT, ANSWER, layers=[layer], steps=steps, mode=mode,
                                         batch_size=10_000, warn=False) for layer in (0, 2)}
    for batch_size in (1, 3, 7, 10_000):
        both = integrated_gradients(model, PROMPT, ANSWER, layers=[2, 0], steps=steps, mode=mode,
                                    batch_size=batch_size, warn=False)
        for layer, r in alone.items():
            torch.testing.assert_close(both.scores[layer], r.scores[layer], rtol=1e-5, atol=1e-9)
            torch.testing.assert_close(both.completeness_error[layer], r.completeness_error[layer], rtol=0, atol=1e-5)
        assert both.scores[1].abs().sum() == 0


def test_fast_ig_on_gemma_like_toy_matches_naive():
    """Rotary positions, a sliding window shorter than the prompt, grouped-query attention, QK norm, gated MLP
    and post-norms: the reused keys and values of earlier positions must give the full forward's scores."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from lensneurons.core.models import byte_tokenizer

    tok = byte_tokenizer()
    cfg = HookedTransformerConfig(
        n_layers=3, d_model=16, d_head=8, n_heads=2, n_key_value_heads=1, d_mlp=24, d_vocab=len(tok), n_ctx=64,
        act_fn="gelu_pytorch_tanh", gated_mlp=True, normalization_type="RMS", use_normalization_before_and_after=True,
        positional_embedding_type="rotary", rotary_dim=8, use_local_attn=True,
        attn_types=["local", "global", "local"], window_size=4, use_qk_norm=True, seed=3, device="cpu",
    )
    gemma_like = HookedTransformer(cfg, tokenizer=tok, default_padding_side="right").eval()
    for answer, scoring in (("at", "joint"), ("a", "single")):
        fast = integrated_gradients(gemma_like, PROMPT, answer, steps=6, scoring=scoring, warn=False)
        naive = integrated_gradients_naive(gemma_like, PROMPT, answer, steps=6, scoring=scoring)
        assert (fast.scores - naive).abs().max() / naive.abs().max() <= 1e-4
        ref = reference_ig(gemma_like, PROMPT, answer, 1, steps=6, scoring=scoring)
        assert (fast.scores[1] - ref).abs().max() / ref.abs().max() <= 1e-4


def test_completeness_error_shrinks_with_steps(model):
    errors = []
    for steps in (2, 8, 32):
        r = integrated_gradients(model, PROMPT, ANSWER, steps=steps, warn=False)
        # independent P(x) and P(baseline) from full forward passes
        q = encode(model, PROMPT, ANSWER)
        p_x = reference_prob(model, q.tokens, q.position, q.targets)[0]
        assert r.prob == pytest.approx(float(p_x), rel=1e-5)
        errs = []
        for layer in range(model.cfg.n_layers):
            p_b = reference_prob(model, q.tokens, q.position, q.targets, layer, torch.zeros(1, model.cfg.d_mlp))[0]
            assert float(r.baseline_prob[layer]) == pytest.approx(float(p_b), rel=1e-4)
            gap = abs(float(p_x - p_b))
            errs.append(abs(float(r.scores[layer].sum() - (p_x - p_b))) / gap)
            # the reported error uses the fast path's P(x) and P(baseline); the full-forward ones differ from them
            # by float32 rounding, and that difference (over the gap) bounds how far the two errors may differ
            slack = (abs(r.prob - float(p_x)) + abs(float(r.baseline_prob[layer] - p_b))) / gap
            assert abs(errs[-1] - float(r.completeness_error[layer])) <= 1e-3 * errs[-1] + slack + 1e-6, layer
        errors.append(max(errs))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 1e-3


def test_mean_baseline_completeness(model):
    base = mean_activations(model, ["a short text", "another one here", "xyz"])
    assert base.shape == (model.cfg.n_layers, model.cfg.d_mlp)
    r = integrated_gradients(model, PROMPT, ANSWER, steps=32, baseline=base)
    q = encode(model, PROMPT, ANSWER)
    p_x = reference_prob(model, q.tokens, q.position, q.targets)[0]
    for layer in range(model.cfg.n_layers):
        p_b = reference_prob(model, q.tokens, q.position, q.targets, layer, base[layer][None])[0]
        assert float(r.scores[layer].sum()) == pytest.approx(float(p_x - p_b), rel=1e-2, abs=1e-9)


def test_neuron_mode_matches_per_neuron_loop(model):
    layer, steps = 1, 6
    r = integrated_gradients(model, PROMPT, ANSWER, layers=[layer], steps=steps, mode="neuron", batch_size=50)
    q = encode(model, PROMPT, ANSWER)
    _, cache = model.run_with_cache(q.tokens, names_filter=[hook_name("mlp", layer)])
    a = cache[hook_name("mlp", layer)][0, q.position]
    for i in (0, 5, 23):
        total = 0.0
        for k in range(steps):
            x = a.clone().detach()
            x[i] = (k + 0.5) / steps * a[i]
            x.requires_grad_(True)
            p = reference_prob(model, q.tokens, q.position, q.targets, layer, x[None])
            (g,) = torch.autograd.grad(p.sum(), x)
            total += float(g[i]) / steps
        assert float(r.scores[layer, i]) == pytest.approx(float(a[i]) * total, rel=1e-4, abs=1e-12)
    # per-neuron completeness: Attr_i ≈ P(x) - P(x with neuron i at 0)
    assert float(r.completeness_error[layer]) < 0.05
    assert torch.all(r.scores[[0, 2]] == 0)  # layers not asked for


def test_completeness_warning_on_post_mlp_norm(postnorm_model):
    with pytest.warns(CompletenessWarning, match=r"completeness error above 10% at layers"):
        r = integrated_gradients(postnorm_model, PROMPT, ANSWER, steps=20)
    assert float(r.completeness_error.max()) > 0.5
    # steps concentrated near the baseline recover completeness
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompletenessWarning)
        near = integrated_gradients(postnorm_model, PROMPT, ANSWER, steps=20, alpha_power=3.0)
    assert float(near.completeness_error.max()) < 0.1


def test_no_warning_without_post_norm(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompletenessWarning)
        integrated_gradients(model, PROMPT, ANSWER, steps=20)


def test_quadrature_integrates_polynomials():
    for power in (1.0, 3.0):
        a, w = quadrature(200, power)
        assert float(w.sum()) == pytest.approx(1.0, rel=1e-3)
        assert float((w * a**2).sum()) == pytest.approx(1 / 3, rel=1e-3)
        assert torch.all(a[1:] > a[:-1]) and 0 < float(a[0]) and float(a[-1]) < 1


def test_scorings(model):
    q = encode(model, PROMPT, ANSWER, "joint")
    assert q.tokens.shape[1] == len(model.to_tokens(PROMPT)[0]) + len(ANSWER) - 1
    assert q.targets.tolist() == model.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    p_joint = answer_prob(model, PROMPT, ANSWER, scoring="joint")
    p_first = answer_prob(model, PROMPT, ANSWER, scoring="first")
    p_second = answer_prob(model, PROMPT + ANSWER[0], ANSWER[1], scoring="single")
    assert p_joint == pytest.approx(p_first * p_second, rel=1e-5)
    with pytest.raises(ValueError, match="not a single token"):
        encode(model, PROMPT, ANSWER, "single")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(answer=""), "answer is empty"),
        (dict(answer=10**6), "not in the vocabulary"),
        (dict(prompt="  "), "prompt must be a non-empty"),
        (dict(layers=[3]), "out of range"),
        (dict(layers=[-4]), "out of range"),
        (dict(steps=0), "steps must be"),
        (dict(baseline="median"), "unknown baseline"),
        (dict(baseline=torch.zeros(2, 24)), "baseline table has shape"),
        (dict(mode="pair"), "unknown mode"),
        (dict(scoring="sum"), "unknown scoring"),
        (dict(alpha_power=0.5), "alpha_power"),
    ],
)
def test_bad_attribution_input(model, kwargs, match):
    args = dict(prompt=PROMPT, answer=ANSWER, steps=4) | kwargs
    with pytest.raises(ValueError, match=match):
        integrated_gradients(model, args.pop("prompt"), args.pop("answer"), **args)


# refinement ------------------------------------------------------------------------------------


def test_refine_thresholds_on_hand_made_table():
    # 4 prompts, 2 layers × 3 neurons; flat ids 0..5
    a = torch.tensor([
        [[1.0, 0.25, 0.1], [0.0, -2.0, 0.5]],   # max 1.0: > 0.2 -> {0, 1, 5}
        [[0.3, 0.0, 0.0], [0.0, 0.0, 1.0]],     # max 1.0: {0, 5}
        [[2.0, 0.4, 0.0], [0.0, 0.0, 0.41]],    # max 2.0: > 0.4 -> {0, 5} (0.4 itself is not > 0.4)
        [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]],  # nothing positive: keeps none
    ])
    per_prompt, shared = refine(a, t=0.2, p=50)
    assert [s.flat.tolist() for s in per_prompt] == [[0, 1, 5], [0, 5], [0, 5], []]
    assert shared.flat.tolist() == [0, 5]  # 3 of 4 prompts ≥ 50%; neuron 1 has 1 of 4
    assert refine(a, t=0.2, p=75)[1].flat.tolist() == [0, 5]
    assert refine(a, t=0.2, p=76)[1].flat.tolist() == []
    assert refine(a, t=0.2, p=25)[1].flat.tolist() == [0, 1, 5]  # exactly 25% counts
    assert refine(a, t=0.0, p=50)[1].flat.tolist() == [0, 1, 5]  # neuron 1 > 0 in prompts 0 and 2
    assert shared.site == "mlp" and (shared.n_layers, shared.width) == (2, 3)
    assert (1, 2) in shared


@pytest.mark.parametrize("p", [0, -5, 100.5])
def test_refine_rejects_p_outside_range(p):
    with pytest.raises(ValueError, match=r"p \(percentage"):
        refine(torch.ones(2, 1, 3), t=0.2, p=p)


def test_refine_rejects_bad_t_and_empty():
    with pytest.raises(ValueError, match="t \\(attribution threshold"):
        refine(torch.ones(2, 1, 3), t=1.5, p=50)
    with pytest.raises(ValueError, match="at least one prompt"):
        refine(torch.ones(0, 1, 3), t=0.2, p=50)


def test_fit_attributions_returns_both_stages():
    tables = {"x": torch.tensor([[[1.0, 0.0]], [[1.0, 0.9]]]), "y": torch.tensor([[[0.0, 1.0]]])}
    kn = KnowledgeNeurons(t=0.5, p=100).fit_attributions(tables)
    assert kn.neurons_["x"].flat.tolist() == [0]
    assert [s.flat.tolist() for s in kn.prompt_neurons_["x"]] == [[0], [0, 1]]
    assert kn.neurons_["y"].flat.tolist() == [1]


# fit and edits ---------------------------------------------------------------------------------

CONCEPTS = {
    "mat": [("the cat sat on the m", "at"), ("a dog lay on a m", "at"), ("wipe your feet on the m", "at")],
    "sun": [("the sky has one s", "un"), ("it is hot in the s", "un")],
    "tea": [("a cup of t", "ea"), ("we drink t", "ea")],
}


@pytest.fixture(scope="module")
def fitted(model):
    return KnowledgeNeurons(steps=4, t=0.2, p=50).fit(model, CONCEPTS, progress=False)


def test_fit_matches_refine_of_attributions(model, fitted):
    assert set(fitted.neurons_) == set(CONCEPTS)
    for concept, pairs in CONCEPTS.items():
        table = fitted.attributions_[concept]
        assert table.shape == (len(pairs), model.cfg.n_layers, model.cfg.d_mlp)
        r = integrated_gradients(model, *pairs[-1], steps=4)
        torch.testing.assert_close(table[-1], r.scores)
        assert fitted.neurons_[concept] == refine(table, 0.2, 50)[1]
    assert len(fitted.neurons_["mat"]) > 0


def test_edits_touch_only_the_chosen_neurons(model, fitted):
    s = fitted.neurons_["mat"]
    tokens = encode(model, *CONCEPTS["mat"][0]).tokens
    position = tokens.shape[1] - len(CONCEPTS["mat"][0][1])  # last prompt token
    names = [hook_name("mlp", layer) for layer in range(model.cfg.n_layers)]

    def acts(edit=None, positions=None):
        out = {}

        def save(act, hook):
            out[hook.name] = act.detach().clone()

        hooks = [(n, save) for n in names]
        edits = [] if edit is None else [edit]
        with patched(model, *edits, positions=positions):
            model.run_with_hooks(tokens, fwd_hooks=hooks)
        return out

    before = acts()
    mask = s.mask()
    for kind, expect in (("suppress", lambda v: torch.zeros_like(v)), ("amplify", lambda v: 2 * v)):
        # single-layer view: the hook's own output at the chosen layer, with upstream inputs held fixed
        after = acts(fitted.edit("mat", kind), torch.tensor([position]))
        first = int(s.layers.min())
        for layer in range(first + 1):
            b, a = before[names[layer]][0], after[names[layer]][0]
            chosen = mask[layer]
            untouched = torch.ones_like(b, dtype=torch.bool)
            untouched[position, chosen] = False
            assert torch.equal(a[untouched], b[untouched])
            if layer == first:
                torch.testing.assert_close(a[position, chosen], expect(b[position, chosen]))
        if kind == "suppress":  # every chosen neuron in every layer reads 0 at the answer position
            for layer in range(model.cfg.n_layers):
                assert torch.all(after[names[layer]][0, position, mask[layer]] == 0)


def test_evaluate_rows(model, fitted):
    rows = fitted.evaluate(model, unrelated="tea", n_random=1, progress=False)
    own = [r for r in rows if r["concept"] == "mat" and r["target"] == "own" and r["edit"] == "suppress"]
    assert len(own) == len(CONCEPTS["mat"])
    for r in own:
        expected = answer_prob(model, r["prompt"], r["answer"], fitted.edit("mat", "suppress"))
        assert r["p_after"] == pytest.approx(expected)
        assert r["relative_change"] == pytest.approx((r["p_after"] - r["p_before"]) / r["p_before"])
    assert not [r for r in rows if r["concept"] == "tea" and r["target"] == "unrelated"]
    assert {r["target_concept"] for r in rows if r["concept"] == "mat" and r["target"] == "unrelated"} == {"tea"}
    randoms = {r["target_concept"] for r in rows if r["concept"] == "mat" and r["target"] == "random"}
    assert len(randoms) == 1 and "mat" not in randoms
    assert rows == fitted.evaluate(model, unrelated="tea", n_random=1, progress=False)  # random_state
    summary = summarise(rows)
    s = next(x for x in summary if (x["concept"], x["target"], x["edit"]) == ("mat", "own", "suppress"))
    assert s["n_prompts"] == 3
    assert s["mean_relative_change"] == pytest.approx(sum(r["relative_change"] for r in own) / 3)


def test_fit_resumes_from_its_attribution_cache(model, fitted, tmp_path, monkeypatch):
    import lensneurons.lenses.knowledge.analysis as kn_mod

    calls = []
    real = kn_mod.integrated_gradients
    monkeypatch.setattr(kn_mod, "integrated_gradients", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    from lensneurons.core.results import TensorCache

    cache = TensorCache(tmp_path)  # what a study hands in; the analysis itself writes no file
    first = {"mat": CONCEPTS["mat"]}
    KnowledgeNeurons(steps=4, t=0.2, p=50).fit(model, first, progress=False, cache=cache)
    assert len(calls) == len(CONCEPTS["mat"])
    # a run that stopped after the first concept: only the other concepts' prompts are attributed again
    kn = KnowledgeNeurons(steps=4, t=0.2, p=50).fit(model, CONCEPTS, progress=False, cache=TensorCache(tmp_path))
    assert len(calls) == sum(len(v) for v in CONCEPTS.values())
    for c in CONCEPTS:
        assert torch.equal(kn.attributions_[c], fitted.attributions_[c])
        assert torch.equal(kn.probs_[c], fitted.probs_[c])
        assert kn.neurons_[c] == fitted.neurons_[c]
    # other settings are other cache entries
    KnowledgeNeurons(steps=5, t=0.2, p=50).fit(model, first, progress=False, cache=cache)
    assert len(calls) == sum(len(v) for v in CONCEPTS.values()) + len(CONCEPTS["mat"])
    in_memory = {}
    KnowledgeNeurons(steps=4, t=0.2, p=50).fit(model, first, progress=False, cache=in_memory)
    assert len(in_memory) == len(CONCEPTS["mat"])
    with pytest.warns(DeprecationWarning, match="cache=<folder>"):  # a folder path still works
        KnowledgeNeurons(steps=4, t=0.2, p=50).fit(model, first, progress=False, cache=tmp_path)
    assert len(calls) == sum(len(v) for v in CONCEPTS.values()) + 2 * len(CONCEPTS["mat"])


def test_fit_bad_input(model):
    with pytest.raises(ValueError, match="prompts is empty"):
        KnowledgeNeurons().fit(model, {})
    with pytest.raises(ValueError, match="has no prompts"):
        KnowledgeNeurons().fit(model, {"x": []})
    with pytest.raises(ValueError, match=r"p \(percentage"):
        KnowledgeNeurons(p=0).fit(model, CONCEPTS)
    with pytest.raises(ValueError, match="reference_texts"):
        KnowledgeNeurons(baseline="mean").fit(model, CONCEPTS)
    with pytest.raises(ValueError, match="answer is empty"):
        KnowledgeNeurons(steps=2).fit(model, {"x": [("the cat", "")]}, progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        KnowledgeNeurons().edit("x", "suppress")


# pipeline ----------------------------------------------------------------------------------------


def test_pipeline_writes_results(model, tmp_path):
    import argparse

    from lensneurons.lenses.knowledge import study as pipe

    cfg = pipe.RunConfig(n_concepts=3, max_prompts=3, steps=3, min_correct=0.0, n_random=1, baseline="auto")
    result = pipe.run(model, cfg, tmp_path, prompts=CONCEPTS, progress=False)
    assert result["n_kept"] == 3 and result["baseline"] == "zero"
    for name in ("config.json", "neurons.json", "completeness.csv", "effects.csv", "summary.csv",
                 "layer_histogram.csv", "concept_bars.png", "change_histograms.png", "layer_histogram.png",
                 "pos_histograms.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    neurons = json.loads((tmp_path / "neurons.json").read_text())
    kn = KnowledgeNeurons(steps=3).fit(model, CONCEPTS, progress=False)
    assert neurons["concepts"]["mat"]["neurons"] == kn.neurons_["mat"].to_dict()["neurons"]
    assert neurons["unrelated"] == "tea"
    import csv
    with open(tmp_path / "knowledge_neurons.csv") as f:
        saved = list(csv.DictReader(f))
    assert [(r["concept"], int(r["layer"]), int(r["neuron"])) for r in saved] == [
        (r["concept"], r["layer"], r["neuron"]) for r in kn.rows()]
    assert [float(r["attribution"]) for r in saved] == pytest.approx([r["attribution"] for r in kn.rows()], rel=1e-6)
    parser = argparse.ArgumentParser()
    pipe.STUDY.add_arguments(parser)
    got = pipe.STUDY.config_from_args(parser.parse_args(["--out", "x", "--p", "60", "--relations", "P36"]))
    assert got.p == 60.0 and got.relations == ["P36"] and got.n_concepts == 200  # the paper preset
    with pytest.raises(ValueError, match="answered correctly"):
        pipe.run(model, pipe.RunConfig(min_correct=1.0), tmp_path / "none", prompts={"x": [("ab", "c")] * 2},
                 progress=False)
    assert pipe.resolve_baseline(toy_model(n_layers=1, post_mlp_norm=True), "auto") == "mean"


@pytest.mark.filterwarnings("ignore::lensneurons.lenses.knowledge.attribution.CompletenessWarning")  # 3 steps are coarse
def test_distribution_table_splits_random_targets_by_relation():
    from lensneurons.lenses.knowledge.study import distribution

    def row(target, other, change):
        return {"concept": "P36:Japan -> Tokyo", "target": target, "target_concept": other, "edit": "suppress",
                "relative_change": change}

    rows = [row("own", "P36:Japan -> Tokyo", c) for c in (-1.0, -0.5, 0.0, 0.5, 1.0, float("nan"))]
    rows += [row("random", "P36:France -> Paris", -0.8), row("random", "P37:Lahti -> Finnish", 0.2),
             row("random", "P37:Geneva -> French", -0.1)]
    table = {r["target"]: r for r in distribution(rows)}
    assert set(table) == {"own", "random", "random, same relation", "random, other relation"}
    own = table["own"]
    assert (own["n"], own["q1"], own["median"], own["q3"], own["min"], own["max"]) == (5, -50, 0, 50, -100, 100)
    assert own["share_below_0"] == pytest.approx(0.4)
    assert table["random"]["n"] == 3 and table["random, same relation"]["median"] == pytest.approx(-80)
    assert table["random, other relation"]["median"] == pytest.approx(5)


def test_batched_top1_matches_each_prompts_own_forward(model):
    from lensneurons.lenses.knowledge.study import top1_correct

    prompts = ["the cat sat on the m", "a", "the dog ran after the ball and then the c", "hello w"]
    pairs = []
    for prompt in prompts:  # each prompt once with its own top-1 next token and once with another token
        q = encode(model, prompt, "x", "first")
        best = int(model(q.tokens)[0, -1].argmax())
        pairs += [(prompt, best), (prompt, (best + 1) % model.cfg.d_vocab)]
    assert top1_correct(model, pairs) == [True, False] * len(prompts)
    assert top1_correct(model, []) == []


def test_pipeline_resumes_from_saved_selection_and_attributions(model, tmp_path, monkeypatch):
    import lensneurons.lenses.knowledge.analysis as kn_mod
    from lensneurons.lenses.knowledge import study as pipe

    monkeypatch.setattr(pipe, "candidate_prompts", lambda cfg, mask=None: {c: list(v) for c, v in CONCEPTS.items()})
    selections, attributions = [], []
    real_select, real_ig = pipe.select, kn_mod.integrated_gradients
    monkeypatch.setattr(pipe, "select", lambda *a: selections.append(1) or real_select(*a))
    monkeypatch.setattr(kn_mod, "integrated_gradients", lambda *a, **k: attributions.append(1) or real_ig(*a, **k))
    cfg = pipe.RunConfig(n_concepts=3, max_prompts=3, steps=3, min_correct=0.0, n_random=1, baseline="zero")
    first = pipe.run(model, cfg, tmp_path, progress=False)
    n_prompts = len(attributions)
    assert selections == [1] and n_prompts == sum(len(v) for v in CONCEPTS.values())
    again = pipe.run(model, cfg, tmp_path, progress=False)
    assert selections == [1] and len(attributions) == n_prompts  # nothing recomputed
    assert again["summary"] == first["summary"]
    with pytest.raises(ValueError, match="different configuration.*n_concepts"):
        pipe.run(model, pipe.RunConfig(**{**cfg.__dict__, "n_concepts": 2}), tmp_path, progress=False)
    pipe.run(model, pipe.RunConfig(**{**cfg.__dict__, "n_concepts": 2}), tmp_path / "other", progress=False)
    assert selections == [1, 1]  # another configuration selects again


def test_fit_with_mean_baseline(model):
    refs = ["some reference text", "and another"]
    kn = KnowledgeNeurons(steps=3, baseline="mean").fit(model, {"mat": CONCEPTS["mat"][:2]}, refs, progress=False)
    table = mean_activations(model, refs)
    torch.testing.assert_close(kn.baseline_table_, table)
    r = integrated_gradients(model, *CONCEPTS["mat"][1], steps=3, baseline=table)
    torch.testing.assert_close(kn.attributions_["mat"][1], r.scores)


@pytest.mark.real_data
def test_pos_group_with_nltk_tagger():
    from lensneurons.lenses.knowledge.analysis import pos_group

    assert pos_group("The capital of Finland is Helsinki", "Helsinki") == "noun"
    assert pos_group("A bird can fly.", "fly") == "verb/adj/adv"
    assert pos_group("A bird can fly.", "swim") == "other"  # concept not in the text


def test_default_unrelated_comes_from_the_rarest_relation():
    from lensneurons.lenses.knowledge.study import default_unrelated

    kept = {"P36:Finland -> Helsinki": 0, "P103:Mozart -> German": 0, "P36:France -> Paris": 0,
            "P19:Bach -> Eisenach": 0, "P36:Peru -> Lima": 0}
    # P103 and P19 have one concept each; the later of them is chosen
    assert default_unrelated(kept) == "P19:Bach -> Eisenach"
    assert default_unrelated({"mat": 0, "tea": 0}) == "tea"  # keys without relations: the last one
    with pytest.raises(ValueError, match="no concepts"):
        default_unrelated({})


@pytest.mark.parametrize("edit_positions", ["answer", "all"])
def test_batched_answer_probs_match_one_prompt_at_a_time(model, edit_positions):
    from lensneurons.lenses.knowledge.analysis import answer_probs

    pairs = [("the cat sat on the m", "at"), ("a", "b"), ("the dog ran after the ball and then", " the"), ("hi", "x")]
    edit = scale(NeuronSet.from_pairs("mlp", model.cfg.n_layers, model.cfg.d_mlp, torch.tensor([0, 2, 2]),
                                      torch.tensor([3, 1, 7])), 2.0)
    for e in (None, edit):
        batched = answer_probs(model, pairs, e, "joint", edit_positions)
        alone = [answer_prob(model, p, a, e, "joint", edit_positions) for p, a in pairs]
        assert batched == pytest.approx(alone, rel=1e-5)
    assert answer_probs(model, pairs, edit, "joint", edit_positions) != pytest.approx(
        answer_probs(model, pairs, None, "joint", edit_positions), rel=1e-6)
