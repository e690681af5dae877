"""Bad input refused with a message naming the value and what was expected, before any work (issue 18)."""
import os
import stat

import pytest
import torch

import lensneurons as ln
from lensneurons.cli import STUDIES, main, study
from lensneurons.core.models import toy_model
from lensneurons.core.neurons import NeuronSet, overlap_matrix
from lensneurons.core.results import PARTIAL, ResultsFolder, atomic_write


@pytest.fixture(scope="module")
def model():
    return toy_model(n_layers=2, d_model=16, d_mlp=20, n_ctx=32)


def _plain(fn):
    """`fn` without the run-time type checker the tests install: the error a user sees."""
    return getattr(fn, "__wrapped__", fn)


def test_texts_that_are_not_a_list_of_valid_strings(model):
    from lensneurons.core.activations import check_texts

    with pytest.raises(TypeError, match="got a generator; pass list"):
        _plain(check_texts)(t for t in ["a b", "c d"])
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        _plain(check_texts)(["a b", 3])
    with pytest.raises(ValueError, match=r"texts\[0\] is not valid Unicode: surrogates not allowed at character 2"):
        ln.pooled_activations(model, ["a \ud800 b"])


def test_layers_that_are_not_whole_numbers(model):
    from lensneurons.core.sites import check_layers

    with pytest.raises(TypeError, match=r"layers must be whole numbers, got 1.5 \(float\)"):
        _plain(check_layers)(model, [1.5])
    with pytest.raises(ValueError, match="layer 5 is out of range for a model with 2 layers"):
        ln.pooled_activations(model, ["a b"], layers=[5])


def test_neuron_sets_mismatched_or_not_saved_sets(tmp_path):
    a = NeuronSet.top_k("mlp", torch.rand(2, 8), 3)
    b = NeuronSet.top_k("mlp", torch.rand(3, 8), 3)
    with pytest.raises(ValueError, match=r"different sites/shapes: \('mlp', 2, 8\) vs \('mlp', 3, 8\)"):
        overlap_matrix({"a": a, "b": b})
    bad = tmp_path / "set.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=f"{bad} is not a saved NeuronSet"):
        NeuronSet.load(bad)
    bad.write_text('{"site": "mlp"}')
    with pytest.raises(ValueError, match=r"lacks \['n_layers', 'width', 'neurons'\]"):
        NeuronSet.load(bad)
    a.save(tmp_path / "ok.json")
    assert NeuronSet.load(tmp_path / "ok.json") == a


def test_edit_positions_outside_the_input(model):
    edit = ln.zero(NeuronSet.top_k("mlp", torch.rand(2, 20), 3))
    tokens = model.to_tokens(["a b"])  # BOS + 3 byte tokens
    with pytest.raises(ValueError, match=r"edit positions 10..10 are outside this input of 4 positions"):
        with ln.patched(model, edit, positions=torch.tensor([10])):
            model(tokens)
    with ln.patched(model, edit, positions=torch.tensor([-1])):  # from the end: fine
        model(tokens)


def test_nan_scores_and_features_are_refused():
    from lensneurons.lenses.grammar.probes import train_probes
    from lensneurons.lenses.language.analysis import LanguageNeurons

    scores = torch.rand(2, 2, 16)
    scores[0, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="scores contain 1 NaN"):
        LanguageNeurons.from_scores(scores, torch.rand(2, 2, 16), ["en", "fr"], k=3)
    x = torch.randn(1, 20, 4)
    x[0, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="first: group 0, text 3, neuron 2"):
        train_probes(x, (torch.arange(20) % 2 == 0)[None])


def test_results_follow_the_umask_and_killed_writes_are_cleaned(tmp_path):
    path = atomic_write(tmp_path / "table.csv", b"a,b\n")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # mkstemp alone gives 0600
    (tmp_path / "sub").mkdir()
    orphans = [tmp_path / f".checkpoint.pt.x1y2z3{PARTIAL}", tmp_path / "sub" / f".chunk.pt.abc{PARTIAL}"]
    for p in orphans:
        p.write_bytes(b"half")
    ResultsFolder.claim(tmp_path, {"k": 1})
    assert not any(p.exists() for p in orphans) and path.exists()



@pytest.mark.parametrize("name", list(STUDIES))
def test_a_layer_the_model_lacks_fails_before_anything_is_written(name, model, tmp_path):
    from test_studies import _data

    s = study(name)
    if "layers" not in s.config.__dataclass_fields__:
        pytest.skip(f"{name} has no layers field")
    cfg = s.configure(layers=[7])
    with pytest.raises(ValueError, match="--layers: layer 7 is out of range for a model with 2 layers"):
        s.run(model, cfg, tmp_path / "out", progress=False, **{s.data_keyword: _data(name)})
    assert not (tmp_path / "out").exists()
    # the corrected command then runs in the same folder (it used to be refused as another configuration)
    ResultsFolder.claim(tmp_path / "out", s.configure(layers=[1]), model)


def test_model_dependent_values_of_the_language_and_grammar_studies(model, tmp_path):
    with pytest.raises(ValueError, match=r"--k must be at most half the model's units at site 'mlp' \(20\)"):
        ResultsFolder.claim(tmp_path / "l", study("language-neurons").configure("mlp-units", k=21), model)
    with pytest.raises(ValueError, match=r"--cross-layer 0 is not among the probed layers \[1\]"):
        ResultsFolder.claim(tmp_path / "s", study("sparse-probing").configure(layers=[1], cross_layer=0), model)
    with pytest.raises(ValueError, match=r"--ks / --random-ks \[32\] exceed the width of site .resid. \(16 units"):
        ResultsFolder.claim(tmp_path / "s", study("sparse-probing").configure(ks=[4, 32]), model)
    assert not (tmp_path / "l").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("where, message", [
    ("file", "is a file, not a folder"),
    ("file/sub", "is not writable"),
])
def test_cli_refuses_an_unusable_out_before_loading(where, message, tmp_path, monkeypatch, capsys):
    import lensneurons.core.models

    monkeypatch.setattr(lensneurons.core.models, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["knowledge-neurons", "--out", str(tmp_path / where)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lensneurons: error: --out") and message in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_refuses_a_read_only_out(tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(SystemExit):
        main(["knowledge-neurons", "--out", str(tmp_path / "ro" / "out")])
    assert "is not writable" in capsys.readouterr().err


def test_cli_refuses_an_unknown_device_before_loading(tmp_path, monkeypatch, capsys):
    import lensneurons.core.models

    monkeypatch.setattr(lensneurons.core.models, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main(["corpus-neurons", "--device", "tpu9", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "unknown device 'tpu9'; expected cpu, cuda" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
