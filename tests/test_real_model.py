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
