import pytest
import torch

from lensneurons.core.neurons import NeuronSet, overlap_matrix


def make(pairs, n_layers=3, width=4, site="mlp"):
    t = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    return NeuronSet.from_pairs(site, n_layers, width, t[:, 0], t[:, 1])


def test_pairs_round_trip_and_histogram():
    s = make([(2, 3), (0, 1), (2, 0), (0, 1)])
    assert list(s) == [(0, 1), (2, 0), (2, 3)]
    assert s.layer_histogram().tolist() == [1, 0, 2]
    assert {k: v.tolist() for k, v in s.by_layer().items()} == {0: [1], 2: [0, 3]}
    assert (2, 3) in s and (1, 3) not in s


def test_set_algebra_matches_python_sets():
    a, b = make([(0, 0), (1, 1), (2, 2)]), make([(1, 1), (2, 3)])
    assert set(a | b) == set(a) | set(b)
    assert set(a & b) == set(a) & set(b)
    assert set(a - b) == set(a) - set(b)


def test_overlap_matrix():
    sets = {"x": make([(0, 0), (1, 1)]), "y": make([(1, 1), (2, 2), (2, 3)])}
    assert overlap_matrix(sets).tolist() == [[2, 1], [1, 3]]


def test_top_k_and_save_load(tmp_path):
    scores = torch.arange(12.0).reshape(3, 4)
    top = NeuronSet.top_k("mlp", scores, 2)
    assert list(top) == [(2, 2), (2, 3)]
    assert list(NeuronSet.top_k("mlp", scores, 2, largest=False)) == [(0, 0), (0, 1)]
    top.save(tmp_path / "s.json")
    assert NeuronSet.load(tmp_path / "s.json") == top


def test_errors():
    with pytest.raises(ValueError, match="k must be"):
        NeuronSet.top_k("mlp", torch.zeros(2, 2), 5)
    with pytest.raises(ValueError, match="layer out of range"):
        make([(3, 0)])
    with pytest.raises(ValueError, match="unknown hook site"):
        make([(0, 0)], site="attn output")
    with pytest.raises(ValueError, match="different sites"):
        make([(0, 0)]) | make([(0, 0)], width=5)
