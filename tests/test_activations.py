import pytest
import torch

from lensneurons.core.activations import collect, pool, pooled_activations, shard_range, tokenize
from lensneurons.core.models import toy_model
from lensneurons.core.sites import hook_name

TEXTS = ["the cat sat", "a", "das ist gut und schön", "日本語のテキスト", "xyz " * 5, "ok"]


@pytest.fixture(scope="module")
def model():
    return toy_model(n_layers=3, d_model=16, d_mlp=24)


def reference(model, texts, site, pooling, append_eos=False, include_bos=True):
    """One text at a time through the full ActivationCache: no padding, no streaming."""
    rows = []
    for ids in tokenize(model, texts, append_eos=append_eos):
        _, cache = model.run_with_cache(torch.tensor([ids]))
        acts = torch.stack([cache[hook_name(site, l)][0] for l in range(model.cfg.n_layers)], 0)  # layer pos neuron
        if not include_bos:
            acts = acts[:, 1:]
        if pooling == "mean":
            rows.append(acts.mean(1))
        elif pooling == "max":
            rows.append(acts.max(1).values)
        else:
            rows.append(acts[:, -1])
    return torch.stack(rows)


@pytest.mark.parametrize("site", ["mlp", "resid"])
@pytest.mark.parametrize("pooling", ["mean", "max", "last"])
def test_pooled_equals_unpadded_reference(model, site, pooling):
    got = pooled_activations(model, TEXTS, site=site, pooling=pooling, batch_size=4, progress=False)
    want = reference(model, TEXTS, site, pooling)
    assert got.shape == (len(TEXTS), 3, want.shape[-1])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max", "last"])
def test_pooling_without_bos(model, pooling):
    assert model.cfg.default_prepend_bos
    got = pooled_activations(model, TEXTS, pooling=pooling, include_bos=False, batch_size=4, progress=False)
    torch.testing.assert_close(got, reference(model, TEXTS, "mlp", pooling, include_bos=False), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"texts \[1\] are empty"):
        pooled_activations(model, ["ok", ""], include_bos=False, progress=False)


def test_append_eos_and_layer_subset(model):
    got = pooled_activations(model, TEXTS, layers=[2, 0], append_eos=True, pooling="last", progress=False)
    want = reference(model, TEXTS, "mlp", "last", append_eos=True)[:, [2, 0]]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    eos = model.tokenizer.eos_token_id
    assert all(ids[-1] == eos for ids in tokenize(model, TEXTS, append_eos=True))


def test_attention_only_model_supports_resid_but_not_mlp():
    attn = toy_model(attn_only=True)
    assert pooled_activations(attn, TEXTS, site="resid", progress=False).shape == (len(TEXTS), 2, 16)
    with pytest.raises(ValueError, match="attention-only"):
        pooled_activations(attn, TEXTS, site="mlp", progress=False)


def test_stream_leaves_no_inference_mode_to_the_caller(model):
    from lensneurons.core.activations import stream_pooled

    for ids, pooled in stream_pooled(model, TEXTS, batch_size=2, progress=False):
        assert not torch.is_inference_mode_enabled()
        assert not pooled.is_inference()


def test_shards_merge_to_the_single_pass(model):
    from lensneurons.core.stats import Stack

    full = pooled_activations(model, TEXTS, progress=False)
    parts = [collect(model, TEXTS, [Stack()], shard=(i, 3), progress=False)[0] for i in range(3)]
    merged = parts[2].merge(parts[0]).merge(parts[1])
    torch.testing.assert_close(merged.values, full, atol=1e-6, rtol=0)
    assert sorted(x for i in range(3) for x in shard_range(10, (i, 3))) == list(range(10))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"site": "mlp post"}, "unknown hook site"),
        ({"site": "blocks.0.mlp.hook_post"}, "without 'blocks.<layer>.'"),
        ({"site": "attn.hook_qq"}, "no hook point or module 'blocks.0.attn.hook_qq'; block 0 has: .*attn.hook_q"),
        ({"layers": [5]}, "out of range"),
        ({"pooling": "median"}, "unknown pooling"),
        ({"batch_size": 0}, "batch_size"),
        ({"shard": (3, 2)}, "shard"),
    ],
)
def test_bad_input_is_named(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pooled_activations(model, TEXTS, progress=False, **kwargs)


def test_empty_texts(model):
    with pytest.raises(ValueError, match="empty"):
        pooled_activations(model, [], progress=False)


def test_pool_excludes_padding():
    acts = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert pool(acts, mask, "mean").item() == 2.0
    assert pool(acts, mask, "max").item() == 3.0
    assert pool(acts, mask, "last").item() == 3.0
