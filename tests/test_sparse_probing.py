"""Sparse probing (paper S): hard-concrete gate, batched probes, Welch top-k, store, analysis object."""
import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.linear_model import LogisticRegression

from lensneurons.core.models import toy_model
from lensneurons.lenses.grammar.analysis import (
    SparseProbing,
    eos_states,
    extract_to_store,
    default_ks,
    log_grid,
    pair_split,
    spearman,
    top_k_subsets,
)
from lensneurons.data.blimp import MinimalPair
from lensneurons.lenses.grammar.probes import HardConcrete, check_lams, train_probes
from lensneurons.core.stats import welch_t
from lensneurons.lenses.grammar.store import ActivationStore

# --------------------------------------------------------------------------- toy data


def planted(n_pairs, n_layers, d, informative, shift=1.5, seed=0):
    """EOS-like states of minimal pairs: a shared base per pair, grammatical ones shifted on `informative`."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n_pairs, 1, n_layers, d, generator=g).expand(-1, 2, -1, -1)
    noise = 0.7 * torch.randn(n_pairs, 2, n_layers, d, generator=g)
    acts = base + noise
    acts[:, 0, :, informative] += shift
    labels = torch.tensor([True, False]).repeat(n_pairs)
    return acts.flatten(0, 1), labels, torch.arange(n_pairs).repeat_interleave(2)


INFORMATIVE = [3, 7, 11]


@pytest.fixture(scope="module")
def fitted():
    data = {
        "task_a": planted(60, 2, 16, INFORMATIVE, shift=3.0, seed=1),
        "task_b": planted(50, 2, 16, INFORMATIVE, shift=3.0, seed=2),
        "task_c": planted(60, 2, 16, [0, 1], shift=3.0, seed=3),
    }
    sp = SparseProbing(lams=[1.0, 0.3, 0.05], ks=[1, 3, 16], random_ks=[1, 4, 8], n_random=3, top_fraction=0.2,
                       cross_layer=1, cross_lam=0.3, steps=150, lr=0.1, task_chunk=2)
    return sp.fit_activations(data, progress=False), data


# --------------------------------------------------------------------------- hard concrete


def test_expected_l0_matches_monte_carlo():
    hc = HardConcrete()
    log_alpha = torch.linspace(-4, 4, 9)
    g = torch.Generator().manual_seed(0)
    draws = hc.sample(log_alpha.expand(40_000, -1), g)
    assert draws.min() == 0 and draws.max() == 1 and ((draws > 0) & (draws < 1)).any()
    mc = (draws > 0).float().mean(0)
    torch.testing.assert_close(mc, hc.prob_nonzero(log_alpha), atol=0.01, rtol=0)
    # the closed form is P(stretched concrete > 0), independent of sampling
    s_at_zero = -hc.gamma / (hc.zeta - hc.gamma)
    want = 1 - torch.sigmoid(hc.beta * torch.logit(torch.tensor(s_at_zero)) - log_alpha)
    torch.testing.assert_close(hc.prob_nonzero(log_alpha), want)


def test_deterministic_gate():
    hc = HardConcrete()
    log_alpha = torch.tensor([-10.0, -2.5, 0.0, 1.0, 10.0])
    gate = hc.deterministic(log_alpha)
    assert torch.equal(gate, hc.deterministic(log_alpha))
    assert gate[0] == 0 and gate[-1] == 1
    want = np.clip(1 / (1 + np.exp(-log_alpha.numpy())) * (hc.zeta - hc.gamma) + hc.gamma, 0, 1)
    np.testing.assert_allclose(gate.numpy(), want, rtol=1e-6)
    assert 0.77 < gate[3] < 0.78  # sigmoid(1) = 0.731 stretched to (-0.1, 1.1)
    assert (gate[1:] >= gate[:-1]).all()
    with pytest.raises(ValueError, match="gamma"):
        HardConcrete(gamma=0.1)


# --------------------------------------------------------------------------- batched probes


@pytest.mark.parametrize("solver", ["adam", "newton"])
def test_batched_probe_matches_sklearn(solver):
    g = torch.Generator().manual_seed(0)
    G, n, d = 5, 500, 20
    w = torch.randn(G, d, generator=g)
    x = torch.randn(G, n, d, generator=g) * (0.5 + 3 * torch.rand(d, generator=g)) + torch.randn(d, generator=g)
    xs_true = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    y = torch.einsum("gtn,gn->gt", xs_true, w) + 2.5 * torch.randn(G, n, generator=g) > 0
    tr, te = slice(0, 350), slice(350, None)
    fit = train_probes(x[:, tr], y[:, tr], steps=400, lr=0.05, C=1.0, solver=solver)
    ours = fit.accuracy(x[:, te], y[:, te])[0]
    for i in range(G):
        mu, sd = x[i, tr].mean(0), x[i, tr].std(0, unbiased=False)
        clf = LogisticRegression(C=1.0, max_iter=2000).fit(((x[i, tr] - mu) / sd).numpy(), y[i, tr].numpy())
        ref = clf.score(((x[i, te] - mu) / sd).numpy(), y[i, te].numpy())
        assert abs(float(ours[i]) - ref) <= 0.01 + 1e-6, (i, float(ours[i]), ref)
        np.testing.assert_allclose(fit.weight[0, i].numpy(), clf.coef_[0], atol=0.05 if solver == "adam" else 2e-3)
        if solver == "newton":  # Newton reaches the optimum itself, bias included
            np.testing.assert_allclose(float(fit.bias[0, i]), clf.intercept_[0], atol=2e-3)


def test_newton_subset_probes_reach_sklearns_optimum():
    x, y, _ = planted(80, 1, 24, INFORMATIVE, shift=1.0)
    x, y = x[:, 0][None].expand(2, -1, -1), y[None].expand(2, -1)
    subset = torch.stack([torch.tensor([[3, 7, 11, 0], [1, 2, 5, 9]]), torch.tensor([[0, 7, 20, 4], [3, 11, 6, 8]])])
    fit = train_probes(x, y, subset=subset, solver="newton", C=0.5)
    for v in range(2):
        for g in range(2):
            cols = subset[v, g]
            xg = x[g][:, cols]
            mu, sd = xg.mean(0), xg.std(0, unbiased=False)
            clf = LogisticRegression(C=0.5, tol=1e-8, max_iter=5000).fit(((xg - mu) / sd).numpy(), y[g].numpy())
            np.testing.assert_allclose(fit.weight[v, g, cols].numpy(), clf.coef_[0], atol=2e-3)
            assert fit.weight[v, g].count_nonzero() <= len(cols)
    # "auto" picks Newton for so few features; Adam lands at (about) the same probe
    auto = train_probes(x, y, subset=subset, C=0.5)
    torch.testing.assert_close(auto.weight, fit.weight)
    adam = train_probes(x, y, subset=subset, C=0.5, solver="adam", steps=600)
    torch.testing.assert_close(adam.weight, fit.weight, atol=0.05, rtol=0)


def test_subset_probe_equals_probe_on_gathered_columns():
    x, y, _ = planted(40, 1, 12, INFORMATIVE)
    x = x[:, 0][None]
    y = y[None]
    subset = torch.tensor([[[3, 7, 0]]])
    a = train_probes(x, y, subset=subset, steps=100)
    b = train_probes(x[..., [3, 7, 0]], y, steps=100)
    torch.testing.assert_close(a.weight[0, 0, [3, 7, 0]], b.weight[0, 0])
    assert a.gate[0, 0].nonzero().flatten().tolist() == [0, 3, 7]
    torch.testing.assert_close(a.accuracy(x, y), b.accuracy(x[..., [3, 7, 0]], y))


def test_mask_probes_of_different_widths_equal_probes_on_their_columns():
    x, y, _ = planted(40, 1, 12, INFORMATIVE)
    x, y = x[:, 0][None], y[None]
    cols = [[3, 7, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
    mask = torch.zeros(2, 1, 12, dtype=torch.bool)
    for v, c in enumerate(cols):
        mask[v, 0, c] = True
    fit = train_probes(x, y, mask=mask, steps=100)
    for v, c in enumerate(cols):
        ref = train_probes(x[..., c], y, steps=100, solver="adam")
        torch.testing.assert_close(fit.weight[v, 0, c], ref.weight[0, 0])
        torch.testing.assert_close(fit.bias[v], ref.bias[0])
        assert fit.weight[v, 0].count_nonzero() <= len(c)
        assert fit.gate[v, 0].nonzero().flatten().tolist() == sorted(c)
        torch.testing.assert_close(fit.accuracy(x, y)[v], ref.accuracy(x[..., c], y)[0])


def test_sparsity_grows_as_lambda_falls():
    x, y, _ = planted(150, 1, 24, [2, 5], shift=3.0)
    fit = train_probes(x[:, 0][None], y[None], lams=torch.tensor([1.0, 0.3, 0.02]), gated=True, steps=400)
    density = fit.density()[:, 0]
    assert density[0] > 0.9
    assert density[0] > density[1] > density[2]
    assert fit.accuracy(x[:, 0][None], y[None])[1, 0] > 0.9
    open_at_sparsest = fit.gate[2, 0].nonzero().flatten().tolist()
    assert set(open_at_sparsest) <= {2, 5}


# --------------------------------------------------------------------------- selection and statistics


def test_top_k_recovers_planted_neurons():
    x, y, _ = planted(200, 3, 32, INFORMATIVE, shift=1.0)
    t = welch_t(x, y).float()
    ref = scipy.stats.ttest_ind(x[y].numpy(), x[~y].numpy(), equal_var=False).statistic
    np.testing.assert_allclose(t.numpy(), ref, rtol=1e-4)
    for layer in range(3):
        assert sorted(top_k_subsets(t[layer][None], 3)[0].tolist()) == INFORMATIVE


def test_default_top_k_grid_holds_the_papers_sizes():
    assert default_ks(640, 6) == [1, 2, 4, 6, 8, 16, 32, 40, 64, 128, 160, 256, 512, 640]
    assert default_ks(16, 3) == [1, 2, 3, 4, 8, 16]  # no 40 above d
    sp = SparseProbing(ks=None, n_random=0, top_fraction=0.2).fit_activations({"a": planted(20, 1, 16, [0])}, progress=False)
    assert sp.ks_ == default_ks(16, 3) and sp.topk_accuracy_.shape[0] == 6


def test_spearman_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 50, generator=g).round()  # many ties
    a[1, :30] = 0
    b = torch.randn(4, 50, generator=g)
    b[2] = a[2] * 2 + 1
    ours = spearman(a, b)
    for i in range(4):
        torch.testing.assert_close(ours[i], torch.tensor(scipy.stats.spearmanr(a[i], b[i]).statistic, dtype=torch.float32))
    assert torch.isnan(spearman(torch.ones(1, 5), torch.randn(1, 5)))[0]


def test_pair_split_keeps_pairs_together_and_is_fixed():
    a = pair_split(100, 0.2, seed=0, task="x")
    assert a.sum() == 20 and torch.equal(a, pair_split(100, 0.2, seed=0, task="x"))
    assert not torch.equal(a, pair_split(100, 0.2, seed=0, task="y"))
    assert not torch.equal(a, pair_split(100, 0.2, seed=1, task="x"))
    with pytest.raises(ValueError, match="test_fraction"):
        pair_split(100, 1.0, seed=0)
    assert log_grid(10) == [1, 2, 4, 8, 10] and log_grid(8) == [1, 2, 4, 8]


# --------------------------------------------------------------------------- activation store


def test_store_round_trip_and_completeness(tmp_path):
    acts = torch.randn(6, 2, 4)
    labels = torch.tensor([True, False] * 3)
    groups = torch.arange(3).repeat_interleave(2)
    store = ActivationStore(tmp_path / "s", config={"model": "toy", "layers": [0, 1]})
    store.write("task_a", acts, labels, groups)
    assert not store.is_complete() and store.keys() == ["task_a"]
    with pytest.raises(ValueError, match="not complete"):
        store.complete_keys()
    with pytest.raises(ValueError, match="task_b"):
        store.mark_complete(["task_a", "task_b"])
    # a reopened, interrupted store keeps its finished chunk and is still not complete
    store = ActivationStore(tmp_path / "s", config={"layers": [0, 1], "model": "toy"})
    assert store.has("task_a") and not store.is_complete()
    store.write("task_b", acts * 2, labels, groups)
    store.mark_complete(["task_a", "task_b"])
    assert store.is_complete() and store.is_complete(["task_b", "task_a"]) and not store.is_complete(["task_a"])
    got, got_labels, got_groups = store.read("task_b")
    torch.testing.assert_close(got, (acts * 2).half().float())
    assert got.dtype == torch.float32 and torch.equal(got_labels, labels) and torch.equal(got_groups, groups)
    assert not list(tmp_path.glob("s/.*"))  # no temporary files left behind
    with pytest.raises(ValueError, match="complete"):
        store.write("task_c", acts, labels, groups)
    with pytest.raises(ValueError, match="different configuration"):
        ActivationStore(tmp_path / "s", config={"model": "other"})
    with pytest.raises(ValueError, match="store key"):
        store.has("../evil")
    with pytest.raises(KeyError, match="task_z"):
        store.read("task_z")


def test_store_loses_completeness_if_a_chunk_vanishes(tmp_path):
    store = ActivationStore(tmp_path)
    store.write("a", torch.zeros(2, 1, 3), torch.tensor([True, False]), torch.zeros(2, dtype=torch.long))
    store.mark_complete(["a"])
    (tmp_path / "a.pt").unlink()
    assert not store.is_complete()


# --------------------------------------------------------------------------- extraction on a toy model


def _pairs(task, n):
    return [MinimalPair(task, f"the cat {task} sat {i}.", f"cat the {task} sat {i}.", i) for i in range(n)]


def test_eos_states_equal_resid_post_at_appended_eos():
    model = toy_model(attn_only=True, n_layers=2, d_model=16)
    texts = ["a b c", "longer text here"]
    got = eos_states(model, texts, layers=[1, 0])
    for i, text in enumerate(texts):
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        tokens = torch.tensor([[model.tokenizer.bos_token_id, *ids, model.tokenizer.eos_token_id]])
        _, cache = model.run_with_cache(tokens)
        for slot, layer in enumerate([1, 0]):
            torch.testing.assert_close(got[i, slot], cache[f"blocks.{layer}.hook_resid_post"][0, -1])


def test_extract_to_store_resumes(tmp_path, monkeypatch):
    import lensneurons.lenses.grammar.extraction as sp_mod

    model = toy_model(attn_only=True, n_layers=2, d_model=16)
    pairs = {"t1": _pairs("t1", 3), "t2": _pairs("t2", 4)}
    calls = []
    real = sp_mod.eos_states

    def counting(model, texts, **kw):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted in the middle of the second task
        return real(model, texts, **kw)

    monkeypatch.setattr(sp_mod, "eos_states", counting)
    with pytest.raises(KeyboardInterrupt):
        extract_to_store(model, pairs, tmp_path / "store", progress=False)
    store = ActivationStore(tmp_path / "store", config=sp_mod.store_config(model, [0, 1]))
    assert store.keys() == ["t1"] and not store.is_complete()
    extract_to_store(model, pairs, tmp_path / "store", progress=False)
    assert calls == [6, 8, 8]  # t1 was not recomputed
    assert store.is_complete(["t1", "t2"])
    acts, labels, groups = store.read("t2")
    assert acts.shape == (8, 2, 16) and labels.tolist() == [True, False] * 4
    torch.testing.assert_close(acts, real(model, [s for p in pairs["t2"] for s in (p.good, p.bad)]).half().float())
    with pytest.raises(ValueError, match="holds 3 pairs of task 't1' but 2 were asked for"):
        extract_to_store(model, {"t1": _pairs("t1", 2)}, tmp_path / "store", progress=False)


# --------------------------------------------------------------------------- the analysis object


def test_analysis_shapes_and_accuracies(fitted):
    sp, data = fitted
    assert sp.lams_.tolist() == pytest.approx([1.0, 0.3, 0.05])
    assert sp.mask_accuracy_.shape == (3, 2, 3) and sp.gates_.shape == (3, 2, 3, 16)
    assert sp.topk_accuracy_.shape == (3, 2, 3) and sp.random_accuracy_.shape == (3, 3, 2, 3)
    assert sp.dense_accuracy_.min() > 0.85
    assert sp.topk_accuracy_[1].min() > 0.85  # the 3 planted neurons (2 for task_c) suffice
    assert (sp.mask_density_[0] > sp.mask_density_[2]).all()
    # splits hold whole pairs out, per task
    assert {t: int(s.sum()) for t, s in sp.splits_.items()} == {"task_a": 12, "task_b": 10, "task_c": 12}


def test_analysis_welch_t_uses_train_split_only(fitted):
    sp, data = fitted
    acts, labels, pairs = data["task_b"]
    train = ~sp.splits_["task_b"][pairs]
    ref = scipy.stats.ttest_ind(acts[train & labels].numpy(), acts[train & ~labels].numpy(), equal_var=False).statistic
    np.testing.assert_allclose(sp.t_[:, 1].numpy(), ref, rtol=1e-4)
    assert set(sp.top_neurons("task_a", 3, layer=1).indices.tolist()) == set(INFORMATIVE)


def test_analysis_spearman_and_neuron_sets(fitted):
    sp, _ = fitted
    gates, t = sp.gates_[1, 0, 2], sp.t_[0, 2].abs()
    torch.testing.assert_close(sp.spearman_[1, 0, 2], torch.tensor(scipy.stats.spearmanr(gates, t).statistic, dtype=torch.float32))
    s = sp.neurons("task_a", lam=0.05)
    assert s.site == "resid" and len(s) == int((sp.gates_[2, :, 0] > 0).sum())
    assert len(sp.neurons("task_a", lam=0.05, layers=1)) == int((sp.gates_[2, 1, 0] > 0).sum())


def test_cross_task_diagonal_equals_own_test_accuracy(fitted):
    sp, _ = fitted
    assert sp.cross_task_.shape == (3, 3)
    layer, li, dense = sp.cross_layer_, sp._lam_index(0.3), sp._lam_index(1.0)
    torch.testing.assert_close(sp.cross_task_.diagonal(), sp.mask_accuracy_[li, layer])
    torch.testing.assert_close(sp.cross_task_dense_.diagonal(), sp.mask_accuracy_[dense, layer])
    torch.testing.assert_close(sp.cross_task_diff_, sp.cross_task_ - sp.cross_task_dense_)
    assert sp.cross_task_[0, 1] > 0.85  # same planted neurons: transfers
    assert sp.cross_task_[0, 2] < 0.75  # different neurons: does not


def test_wide_subset_probes_train_together_as_masks(fitted, monkeypatch):
    import lensneurons.lenses.grammar.probes as probes_mod

    sp, data = fitted
    batch = sp._prepare(["task_a"], data, 2, 16)
    gen = torch.Generator().manual_seed(1)
    subsets = [torch.stack([top_k_subsets(torch.randn(2, 16, generator=gen), k) for _ in range(3)]) for k in (3, 5, 8)]
    monkeypatch.setattr(probes_mod, "NEWTON_MAX_WIDTH", 4)  # k = 5 and 8 train as masks, together; k = 3 by Newton
    together = sp._subset_accuracies(batch, subsets)
    monkeypatch.setattr(probes_mod, "_MASK_BUDGET", 1)  # one variant per call
    torch.testing.assert_close(sp._subset_accuracies(batch, subsets), together)
    # reference: each probe alone on its gathered columns (Adam for the masked ones, as in the batch)
    (x, y, valid), (xt, yt, vt) = batch["train"], batch["test"]
    for s, acc in zip(subsets, together):
        solver = "newton" if s.shape[2] <= 4 else "adam"
        for v in range(s.shape[0]):
            for g in range(s.shape[1]):
                cols = s[v, g]
                ref = train_probes(x[g : g + 1][..., cols], y[g : g + 1], valid=valid[g : g + 1], solver=solver,
                                   steps=sp.steps, lr=sp.lr, C=sp.C)
                expected = ref.accuracy(xt[g : g + 1][..., cols], yt[g : g + 1], vt[g : g + 1])[0, 0]
                torch.testing.assert_close(acc[v, g], expected)


def test_random_match_k(fitted):
    sp, _ = fitted
    k = sp.random_match_k()
    assert k.shape == (2, 3)
    mean = sp.random_accuracy_.mean(1)
    for layer in range(2):
        for task in range(3):
            reached = [kk for i, kk in enumerate(sp.random_ks_) if mean[i, layer, task] >= sp.top_reference_accuracy_[layer, task]]
            want = float(min(reached)) if reached else float("nan")
            assert (np.isnan(want) and torch.isnan(k[layer, task])) or float(k[layer, task]) == want


def _fitted_tensors(sp):
    return {name: getattr(sp, name) for name in ("mask_accuracy_", "mask_density_", "gates_", "dense_accuracy_", "t_",
                                               "topk_accuracy_", "random_accuracy_", "top_reference_accuracy_",
                                               "spearman_", "cross_task_", "cross_task_dense_")}


def test_interrupted_fit_resumes_from_its_checkpoint_and_equals_one_pass(fitted, tmp_path, monkeypatch):
    sp, data = fitted
    params = sp.get_params()
    ckpt = tmp_path / "probing.pt"
    calls = []
    original = SparseProbing._fit_chunk

    def fail_on_second_chunk(self, batch, gen):
        calls.append(batch["n_tasks"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, batch, gen)

    monkeypatch.setattr(SparseProbing, "_fit_chunk", fail_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        SparseProbing(**params).fit_activations(data, progress=False, checkpoint=ckpt)
    assert ckpt.exists() and not list(tmp_path.glob(".probing.pt.*"))  # the first chunk (2 tasks) was saved, no temporary left
    calls.clear()
    resumed = SparseProbing(**params).fit_activations(data, progress=False, checkpoint=ckpt)
    assert calls == [1]  # only the last chunk (1 task) ran again
    assert not ckpt.exists()  # removed once the fit is complete
    for name, value in _fitted_tensors(sp).items():
        torch.testing.assert_close(getattr(resumed, name), value, rtol=0, atol=0, equal_nan=True, msg=name)
    assert {t: s.tolist() for t, s in resumed.splits_.items()} == {t: s.tolist() for t, s in sp.splits_.items()}


def test_checkpoint_of_another_fit_is_refused(fitted, tmp_path):
    sp, data = fitted
    from lensneurons.core.results import Checkpoint

    ckpt = Checkpoint(tmp_path / "probing.pt")
    ckpt.save({**sp._partial_state(), "chunks_done": 1, "cross_probes": [], "cross_test": [],
               "generator": torch.Generator().get_state()})
    with pytest.raises(ValueError, match="other parameters"):
        SparseProbing(**{**sp.get_params(), "steps": 7}).fit_activations(data, progress=False, checkpoint=ckpt)
    with pytest.raises(ValueError, match="other tasks"):
        SparseProbing(**sp.get_params()).fit_activations({"task_a": data["task_a"]}, progress=False, checkpoint=ckpt)


def test_state_dict_round_trip(fitted, tmp_path):
    sp, _ = fitted
    torch.save(sp.state_dict(), tmp_path / "probes.pt")
    back = SparseProbing.from_state_dict(torch.load(tmp_path / "probes.pt", weights_only=True))
    for name, value in _fitted_tensors(sp).items():
        torch.testing.assert_close(getattr(back, name), value, rtol=0, atol=0, equal_nan=True, msg=name)
    assert back.tasks_ == sp.tasks_ and back.ks_ == sp.ks_ and back.top_k_ == sp.top_k_
    torch.testing.assert_close(back.random_match_k(), sp.random_match_k(), equal_nan=True)
    assert back.neurons("task_a", lam=0.3) == sp.neurons("task_a", lam=0.3)
    with pytest.raises(ValueError, match="other parameters"):
        SparseProbing(steps=3).load_state_dict(sp.state_dict())


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_a_clear_error(fitted):
    sp, data = fitted
    small = {"a": planted(10, 1, 8, [0])}
    with pytest.raises(ValueError, match="ks must be integers in 1..8"):
        SparseProbing(ks=[4, 9]).fit_activations(small, progress=False)
    for lam in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            SparseProbing(lams=[1.0, lam]).fit_activations(small, progress=False)
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            check_lams([lam])
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        sp.neurons("nope", lam=0.3)
    with pytest.raises(ValueError, match="λ=0.7 was not fitted"):
        sp.neurons("task_a", lam=0.7)
    acts, labels, pairs = planted(10, 1, 8, [0])
    with pytest.raises(ValueError, match="20 activation rows but 19 labels"):
        SparseProbing().fit_activations({"a": (acts, labels[:-1], pairs)}, progress=False)
    with pytest.raises(ValueError, match="only one class"):
        train_probes(acts[:, 0][None], torch.ones(1, 20, dtype=torch.bool))
    with pytest.raises(ValueError, match="same neuron twice"):
        train_probes(acts[:, 0][None], labels[None], subset=torch.tensor([[[1, 2, 1]]]))
    one_mask = torch.zeros(1, 1, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="at least one neuron"):
        train_probes(acts[:, 0][None], labels[None], mask=one_mask)
    one_mask[..., 2] = True
    with pytest.raises(ValueError, match="one of subset and mask"):
        train_probes(acts[:, 0][None], labels[None], mask=one_mask, subset=torch.tensor([[[1]]]))
    with pytest.raises(ValueError, match="not as a mask"):
        train_probes(acts[:, 0][None], labels[None], mask=one_mask, solver="newton")
    with pytest.raises(ValueError, match="needs lams"):
        train_probes(acts[:, 0][None], labels[None], gated=True)
    with pytest.raises(ValueError, match="solver"):
        train_probes(acts[:, 0][None], labels[None], solver="sgd")
    with pytest.raises(ValueError, match="newton"):
        train_probes(acts[:, 0][None], labels[None], lams=torch.tensor([0.5]), gated=True, solver="newton")
    with pytest.raises(ValueError, match="k must be between 1 and the number of neurons"):
        top_k_subsets(torch.randn(1, 8), 9)
    with pytest.raises(RuntimeError, match="not fitted"):
        SparseProbing().neurons("a", 1.0)


# --------------------------------------------------------------------------- pipeline


def test_pipeline_writes_tables_and_figures_and_reuses_the_store(tmp_path, monkeypatch):
    import hashlib
    import json

    from lensneurons.data import DATA_DIR_ENV, MANIFEST_DIR_ENV
    from lensneurons.data import manifests as mf
    from lensneurons.lenses.grammar import study as pipe

    (tmp_path / "data" / "blimp").mkdir(parents=True)
    (tmp_path / "manifests").mkdir()
    files = {}
    for task in ("t_one", "t_two"):
        rows = [{"sentence_good": f"the dog {task} runs {i}.", "sentence_bad": f"the dog {task} run {i}.",
                 "field": "morphology", "linguistics_term": "agreement", "pairID": str(i)} for i in range(12)]
        content = "".join(json.dumps(r) + "\n" for r in rows).encode()
        (tmp_path / "data" / "blimp" / f"{task}.jsonl").write_bytes(content)
        files[f"{task}.jsonl"] = {"sha256": hashlib.sha256(content).hexdigest(), "lines": 12}
    manifest = {"name": "blimp", "description": "fake", "license": "FAKE", "citation": "fake",
                "source": {"repository": "x", "commit": None}, "hub": None, "local_dir": "blimp", "files": files}
    (tmp_path / "manifests" / "blimp.json").write_text(json.dumps(manifest))
    monkeypatch.setenv(MANIFEST_DIR_ENV, str(tmp_path / "manifests"))
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    mf._HASH_CACHE.clear()

    model = toy_model(attn_only=True, n_layers=2, d_model=16)
    cfg = pipe.RunConfig(lams=[1.0, 0.2], ks=[2, 16], random_ks=[2], n_random=2, top_fraction=0.1, test_fraction=0.25,
                         cross_layer=1, steps=20)
    result = pipe.run(model, cfg, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    for name in ("config.json", "summary.json", "per_layer.csv", "mask_probes.csv", "topk_probes.csv",
                 "random_probes.csv", "cross_task.csv", "fig2_mask_density_accuracy.png", "fig3_topk_accuracy.png",
                 "fig4_spearman.png", "fig5_top_vs_random.png", "fig6_cross_task.png"):
        assert (out / name).stat().st_size > 0, name
    summary = result["summary"]
    assert summary["cross_layer"] == 1 and len(summary["per_layer"]) == 2 * 2
    assert ActivationStore(out / "activations", config={**pipe.store_config(model, [0, 1]), "n_pairs": None}).is_complete(
        ["t_one", "t_two"])
    import lensneurons.lenses.grammar.analysis as sp_mod
    import lensneurons.lenses.grammar.extraction as extraction

    calls = []
    monkeypatch.setattr(extraction, "eos_states", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(sp_mod.SparseProbing, "fit_activations", lambda *a, **k: calls.append(2))
    first_table = (out / "per_layer.csv").read_text()
    pipe.run(model, cfg, out, progress=False)
    assert calls == []  # the complete store and the saved fit (probes.pt) were reused
    assert (out / "per_layer.csv").read_text() == first_table
    assert not (out / "probing_checkpoint.pt").exists()
    with pytest.raises(ValueError, match="different configuration"):
        pipe.run(model, pipe.RunConfig(steps=21), out, progress=False)
