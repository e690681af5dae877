"""Wrong answers that used to come back without an error (issue 17): each fails on the old code."""
import warnings

import pytest
import torch

from lensneurons.core.models import toy_model
from lensneurons.core.neurons import NeuronSet, TiedScoresWarning
from lensneurons.core.patching import patched, zero


def test_top_k_of_some_layers_is_numbered_by_the_model_layers():
    scores = torch.zeros(2, 5)
    scores[1, 3] = 9.0  # row 1 is model layer 2
    s = NeuronSet.top_k("mlp", scores, 1, layers=[1, 2], n_layers=4)
    assert (s.n_layers, s.layers.tolist(), s.indices.tolist()) == (4, [2], [3])
    with pytest.raises(ValueError, match="out of range"):
        NeuronSet.top_k("mlp", scores, 1, layers=[1, 4], n_layers=4)


def test_top_k_refuses_nan_scores():
    scores = torch.rand(2, 4)
    scores[0, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        NeuronSet.top_k("mlp", scores, 2)


def test_ties_at_the_cut_are_broken_by_the_second_key_and_warned():
    scores = torch.tensor([[1.0, 1.0, 0.2], [1.0, 0.5, 1.0]])  # four units share the top score
    second = torch.tensor([[0.1, 0.3, 0.0], [0.9, 0.0, 0.2]])
    with pytest.warns(TiedScoresWarning, match="4 units share the score 1 at the top-2 cut"):
        s = NeuronSet.top_k("mlp", scores, 2, tiebreak=second)
    assert sorted(zip(s.layers.tolist(), s.indices.tolist())) == [(0, 1), (1, 0)]  # the two largest second keys
    with pytest.warns(TiedScoresWarning):
        low = NeuronSet.top_k("mlp", scores, 4, largest=False, tiebreak=second)
    assert sorted(zip(low.layers.tolist(), low.indices.tolist())) == [(0, 0), (0, 2), (1, 1), (1, 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NeuronSet.top_k("mlp", scores, 4, tiebreak=second)  # the whole tie is inside: nothing to warn about


def test_language_neurons_break_ap_ties_by_the_difference_of_means():
    from lensneurons.data.multilingual import LanguageTexts
    from lensneurons.lenses.language.analysis import LanguageNeurons

    # 6 texts, 1 layer of 4 units; units 1 and 3 separate the languages perfectly (AP = 1), unit 3 by more
    acts = torch.tensor([[0.0, 1.0, 0.0, 5.0], [0.0, 1.1, 0.1, 6.0], [0.0, 1.2, 0.2, 7.0],
                         [1.0, 0.0, 0.3, 0.0], [1.0, 0.1, 0.4, 0.1], [1.0, 0.2, 0.5, 0.2]])[:, None, :]
    data = LanguageTexts(texts=[f"t{i}" for i in range(6)], positives={"a": [0, 1, 2], "b": [3, 4, 5]},
                         negatives={"a": [3, 4, 5], "b": [0, 1, 2]})
    with pytest.warns(TiedScoresWarning):
        ln = LanguageNeurons(k=1).fit_activations(acts, data)
    assert ln.neurons("a", "top").indices.tolist() == [3]  # flat order alone would pick unit 1


def test_probe_fit_refuses_features_of_another_group_count():
    from lensneurons.lenses.grammar.probes import train_probes

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, 5, generator=g)
    y = x[..., 0] > 0
    fit = train_probes(x, y, steps=20)
    assert fit.accuracy(x, y).shape[-1] == 3
    with pytest.raises(ValueError, match="3 groups"):
        fit.accuracy(x[:1], y[:1])  # one layer's data: used to broadcast against all three normalisations


def test_sparse_probing_sets_carry_model_layers_and_patch_the_model():
    from lensneurons.data.blimp import MinimalPair
    from lensneurons.lenses.grammar.analysis import SparseProbing

    model = toy_model(n_layers=3, d_model=16, d_mlp=20, n_ctx=64)
    pairs = {t: [MinimalPair(t, f"the cat {t} sat {i}.", f"cat the {t} sat {i}.", i) for i in range(8)]
             for t in ("t_a", "t_b")}
    sp = SparseProbing(lams=[1.0], ks=[2], random_ks=[2], n_random=1, top_fraction=0.1, steps=10, cross_layer=0)
    sp.fit(model, pairs, layers=[1, 2], progress=False)
    top = sp.top_neurons("t_a", 3, layer=2)
    assert top.n_layers == 3 and set(top.layers.tolist()) == {2}
    dense = sp.neurons("t_a", 1.0, layers=[1])
    assert dense.n_layers == 3 and set(dense.layers.tolist()) == {1}
    with patched(model, zero(top)):  # used to be refused: a "2 × 16" set on a 3-layer model
        model("the cat sat.")
    with pytest.raises(ValueError, match="not probed"):
        sp.top_neurons("t_a", 3, layer=0)


def test_integrated_gradients_takes_the_mean_baseline_with_reference_texts():
    from lensneurons.lenses.knowledge.attribution import integrated_gradients, mean_activations

    model = toy_model(n_layers=2, d_model=16, d_mlp=20, n_ctx=64, post_mlp_norm=True)
    refs = ["one two three", "a b c d", "hello there"]
    by_name = integrated_gradients(model, "one two", " three", steps=4, baseline="mean", reference_texts=refs,
                                   warn=False)
    by_table = integrated_gradients(model, "one two", " three", steps=4, baseline=mean_activations(model, refs),
                                    warn=False)
    assert torch.equal(by_name.scores, by_table.scores)
    with pytest.raises(ValueError, match="reference_texts"):
        integrated_gradients(model, "one two", " three", steps=4, baseline="mean")
    top = by_name.top(5)
    assert len(top) == 5 and top.n_layers == 2
    want = torch.topk(by_name.scores.flatten(), 5).indices.sort().values
    assert torch.equal(top.flat, want)


def test_own_model_from_a_config_and_an_in_memory_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    from lensneurons.core.activations import pooled_activations
    from lensneurons.core.models import from_config

    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>"] + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    cfg = HookedTransformerConfig(n_layers=1, d_model=8, d_head=4, n_heads=2, d_mlp=16, d_vocab=len(tok), n_ctx=16,
                                  act_fn="gelu", seed=0)
    with pytest.raises(KeyError, match="name_or_path"):  # what TransformerLens does with it
        HookedTransformer(cfg, tokenizer=tok)
    model = from_config(cfg, tok)
    assert model.tokenizer.get_vocab() == tok.get_vocab()
    assert pooled_activations(model, ["ab", "abc"], progress=False).shape == (2, 1, 16)


def test_token_activations_names_the_type_it_takes():
    from lensneurons.lenses.corpus.report import token_activations

    model = toy_model(n_layers=1, d_model=8, d_mlp=16)
    as_users_run_it = getattr(token_activations, "__wrapped__", token_activations)  # without the tests' type hook
    with pytest.raises(TypeError, match="one text"):
        as_users_run_it(model, ["a b"], 0, 0)


def test_own_data_for_every_lens():
    import pandas as pd

    from lensneurons.data import LanguageTexts, from_frame, minimal_pairs

    lt = LanguageTexts.from_texts({"en": ["hello", "good day"], "fr": ["bonjour", "bonne journée", "hello"]})
    assert lt.texts == ["hello", "good day", "bonjour", "bonne journée"]
    assert lt.positives == {"en": [0, 1], "fr": [2, 3, 0]} and lt.negatives == {"en": [2, 3, 0], "fr": [0, 1]}
    with pytest.raises(ValueError, match="two languages"):
        LanguageTexts.from_texts({"en": ["x"]})
    pairs = minimal_pairs("agreement", [("The dog runs.", "The dog run."), ("Cats sleep.", "Cats sleeps.")])
    assert [(p.good, p.bad, p.pair_id) for p in pairs] == [("The dog runs.", "The dog run.", 0),
                                                           ("Cats sleep.", "Cats sleeps.", 1)]
    with pytest.raises(ValueError, match="pair 0"):
        getattr(minimal_pairs, "__wrapped__", minimal_pairs)("t", ["just one sentence"])  # as users run it
    corpus = from_frame(pd.DataFrame({"text": ["a b", "c d"], "topic": ["x", None], "n": [1, 2]}))
    assert corpus.texts == ["a b", "c d"] and corpus.metadata == {"topic": ["x", None], "n": [1, 2]}
    with pytest.raises(ValueError, match="no text column"):
        from_frame(pd.DataFrame({"sentence": ["a"]}))


def test_generation_from_a_prompt_returns_the_continuation():
    from lensneurons.core.generation import generate_from_bos

    model = toy_model(n_layers=1, d_model=16, d_mlp=16, n_ctx=32)
    prompt = "The cat"
    seeds = [3, 4]
    got = generate_from_bos(model, seeds, max_new_tokens=5, prompt=prompt, progress=False)
    # the same samples token by token without the KV cache: the full sequence, then strip the prompt
    tok = model.tokenizer
    for seed, text in zip(seeds, got):
        g = torch.Generator().manual_seed(seed)
        ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
        start = len(ids)
        from lensneurons.core.generation import sample_next

        for _ in range(5):
            logits = model(torch.tensor([ids]))[:, -1]
            nxt = int(sample_next(logits, [g])[0])
            if nxt == tok.eos_token_id:
                break
            ids.append(nxt)
        assert text == tok.decode(ids[start:], skip_special_tokens=True)
    with pytest.raises(ValueError, match="context"):
        generate_from_bos(model, seeds, max_new_tokens=40, prompt=prompt, progress=False)


# ----------------------------------------------------------------------------- bad inputs (issue 18)


def test_collection_refuses_a_single_string_empty_texts_bad_lengths_and_empty_shards():
    from lensneurons.core.activations import pooled_activations, tokenize

    model = toy_model(n_layers=1, d_model=8, d_mlp=16, n_ctx=16)
    with pytest.raises(TypeError, match="single string"):
        pooled_activations(model, "hello world", progress=False)  # used to give one row per character
    with pytest.raises(ValueError, match=r"texts \[1\] are empty"):
        pooled_activations(model, ["a b", " "], progress=False)
    for bad in (-1, 0, 1):  # -1 dropped the last token, 0 meant no truncation, 1 left BOS alone
        with pytest.raises(ValueError, match="max_length"):
            pooled_activations(model, ["a b c"], max_length=bad, progress=False)
    long = "x" * 40  # longer than n_ctx = 16: cut to the context instead of an IndexError in pos_embed
    assert len(tokenize(model, [long], max_length=100)[0]) == 16
    assert pooled_activations(model, [long], progress=False).shape == (1, 1, 16)
    with pytest.raises(ValueError, match="holds no text"):
        pooled_activations(model, ["a", "b"], shard=(0, 3), progress=False)


def test_nan_and_infinite_values_are_refused():
    from lensneurons.core.patching import scale, set_to
    from lensneurons.core.stats import welch_t

    x = torch.randn(6, 3)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        welch_t(x, torch.tensor([True, False] * 3))
    s = NeuronSet.from_pairs("mlp", 1, 4, torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="finite"):
        scale(s, float("nan"))
    with pytest.raises(ValueError, match="finite"):
        set_to(s, torch.tensor([float("inf")]))


def test_sampling_settings_are_checked():
    from lensneurons.core.generation import generate_from_bos

    model = toy_model(n_layers=1, d_model=8, d_mlp=16, n_ctx=16)
    for kwargs, match in ((dict(temperature=0.0), "temperature"), (dict(temperature=-1.0), "temperature"),
                          (dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p")):
        with pytest.raises(ValueError, match=match):
            generate_from_bos(model, [1], max_new_tokens=2, progress=False, **kwargs)


def test_integrated_gradients_refuses_a_prompt_longer_than_the_context():
    from lensneurons.lenses.knowledge.attribution import integrated_gradients

    model = toy_model(n_layers=1, d_model=8, d_mlp=16, n_ctx=16)
    with pytest.raises(ValueError, match="more than the model's context"):  # used to cut the prompt's end
        integrated_gradients(model, "x" * 30, " y", steps=2, warn=False)


def test_a_changed_or_truncated_model_cache_is_rebuilt(tmp_path, monkeypatch):
    # issue 18: 256 floats changed in place loaded silently; a truncated file raised a bare SafetensorError
    import shutil

    from lensneurons.core import checkpoints

    monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path))
    source = checkpoints.GGUFSource("toy", "ab" * 32, lambda: tmp_path / "toy.gguf", "reinstall it")
    builds = []

    def dequantise(source, folder):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
        (folder / "config.json").write_text("{}")
        checkpoints.write_cache_manifest(folder, gguf_sha256=source.sha256)
        builds.append(source.name)
        return folder

    monkeypatch.setattr(checkpoints, "dequantise", dequantise)
    folder = checkpoints.dequantised(source)
    assert builds == ["toy"] and checkpoints.cache_problem(folder) is None
    assert checkpoints.dequantised(source) == folder and builds == ["toy"]  # trusted

    def rebuilt_after(damage, reason):
        damage(folder / "model.safetensors")
        assert reason in checkpoints.cache_problem(folder)
        n = len(builds)
        checkpoints.dequantised(source)
        assert len(builds) == n + 1 and checkpoints.cache_problem(folder) is None

    def flip(path):
        data = bytearray(path.read_bytes())
        data[100:104] = b"\xff\xff\xff\xff"
        path.write_bytes(bytes(data))

    rebuilt_after(flip, "SHA-256 differs")
    rebuilt_after(lambda p: p.write_bytes(p.read_bytes()[:1000]), "1000 bytes")
    rebuilt_after(lambda p: p.unlink(), "missing")
    (folder / checkpoints.MANIFEST).write_text("ab" * 32 + "\n")  # the manifest of older versions: no digests
    assert "older lensneurons" in checkpoints.cache_problem(folder)
