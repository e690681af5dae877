"""Paper K on masked LMs: integrated gradients, edits and the pipeline on a tiny random BERT (`HookedEncoder`)."""
import pytest
import torch

from lensneurons.lenses.knowledge.analysis import KnowledgeNeurons, answer_prob
from lensneurons.lenses.knowledge.attribution import encode, integrated_gradients, integrated_gradients_naive, mean_activations
from lensneurons.core.models import toy_masked_model
from lensneurons.core.neurons import NeuronSet
from lensneurons.core.patching import zero
from lensneurons.core.sites import hook_name

PROMPT = "the capital of france is [MASK] ."
CONCEPTS = {
    "paris": [("the capital of france is [MASK] .", "paris"), ("[MASK] is the capital of france .", "paris")],
    "france": [("paris is in [MASK] .", "france"), ("the capital of [MASK] is paris .", "france")],
}


@pytest.fixture(scope="module")
def model():
    return toy_masked_model(n_layers=3, seed=1)


def _prob_with_hook(model, query, hooks):
    with torch.no_grad():
        logits = model.run_with_hooks(query.tokens, fwd_hooks=hooks)
    return float(logits[0, query.position].softmax(-1)[query.targets[0]])


def test_masked_query_is_the_mask_position(model):
    q = encode(model, PROMPT, "paris", "single")
    assert q.tokens[0, q.position] == model.tokenizer.mask_token_id
    assert q.targets.tolist() == model.tokenizer("paris", add_special_tokens=False)["input_ids"]


def test_masked_ig_equals_the_full_forward_computation(model):
    # the fast path starts at block l from the cached residual stream; the naive one runs the whole
    # model from the tokens with a replacement hook
    fast = integrated_gradients(model, PROMPT, "paris", steps=6, scoring="single", warn=False)
    naive = integrated_gradients_naive(model, PROMPT, "paris", steps=6, scoring="single")
    torch.testing.assert_close(fast.scores, naive, rtol=1e-4, atol=1e-7)
    assert fast.prob == pytest.approx(_prob_with_hook(model, encode(model, PROMPT, "paris", "single"), []), rel=1e-5)


def test_masked_ig_completeness_error_shrinks_with_steps(model):
    coarse = integrated_gradients(model, PROMPT, "paris", steps=2, scoring="single", warn=False)
    fine = integrated_gradients(model, PROMPT, "paris", steps=128, scoring="single", warn=False)
    assert float(fine.completeness_error.max()) < 1e-3
    assert float(fine.completeness_error.max()) < float(coarse.completeness_error.max())
    # P(baseline) is P with the layer's activations at the mask set to 0, computed independently
    q = encode(model, PROMPT, "paris", "single")

    def zero_at_mask(act, hook):
        act = act.clone()
        act[:, q.position] = 0
        return act

    for layer in range(model.cfg.n_layers):
        expected = _prob_with_hook(model, q, [(hook_name("mlp", layer), zero_at_mask)])
        assert float(fine.baseline_prob[layer]) == pytest.approx(expected, rel=1e-4)


def test_masked_edit_changes_only_the_mask_position(model):
    q = encode(model, PROMPT, "paris", "single")
    neurons = NeuronSet.from_pairs("mlp", model.cfg.n_layers, model.cfg.d_mlp, torch.tensor([1, 2]), torch.tensor([3, 5]))
    got = answer_prob(model, PROMPT, "paris", zero(neurons), scoring="single")

    def by_hand(layer, index):
        def hook(act, hook):
            act = act.clone()
            act[:, q.position, index] = 0
            return act

        return (hook_name("mlp", layer), hook)

    assert got == pytest.approx(_prob_with_hook(model, q, [by_hand(1, 3), by_hand(2, 5)]), rel=1e-6)
    assert got != pytest.approx(answer_prob(model, PROMPT, "paris", scoring="single"), rel=1e-9)


def test_mask_position_means(model):
    texts = [p for pairs in CONCEPTS.values() for p, _ in pairs]
    got = mean_activations(model, texts)
    rows = []
    for text in texts:
        q = encode(model, text, "paris", "single")
        _, cache = model.run_with_cache(q.tokens)
        rows.append(torch.stack([cache[hook_name("mlp", l)][0, q.position] for l in range(model.cfg.n_layers)]))
    torch.testing.assert_close(got, torch.stack(rows).mean(0), rtol=1e-5, atol=1e-6)


def test_knowledge_neurons_fit_and_evaluate_on_a_masked_lm(model):
    kn = KnowledgeNeurons(steps=4, scoring="single", tolerance=float("inf")).fit(model, CONCEPTS, progress=False)
    assert set(kn.neurons_) == set(CONCEPTS)
    rows = kn.evaluate(model, unrelated="france", progress=False)
    own = [r for r in rows if r["concept"] == "paris" and r["target"] == "own" and r["edit"] == "suppress"]
    assert len(own) == 2
    for r in own:
        assert r["p_after"] == pytest.approx(
            answer_prob(model, r["prompt"], r["answer"], zero(kn.neurons_["paris"]), scoring="single"), rel=1e-6
        )


def test_masked_lm_bad_input(model):
    with pytest.raises(ValueError, match=r"exactly one \[MASK\]"):
        encode(model, "the capital of france is paris", "paris", "single")
    with pytest.raises(ValueError, match=r"exactly one \[MASK\]"):
        encode(model, "[MASK] [MASK]", "paris", "single")
    with pytest.raises(ValueError, match="causal LM"):
        encode(model, PROMPT, "paris", "joint")
    with pytest.raises(ValueError, match="not a single token"):
        encode(model, PROMPT, "helsinki", "single")


def test_pipeline_on_a_masked_lm_keeps_single_token_answers(model, tmp_path):
    from lensneurons.lenses.knowledge import study as pipe

    prompts = {**CONCEPTS, "helsinki": [("the capital of finland is [MASK] .", "helsinki")] * 2}
    cfg = pipe.RunConfig(n_concepts=5, steps=3, min_correct=0.0, n_random=1, baseline="auto")
    result = pipe.run(model, cfg, tmp_path, prompts=prompts, progress=False)
    assert result["baseline"] == "zero" and result["n_kept"] == 2  # "helsinki" is several word pieces
    assert (tmp_path / "summary.csv").stat().st_size > 0
