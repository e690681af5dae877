import pytest
import torch

from lensneurons.core.models import toy_model
from lensneurons.core.neurons import NeuronSet
from lensneurons.core.patching import patched, scale, set_to, zero
from lensneurons.core.sites import hook_name


@pytest.fixture(scope="module")
def model():
    return toy_model(n_layers=2, d_model=16, d_mlp=8)


def acts_at(model, tokens, name):
    _, cache = model.run_with_cache(tokens, names_filter=[name])
    return cache[name]


def neurons(pairs, model):
    t = torch.tensor(pairs)
    return NeuronSet.from_pairs("mlp", model.cfg.n_layers, model.cfg.d_mlp, t[:, 0], t[:, 1])


@pytest.mark.parametrize("kind", ["zero", "scale", "set"])
def test_edit_changes_only_chosen_neurons(model, kind):
    tokens = model.to_tokens(["hello world", "another text here"])
    s = neurons([(1, 2), (1, 5)], model)
    edit = {"zero": zero(s), "scale": scale(s, 2.0), "set": set_to(s, torch.tensor([-1.0, 3.0]))}[kind]
    name, upstream = hook_name("mlp", 1), hook_name("mlp", 0)
    before, before_up = acts_at(model, tokens, name), acts_at(model, tokens, upstream)
    with patched(model, edit):
        after, after_up = acts_at(model, tokens, name), acts_at(model, tokens, upstream)
    assert torch.equal(after_up, before_up)
    untouched = [i for i in range(8) if i not in (2, 5)]
    assert torch.equal(after[..., untouched], before[..., untouched])  # bit-identical
    expected = {"zero": torch.zeros(2), "scale": None, "set": torch.tensor([-1.0, 3.0])}[kind]
    if kind == "scale":
        torch.testing.assert_close(after[..., [2, 5]], 2 * before[..., [2, 5]])
    else:
        assert torch.equal(after[..., [2, 5]], expected.expand_as(after[..., [2, 5]]))


def test_hooks_removed_on_exit_and_exception(model):
    tokens = model.to_tokens("abc")
    clean = model(tokens)
    with pytest.raises(RuntimeError):
        with patched(model, zero(neurons([(0, 1)], model))):
            raise RuntimeError("boom")
    assert torch.equal(model(tokens), clean)
    assert all(len(hp.fwd_hooks) == 0 for hp in model.hook_dict.values())


def test_edit_applies_during_generate(model):
    s = neurons([(0, 3)], model)
    seen = []
    observe = (hook_name("mlp", 0), lambda act, hook: seen.append(act[..., 3].clone()))
    with patched(model, set_to(s, torch.tensor([42.0]))):
        with model.hooks(fwd_hooks=[observe]):  # runs after the edit hook, so it sees edited values
            model.generate("ab", max_new_tokens=3, verbose=False, use_past_kv_cache=True)
    assert len(seen) == 3  # prompt, then one forward per new token with the KV cache (last is not run)
    assert all(torch.all(v == 42.0) for v in seen)


def test_positions(model):
    tokens = model.to_tokens("hello")
    s = neurons([(0, 1)], model)
    name = hook_name("mlp", 0)
    before = acts_at(model, tokens, name)
    with patched(model, zero(s), positions=torch.tensor([1, 3])):
        after = acts_at(model, tokens, name)
    assert torch.all(after[0, [1, 3], 1] == 0)
    assert torch.equal(after[0, [0, 2, 4], 1], before[0, [0, 2, 4], 1])


def test_mismatched_model_shape_and_values(model):
    other = NeuronSet.from_pairs("mlp", 2, 9, torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="does not match the model"):
        with patched(model, zero(other)):
            pass
    with pytest.raises(ValueError, match="values"):
        set_to(neurons([(0, 1), (1, 1)], model), torch.tensor([1.0]))


@pytest.mark.parametrize("kind", ["zero", "scale"])
def test_row_positions_edit_one_position_per_row(model, kind):
    tokens = model.to_tokens(["hello world", "another text here", "a b c d e f"])
    rows_at = torch.tensor([3, 0, 5])
    s = neurons([(0, 1), (0, 6)], model)
    edit = zero(s) if kind == "zero" else scale(s, 3.0)
    name = hook_name("mlp", 0)
    before = acts_at(model, tokens, name)
    with patched(model, edit, row_positions=rows_at):
        after = acts_at(model, tokens, name)
    mask = torch.zeros_like(before, dtype=torch.bool)
    for row, pos in enumerate(rows_at.tolist()):
        mask[row, pos, [1, 6]] = True
    assert torch.equal(after[~mask], before[~mask])  # every other (row, position, neuron) bit-identical
    expected = torch.zeros_like(before[mask]) if kind == "zero" else 3.0 * before[mask]
    torch.testing.assert_close(after[mask], expected)


def test_row_positions_errors(model):
    s = neurons([(0, 1)], model)
    with pytest.raises(ValueError, match="not both"):
        with patched(model, zero(s), positions=torch.tensor([0]), row_positions=torch.tensor([0])):
            pass
    with pytest.raises(ValueError, match="batch has 2 rows"):
        with patched(model, zero(s), row_positions=torch.tensor([0, 1, 2])):
            model(model.to_tokens(["ab", "cd"]))
