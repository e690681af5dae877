import inspect
import io
import pickle
import sys

import numpy as np
import pytest
import torch
from scipy import stats as sps
from sklearn.metrics import average_precision_score

if "lensneurons.core.stats" not in sys.modules:
    # instrument this module even when nothing imported it inside conftest's hook
    from jaxtyping import install_import_hook

    with install_import_hook("lensneurons.core.stats", "beartype.beartype"):
        import lensneurons.core.stats  # noqa: F401

import lensneurons.core.stats as stats_module
from lensneurons.core.stats import (
    MeanVar,
    Stack,
    TopK,
    WelchT,
    average_precision,
    average_precision_multi,
    median,
    row_mean,
    welch_t,
    welch_t_from_moments,
)


def _labels(n: int, n_pos: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, dtype=torch.bool)
    labels[torch.randperm(n, generator=g)[:n_pos]] = True
    return labels


@pytest.fixture
def small_blocks(monkeypatch):
    """Makes the chunked loops over neurons take many tiny blocks."""
    monkeypatch.setattr(stats_module._common, "BLOCK_ELEMENTS", 37)


def _sklearn_ap(scores: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    flat = scores.reshape(scores.shape[0], -1).float().numpy()
    y = labels.numpy()
    return np.array([average_precision_score(y, flat[:, j]) for j in range(flat.shape[1])]).reshape(scores.shape[1:])


def _close(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> None:
    # (torch.testing.assert_close spends a second on imports at its first call)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=rtol, atol=atol)


def _random_splits(n: int, n_parts: int, gen: torch.Generator) -> list[torch.Tensor]:
    """A random permutation of range(n) cut into n_parts uneven (possibly empty) pieces."""
    perm = torch.randperm(n, generator=gen)
    cuts = sorted(torch.randint(0, n + 1, (n_parts - 1,), generator=gen).tolist())
    return [perm[a:b] for a, b in zip([0, *cuts], [*cuts, n])]


# ---------------------------------------------------------------- average precision


def test_average_precision_matches_sklearn_random():
    scores = torch.randn(40, 3, 5)
    labels = _labels(40, 11)
    got = average_precision(scores, labels, chunk_size=4)
    assert got.dtype == torch.float64 and got.shape == (3, 5)
    np.testing.assert_allclose(got.numpy(), _sklearn_ap(scores, labels), rtol=0, atol=1e-12)


def test_average_precision_matches_sklearn_with_ties():
    scores = torch.randint(0, 4, (50, 30)).float()
    scores[:, 0] = 2.0  # constant column: one tie group, AP = positive rate
    scores[:, 1] = torch.tensor([0.0, -0.0] * 25)  # -0.0 == 0.0
    scores[:, 2] = torch.randint(0, 2, (50,)).float()
    labels = _labels(50, 17, seed=1)
    got = average_precision(scores, labels, chunk_size=7)
    np.testing.assert_allclose(got.numpy(), _sklearn_ap(scores, labels), rtol=0, atol=1e-12)
    assert got[0].item() == pytest.approx(17 / 50)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_average_precision_dtypes(dtype):
    scores = torch.randn(30, 8).to(dtype)
    labels = _labels(30, 9)
    np.testing.assert_allclose(average_precision(scores, labels).numpy(), _sklearn_ap(scores, labels), atol=1e-12)


def test_average_precision_one_dimensional_scores():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4])
    labels = torch.tensor([False, False, True, True, True])
    got = average_precision(scores, labels)
    assert got.shape == ()
    assert got.item() == pytest.approx(average_precision_score(labels.numpy(), scores.numpy()), abs=1e-12)


def test_average_precision_multi_matches_single():
    scores = torch.randint(0, 5, (36, 4, 3)).float()
    labels = torch.stack([_labels(36, n_pos, seed=n_pos) for n_pos in (1, 6, 35)])
    got = average_precision_multi(scores, labels, chunk_size=5)
    assert got.shape == (3, 4, 3)
    for i in range(3):
        assert torch.equal(got[i], average_precision(scores, labels[i]))


def test_average_precision_multi_partition_matches_sklearn():
    # one label per text (plus unlabelled texts): the one-sort packed path; tied and
    # untied columns mixed in one chunk so both the fast and the exact row paths run
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(60, 12, generator=gen)
    scores[:, :4] = torch.randint(0, 3, (60, 4), generator=gen).float()
    scores[:5, 5] = torch.tensor([float("inf"), -float("inf"), 1e-45, -1e-45, -0.0])
    language = torch.randint(0, 4, (60,), generator=gen)  # 3 = unlabelled
    labels = torch.stack([language == i for i in range(3)])
    got = average_precision_multi(scores, labels, chunk_size=5)
    same_order = scores.clamp(-3e38, 3e38)  # sklearn rejects infinities; AP depends only on order
    for i in range(3):
        np.testing.assert_allclose(got[i].numpy(), _sklearn_ap(same_order, labels[i]), rtol=0, atol=1e-12)


def test_average_precision_multi_overlapping_labels_matches_sklearn():
    scores = torch.randn(40, 6)
    labels = torch.stack([_labels(40, 10, seed=4), _labels(40, 25, seed=5)])  # overlap
    got = average_precision_multi(scores, labels, chunk_size=4)
    for i in range(2):
        np.testing.assert_allclose(got[i].numpy(), _sklearn_ap(scores, labels[i]), rtol=0, atol=1e-12)


def test_average_precision_rows_equals_the_copied_subset():
    gen = torch.Generator().manual_seed(8)
    scores = torch.randn(50, 3, 4, generator=gen)
    scores[:, 0] = torch.randint(0, 3, (50, 4), generator=gen).float()  # ties: the exact path
    rows = torch.tensor([49, 3, 7, 7, 20, 0, 31, 12, 5, 44])  # unsorted, with a repeat
    labels = torch.tensor([True, False, True, False, False, True, False, False, True, False])
    got = average_precision(scores, labels, chunk_size=5, rows=rows)
    assert torch.equal(got, average_precision(scores[rows], labels, chunk_size=5))
    np.testing.assert_allclose(got.flatten().numpy(), _sklearn_ap(scores[rows].flatten(1), labels), atol=1e-12)


def test_average_precision_bad_rows():
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 50\)"):
        average_precision(torch.randn(50, 4), torch.tensor([True, False, True]), rows=torch.tensor([0, 1, 50]))
    # a float index or a length mismatch is caught by the shape check (runtime jaxtyping here,
    # our own ValueError where type checking is off)
    with pytest.raises((ValueError, TypeError)):
        average_precision(torch.randn(50, 4), torch.tensor([True, False, True]), rows=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises((ValueError, TypeError)):
        average_precision(torch.randn(50, 4), torch.tensor([True, False, True]), rows=torch.tensor([0, 1]))


@pytest.mark.parametrize("fill", [True, False])
def test_average_precision_one_class_raises(fill):
    labels = torch.full((6,), fill)
    with pytest.raises(ValueError, match="only one class"):
        average_precision(torch.randn(6, 2), labels)


def test_average_precision_length_mismatch_raises():
    scores, labels = torch.randn(6, 2), _labels(5, 2)
    # without run-time annotation checks the function's own message; with them, the checker's
    with pytest.raises(ValueError, match="labels has 5 entries but scores has 6 rows"):
        inspect.unwrap(average_precision)(scores, labels)
    with pytest.raises((ValueError, TypeError)):
        average_precision(scores, labels)


def test_average_precision_bad_input_raises():
    scores = torch.randn(6, 2)
    scores[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        average_precision(scores, _labels(6, 2))
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        average_precision(torch.randn(6, 2), _labels(6, 2), chunk_size=0)


# ---------------------------------------------------------------- Welch's t, MeanVar, median


def test_welch_t_matches_scipy(small_blocks):
    x = torch.randn(20, 4, 3) * torch.rand(4, 3) + torch.randn(4, 3)
    labels = _labels(20, 7)
    got = welch_t(x, labels)
    want = sps.ttest_ind(x[labels].double().numpy(), x[~labels].double().numpy(), equal_var=False, axis=0).statistic
    assert got.dtype == torch.float64 and got.shape == (4, 3)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


def test_welch_t_needs_two_per_group():
    with pytest.raises(ValueError, match="at least 2 rows in each group"):
        welch_t(torch.randn(5, 3), _labels(5, 1))
    with pytest.raises(ValueError, match="at least 2 samples per group"):
        welch_t_from_moments(torch.zeros(2), torch.ones(2), 1, torch.zeros(2), torch.ones(2), 5)


def test_welch_t_streaming_uneven_batches_and_shards(small_blocks):
    n = 53
    x = torch.randn(n, 6, 2)
    labels = _labels(n, 20)
    want = welch_t(x, labels)
    gen = torch.Generator().manual_seed(3)
    shards = []
    for part in _random_splits(n, 3, gen):
        shard = WelchT(labels)
        for ids in _random_splits(len(part), 4, gen):
            shard.update(x[part[ids]], part[ids])
        shards.append(shard)
    merged = shards[2].merge(shards[0]).merge(shards[1])
    assert merged.pos.count == 20 and merged.neg.count == n - 20
    _close(merged.t, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="different labels"):
        merged.merge(WelchT(~labels))


def test_meanvar_merge_equals_single_pass(small_blocks):
    x = torch.randn(101, 3, 4) * 5 + 100
    single = MeanVar().update(x)
    gen = torch.Generator().manual_seed(4)
    shards = []
    for part in _random_splits(101, 4, gen):
        shard = MeanVar()
        for ids in _random_splits(len(part), 3, gen):
            shard.update(x[part[ids]])
        shards.append(shard)
    merged = MeanVar()
    for shard in reversed(shards):
        merged.merge(shard)
    assert merged.count == single.count == 101
    xd = x.double()
    _close(single.mean, xd.mean(0), rtol=1e-14, atol=0)
    _close(single.var, xd.var(0), rtol=1e-12, atol=0)
    _close(merged.mean, single.mean, rtol=1e-14, atol=0)
    _close(merged.var, single.var, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        MeanVar().update(x[:1]).var


@pytest.mark.parametrize("n", [1, 7, 8])
def test_median_matches_numpy(n):
    x = torch.randint(0, 5, (n, 3, 4)).float() + torch.randn(n, 3, 4) * (torch.arange(4) % 2)
    np.testing.assert_array_equal(median(x, chunk_size=5).numpy(), np.median(x.numpy(), axis=0))


def test_median_nan_and_one_dimensional():
    x = torch.randn(6, 3)
    x[2, 1] = float("nan")
    np.testing.assert_array_equal(median(x).numpy(), np.median(x.numpy(), axis=0))
    v = torch.tensor([3.0, 1.0, 4.0, 2.0])
    assert median(v).item() == 2.5
    with pytest.raises(ValueError, match="at least one row"):
        median(torch.zeros(0, 3))


def test_median_and_row_mean_of_selected_rows_match_numpy():
    x = torch.randn(40, 3, 5)
    rows = torch.tensor([3, 0, 17, 39, 8, 8])  # any order; repeats count twice, as in x[rows]
    expected = x[rows].double().numpy()
    np.testing.assert_array_equal(median(x, chunk_size=4, rows=rows).numpy(), np.median(x[rows].numpy(), axis=0))
    np.testing.assert_allclose(row_mean(x, rows, chunk_size=4).numpy(), expected.mean(0), rtol=1e-13)
    np.testing.assert_allclose(row_mean(x).numpy(), x.double().numpy().mean(0), rtol=1e-13)
    assert row_mean(x).dtype == torch.float64
    for bad in (torch.tensor([40]), torch.tensor([-1])):
        with pytest.raises(ValueError, match="rows must lie in"):
            row_mean(x, bad)
        with pytest.raises(ValueError, match="rows must lie in"):
            median(x, rows=bad)
    with pytest.raises(ValueError, match="at least one row"):
        row_mean(x, torch.tensor([], dtype=torch.long))


# ---------------------------------------------------------------- Stack


def test_stack_merged_out_of_order_equals_single_pass():
    n = 23
    x = torch.randn(n, 2, 3)
    single = Stack().update(x, torch.arange(n))
    gen = torch.Generator().manual_seed(5)
    shards = []
    for part in _random_splits(n, 3, gen):
        shard = Stack()
        for ids in _random_splits(len(part), 3, gen):
            shard.update(x[part[ids]], part[ids])
        shards.append(shard)
    merged = shards[1].merge(shards[2]).merge(shards[0])
    assert torch.equal(merged.values, single.values) and torch.equal(merged.values, x)
    assert torch.equal(merged.ids, torch.arange(n))


def test_reducers_copy_their_input():
    x = torch.randn(4, 3)
    buf = x.clone()
    stack = Stack().update(buf, torch.arange(4))
    topk = TopK(2).update(buf, torch.arange(4))  # pooled, not yet selected
    buf.zero_()  # the caller reuses its buffer
    assert torch.equal(stack.values, x)
    assert torch.equal(topk.values, x.topk(2, dim=0).values)


def test_reducers_under_inference_mode():
    """Fed inside torch.inference_mode (as activation streaming does), read and fed outside."""
    x, ids, labels = torch.randn(10, 4), torch.arange(10), _labels(10, 4)
    reducers = [MeanVar(), WelchT(labels), Stack(), TopK(3)]
    with torch.inference_mode():
        for r in reducers:
            r.update(x[:5], ids[:5])
    for r in reducers:
        r.update(x[5:], ids[5:])
    mv, wt, st, tk = reducers
    _close(mv.mean, x.double().mean(0), rtol=1e-14, atol=1e-15)
    _close(wt.t, welch_t(x, labels), rtol=1e-12, atol=0)
    assert torch.equal(st.values, x)
    assert torch.equal(tk.values, x.topk(3, dim=0).values)


def test_stack_duplicate_ids_raise():
    a = Stack().update(torch.randn(3, 2), torch.tensor([0, 1, 2]))
    b = Stack().update(torch.randn(2, 2), torch.tensor([5, 1]))
    with pytest.raises(ValueError, match="duplicate text id 1"):
        a.merge(b)
    c = Stack().update(torch.randn(2, 2), torch.tensor([4, 4]))
    with pytest.raises(ValueError, match="duplicate text id 4"):
        c.values


# ---------------------------------------------------------------- TopK


def _brute_topk(x: torch.Tensor, ids: torch.Tensor, k: int, largest: bool):
    flat = x.reshape(x.shape[0], -1).numpy()
    ids = ids.numpy()
    vals_out, ids_out = [], []
    for j in range(flat.shape[1]):
        col = flat[:, j]
        order = np.lexsort((ids, -col if largest else col))[:k]  # by value, then smaller id
        vals_out.append(col[order])
        ids_out.append(ids[order])
    m = min(k, x.shape[0])
    shape = (m, *x.shape[1:])
    return (
        torch.from_numpy(np.stack(vals_out, axis=1).reshape(shape)),
        torch.from_numpy(np.stack(ids_out, axis=1).reshape(shape)),
    )


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("k", [1, 4, 40])
def test_topk_equals_brute_force_in_any_batch_order(largest, k, monkeypatch, small_blocks):
    monkeypatch.setattr(TopK, "_BLOCK", 3)  # exercise pooling and splitting of batches
    monkeypatch.setattr(TopK, "_BLOCK_VALUES", 0)
    n = 31
    x = torch.randint(-3, 3, (n, 5, 2)).float()  # heavy ties
    x[::2][x[::2] == 0] = -0.0  # equal to 0.0, so tied with it
    text_ids = torch.randperm(1000)[:n]  # ids need not be 0..n-1
    want_vals, want_ids = _brute_topk(x, text_ids, k, largest)
    gen = torch.Generator().manual_seed(k)
    for _ in range(3):
        topk = TopK(k, largest=largest)
        for rows in _random_splits(n, 5, gen):
            topk.update(x[rows], text_ids[rows])
        assert topk.values.shape == (min(k, n), 5, 2)
        assert torch.equal(topk.values, want_vals)
        assert torch.equal(topk.ids, want_ids)


@pytest.mark.parametrize("numpy_packing", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("largest", [True, False])
def test_topk_long_stream_with_full_state_equals_brute_force(largest, dtype, numpy_packing, monkeypatch):
    """Once the state is full only values that can still enter are ranked: ties at the k-th value with a
    smaller id (ids fall along the stream), ±inf and padding must all come out as brute force says
    (contenders packed by numpy, as on CPU, or by torch, as on GPU)."""
    monkeypatch.setattr(TopK, "_NUMPY_ON_CPU", numpy_packing)
    monkeypatch.setattr(TopK, "_BLOCK", 16)
    monkeypatch.setattr(TopK, "_BLOCK_VALUES", 0)
    n, k = 1500, 7
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(-4, 5, (n, 6), generator=gen).to(dtype)
    x[torch.rand(n, 6, generator=gen) < 0.01] = float("inf")
    x[torch.rand(n, 6, generator=gen) < 0.01] = float("-inf")
    x[:, 5] = float("-inf")  # a column whose k-th value is the padding value
    text_ids = torch.arange(n - 1, -1, -1) * 3  # later rows have smaller ids: ties at the threshold enter
    want_vals, want_ids = _brute_topk(x, text_ids, k, largest)
    topk = TopK(k, largest=largest)
    for rows in _random_splits(n, 60, gen):
        topk.update(x[rows], text_ids[rows])
    assert torch.equal(topk.values, want_vals.to(dtype))
    assert torch.equal(topk.ids, want_ids)


@pytest.mark.parametrize("largest", [True, False])
def test_topk_merged_shards_equal_brute_force(largest, small_blocks):
    n = 40
    x = torch.randint(0, 4, (n, 7)).float()
    want_vals, want_ids = _brute_topk(x, torch.arange(n), 5, largest)
    gen = torch.Generator().manual_seed(6)
    shards = []
    for part in _random_splits(n, 4, gen):
        shard = TopK(5, largest=largest)
        for rows in _random_splits(len(part), 2, gen):
            shard.update(x[part[rows]], part[rows])
        shards.append(shard)
    merged = TopK(5, largest=largest)
    for i in torch.randperm(4, generator=gen).tolist():
        merged.merge(shards[i])
    assert torch.equal(merged.values, want_vals)
    assert torch.equal(merged.ids, want_ids)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_topk_other_dtypes(dtype, small_blocks):
    x = (torch.randint(-2, 2, (25, 6)) * torch.rand(6)).to(dtype)  # ties, and -0.0 next to 0.0
    want_vals, want_ids = _brute_topk(x.float(), torch.arange(25), 4, largest=True)
    topk = TopK(4)
    for rows in torch.arange(25).flip(0).split(6):
        topk.update(x[rows], rows)
    assert topk.values.dtype == dtype
    assert torch.equal(topk.values.float(), want_vals) and torch.equal(topk.ids, want_ids)


def test_topk_read_mid_stream_frees_block_and_continues_exactly(small_blocks):
    """Reading values (as a checkpoint does) frees the pending block; later updates allocate a new one
    and the result still equals brute force over the whole stream."""
    n = 60
    x = torch.randint(-3, 3, (n, 4)).float()
    want_vals, want_ids = _brute_topk(x, torch.arange(n), 6, largest=True)
    topk = TopK(6)
    for rows in torch.arange(n).split(7):
        topk.update(x[rows], rows)
        topk.state_dict()
        assert topk._pending is None
    assert torch.equal(topk.values, want_vals) and torch.equal(topk.ids, want_ids)


def test_topk_filled_in_inference_mode_reads_outside_it(monkeypatch, small_blocks):
    """A stream that fills the block exactly is selected inside the caller's `inference_mode` (as
    `stream_pooled` once left it on between batches); reading and updating outside it must still work."""
    monkeypatch.setattr(TopK, "_BLOCK", 4)
    monkeypatch.setattr(TopK, "_BLOCK_VALUES", 0)
    x = torch.randn(20, 3)
    topk = TopK(4)
    with torch.inference_mode():
        for rows in torch.arange(16).split(4):
            topk.update(x[rows], rows)
    want_vals, want_ids = _brute_topk(x[:16], torch.arange(16), 4, largest=True)
    assert torch.equal(topk.values, want_vals) and torch.equal(topk.ids, want_ids)
    topk.update(x[16:], torch.arange(16, 20))
    want_vals, want_ids = _brute_topk(x, torch.arange(20), 4, largest=True)
    assert torch.equal(topk.values, want_vals) and torch.equal(topk.ids, want_ids)
    assert not topk.values.is_inference()


def test_topk_fewer_rows_than_k():
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    topk = TopK(4).update(x, torch.tensor([7, 2]))
    assert torch.equal(topk.values, torch.tensor([[3.0, 5.0], [1.0, 5.0]]))
    assert torch.equal(topk.ids, torch.tensor([[2, 2], [7, 7]]))


def test_reducers_with_no_neuron_dims():
    x, ids = torch.tensor([1.0, 3.0, 2.0, 3.0]), torch.tensor([0, 1, 2, 3])
    topk = TopK(3).update(x, ids)
    assert torch.equal(topk.values, torch.tensor([3.0, 3.0, 2.0])) and torch.equal(topk.ids, torch.tensor([1, 3, 2]))
    mv = MeanVar().update(x)
    assert mv.mean.shape == () and mv.var.item() == pytest.approx(x.double().var().item())
    assert torch.equal(Stack().update(x[[2, 0]], ids[[2, 0]]).values, x[[0, 2]])


def test_topk_bad_input_raises():
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        TopK(0)
    with pytest.raises(ValueError, match="cannot merge"):
        TopK(2).merge(TopK(3))
    with pytest.raises(ValueError, match="no rows"):
        TopK(2).values
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 2\*\*32\)"):
        TopK(2).update(torch.randn(2, 3), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="NaN"):
        TopK(2).update(torch.tensor([[float("nan")]]), torch.tensor([0]))


# ---------------------------------------------------------------- state dicts


def _round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return pickle.loads(pickle.dumps(torch.load(buf, weights_only=True)))


def test_state_dicts_round_trip():
    x = torch.randn(12, 3)
    ids = torch.arange(12)
    labels = _labels(12, 5)

    mv = MeanVar().update(x)
    mv2 = MeanVar.from_state_dict(_round_trip(mv.state_dict()))
    assert mv2.count == 12 and torch.equal(mv2.mean, mv.mean) and torch.equal(mv2.var, mv.var)

    wt = WelchT(labels).update(x, ids)
    assert torch.equal(WelchT.from_state_dict(_round_trip(wt.state_dict())).t, wt.t)

    st = Stack().update(x[6:], ids[6:])
    st2 = Stack.from_state_dict(_round_trip(st.state_dict())).merge(Stack().update(x[:6], ids[:6]))
    assert torch.equal(st2.values, x)

    tk = TopK(3, largest=False).update(x[:7], ids[:7])
    tk2 = TopK.from_state_dict(_round_trip(tk.state_dict())).update(x[7:], ids[7:])
    want = _brute_topk(x, ids, 3, largest=False)
    assert torch.equal(tk2.values, want[0]) and torch.equal(tk2.ids, want[1])

    empty = TopK.from_state_dict(_round_trip(TopK(3, largest=False).state_dict()))
    assert torch.equal(empty.merge(tk).values, tk.values)
    with pytest.raises(ValueError, match="state dict is for 'TopK'"):
        Stack.from_state_dict(tk.state_dict())
