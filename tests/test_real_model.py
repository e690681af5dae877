"""A few checks on the embedded Gemma-3-270M itself (skipped when the gemma extra is not installed)."""
import pytest
import torch

from lensneurons.core.activations import pooled_activations
from lensneurons.core.models import load_model


@pytest.fixture(scope="module")
def gemma():
    return load_model("gemma-3-270m", device="cpu")


@pytest.mark.real_model
def test_embedded_model_predicts_like_gemma(gemma):
    assert (gemma.cfg.n_layers, gemma.cfg.d_mlp, gemma.cfg.d_model) == (18, 2048, 640)
    assert gemma.cfg.use_normalization_before_and_after  # the post-MLP norm that issue 4 is about
    with torch.inference_mode():
        probs = gemma(gemma.to_tokens("The capital of Finland is"))[0, -1].softmax(-1)
    assert probs[gemma.to_single_token(" Helsinki")].item() == pytest.approx(0.0606, abs=0.002)


@pytest.mark.real_model
def test_pooled_activations_on_gemma(gemma):
    acts = pooled_activations(gemma, ["Hello world.", "Bonjour tout le monde, comment ça va ?"], progress=False)
    assert acts.shape == (2, 18, 2048) and torch.isfinite(acts).all()


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model"):
        load_model("no-such-model-xyz")


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m-instruct", device="cpu")


@pytest.mark.smollm2
def test_embedded_smollm2_predicts_paris(smollm2):
    cfg = smollm2.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.n_key_value_heads) == (30, 576, 1536, 9, 3)
    assert not cfg.use_normalization_before_and_after and cfg.gated_mlp  # no post-MLP norm, unlike Gemma
    assert smollm2.W_U.data_ptr() == smollm2.W_E.data_ptr()  # tied embeddings share memory
    with torch.inference_mode():
        with_bos = smollm2(smollm2.to_tokens("The capital of France is"))[0, -1].softmax(-1)
        without = smollm2(smollm2.to_tokens("The capital of France is", prepend_bos=False))[0, -1].softmax(-1)
    paris = smollm2.to_single_token(" Paris")
    assert smollm2.tokenizer.bos_token == "<|im_start|>"  # the checkpoint's own BOS, prepended by default
    assert with_bos[paris].item() == pytest.approx(0.749, abs=0.005)
    assert without[paris].item() == pytest.approx(0.773, abs=0.005)  # as transformers' default tokenization


@pytest.mark.smollm2
def test_smollm2_through_the_bridge_equals_the_hooked_transformer(smollm2):
    bridge = load_model("smollm2-135m-instruct", device="cpu", backend="bridge")
    texts = ["The capital of France is", "Bonjour tout le monde."]
    with torch.inference_mode():
        tokens = smollm2.to_tokens(texts[0])
        torch.testing.assert_close(bridge(tokens).log_softmax(-1), smollm2(tokens).log_softmax(-1), atol=1e-4, rtol=0)
    for site, width in (("mlp", 1536), ("linear", 576 + 192 + 192 + 576 + 1536 + 1536 + 576)):
        a = pooled_activations(smollm2, texts, site=site, layers=[0, 29], progress=False)
        b = pooled_activations(bridge, texts, site=site, layers=[0, 29], progress=False)
        assert a.shape == (2, 2, width)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
