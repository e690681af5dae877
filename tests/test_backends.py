"""Local checkpoints and the TransformerBridge backend: tiny random Hugging Face models (Llama and GPT-2 configs)
saved to disk, loaded as a HookedTransformer and as a TransformerBridge, must give the Hugging Face model's logits
and the same numbers in every lens (pooled units, AP, patching, steered generation, integrated gradients)."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import lensneurons as ln
from lensneurons.core import checkpoints
from lensneurons.core.activations import pooled_activations
from lensneurons.core.generation import generate_from_bos
from lensneurons.core.models import byte_tokenizer, is_bridge, load_model
from lensneurons.core.neurons import NeuronSet
from lensneurons.core.patching import patched, zero
from lensneurons.core.units import unit_space
from lensneurons.data import LanguageTexts
from lensneurons.lenses.knowledge.attribution import integrated_gradients
from lensneurons.lenses.language.analysis import SteeringConfig

pytestmark = pytest.mark.xdist_group("backends")

TEXTS = ["hello world", "a quiet river runs", "bonjour le monde", "où est la gare ?"]
CONFIGS = {
    # grouped-query attention, gated SiLU MLP, RMSNorm, rotary, tied embeddings: SmolLM2's shape in miniature
    "llama": lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=259, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, rope_theta=100000.0,
        bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=259, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                               bos_token_id=1, eos_token_id=2)),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def folder(request, tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(f"tiny_{request.param}")  # the folder name holds "llama": TL must not care
    CONFIGS[request.param]().eval().save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(folder):
    return load_model(folder, device="cpu"), load_model(folder, device="cpu", backend="bridge")


def test_both_backends_give_the_hugging_face_logits(folder, pair):
    hooked, bridge = pair
    assert not is_bridge(hooked) and is_bridge(bridge)
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokens = torch.tensor([[1, 72, 101, 108, 108, 111, 33]])
    with torch.no_grad():
        want = hf(tokens).logits
        torch.testing.assert_close(hooked(tokens), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bridge(tokens), want, atol=1e-5, rtol=1e-5)
    assert hooked.cfg.model_name == bridge.cfg.model_name == folder.name


@pytest.mark.parametrize("site", ["mlp", "mlp_pre", "resid", "heads", "linear"])
def test_pooled_units_agree_across_backends(pair, site):
    hooked, bridge = pair
    a = pooled_activations(hooked, TEXTS, site=site, progress=False)
    b = pooled_activations(bridge, TEXTS, site=site, progress=False)
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # the same components, in the same order, with the same labels
    assert unit_space(hooked, site).unit_labels() == unit_space(bridge, site).unit_labels()


def test_average_precision_and_steered_generation_agree(pair):
    hooked, bridge = pair
    texts = LanguageTexts.from_texts({"en": TEXTS[:2], "fr": TEXTS[2:]})
    fits = [ln.LanguageNeurons(k=4).fit(m, texts, progress=False) for m in pair]
    torch.testing.assert_close(fits[0].scores_, fits[1].scores_, atol=1e-6, rtol=0)
    torch.testing.assert_close(fits[0].medians_, fits[1].medians_, atol=1e-5, rtol=1e-4)
    cfg = SteeringConfig(seeds=[1, 2, 3], max_new_tokens=10)
    for prompt in (None, "hi"):
        assert fits[0].generate(hooked, "fr", "both", cfg, prompt=prompt) == \
            fits[1].generate(bridge, "fr", "both", cfg, prompt=prompt)


def test_bridge_generation_equals_recomputing_every_step(pair):
    # the reference: each new token sampled from a full forward over everything so far
    _, bridge = pair
    from lensneurons.core.generation import sample_next

    gens = [torch.Generator().manual_seed(s) for s in (4, 5)]
    tokens = torch.tensor([[bridge.tokenizer.bos_token_id]] * 2)
    with torch.no_grad():
        for _ in range(8):
            tokens = torch.cat([tokens, sample_next(bridge(tokens)[:, -1], gens)[:, None]], 1)
    want = [bridge.tokenizer.decode(row[1:], skip_special_tokens=True) for row in tokens.tolist()]
    assert generate_from_bos(bridge, seeds=[4, 5], max_new_tokens=8, progress=False) == want


def test_patching_agrees_and_leaves_other_units_untouched(pair):
    hooked, bridge = pair
    width = unit_space(hooked, "mlp").width
    edit = zero(NeuronSet.from_pairs("mlp", 2, width, torch.tensor([0, 0, 1]), torch.tensor([1, 5, 3])))
    tokens = hooked.to_tokens("a quiet river")
    seen = {}

    def grab(name):
        def hook(x, hook):
            seen[name] = x.detach().clone()
        return hook

    outs = []
    for m in pair:
        with torch.no_grad(), patched(m, edit), m.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", grab(type(m).__name__))]):
            outs.append(m(tokens))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    with torch.no_grad(), bridge.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", grab("clean"))]):
        bridge(tokens)
    edited, clean = seen["TransformerBridge"], seen["clean"]
    assert (edited[..., [1, 5]] == 0).all()
    keep = [i for i in range(edited.shape[-1]) if i not in (1, 5)]
    assert torch.equal(edited[..., keep], clean[..., keep])  # bit-identical elsewhere


def test_integrated_gradients_agree_and_stay_complete(pair):
    attributions = [integrated_gradients(m, "a quiet river", " r", steps=8, warn=False) for m in pair]
    torch.testing.assert_close(attributions[0].scores, attributions[1].scores, atol=1e-6, rtol=1e-4)
    # completeness on the bridge's own path: each layer's scores sum to P(x) - P(baseline)
    bridge = attributions[1]
    assert float(bridge.completeness_error[bridge.layers].max()) < 0.05
    torch.testing.assert_close(bridge.baseline_prob, attributions[0].baseline_prob, atol=1e-6, rtol=1e-4)


def test_bad_checkpoints_are_named(tmp_path, folder):
    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        load_model(folder, backend="onnx")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_model(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path / "empty")
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ValueError, match="not a .gguf"):
        load_model(str(tmp_path / "weights.bin"))


def test_an_architecture_transformer_lens_cannot_build_says_what_to_do(tmp_path):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    path = tmp_path / "tiny_gemma3"
    Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=259, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=64, sliding_window=16,
        layer_types=["sliding_attention", "full_attention"])).eval().save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    with pytest.raises(ValueError, match="Gemma3ForCausalLM.*backend='bridge'"):
        load_model(path)
    bridge = load_model(path, backend="bridge")  # the bridge reads it
    assert pooled_activations(bridge, TEXTS, site="mlp", progress=False).shape == (4, 2, 48)


def test_a_local_gguf_is_dequantised_once_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path / "cache"))
    gguf = tmp_path / "mine.Q4.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(200)))
    made = []

    def dequantise(source, folder):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"from": str(source.locate())}))
        checkpoints.write_cache_manifest(folder, gguf_sha256=source.sha256)
        made.append(folder)
        return folder

    monkeypatch.setattr(checkpoints, "dequantise", dequantise)
    source = checkpoints.local_gguf(gguf)
    assert source.sha256 == checkpoints.file_digest(gguf)
    folder = checkpoints.dequantised(source)
    assert folder.name == f"mine.Q4-{source.sha256[:12]}" and checkpoints.dequantised(source) == folder
    assert len(made) == 1  # cached by content
    gguf.write_bytes(b"GGUF" + bytes(range(201)))  # another file under the same name: another cache entry
    assert checkpoints.dequantised(checkpoints.local_gguf(gguf)) != folder and len(made) == 2


def test_a_gguf_whose_bytes_differ_from_the_pinned_digest_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"not the pinned file")
    source = checkpoints.GGUFSource("pinned", "ab" * 32, lambda: gguf, "reinstall it: pip install x")
    with pytest.raises(ValueError, match="not the expected abab.*reinstall it"):
        checkpoints.dequantised(source)
    assert not (tmp_path / "cache" / f"pinned-{'ab' * 6}").exists()  # nothing half-written
