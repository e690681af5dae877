"""Batched probe training (`lensneurons.lenses.grammar.probes.train_probes`) against a loop of scikit-learn fits.

Same features, same train/test splits, same objective (L2 logistic regression, C=1, features standardised
with the train mean and std):

  A  one `train_probes` call: every (layer, task) probe in one tensor computation (batched Newton for
     probes on at most 64 features, full-batch Adam otherwise; `--solver` forces one)
  B  a Python loop of `sklearn.linear_model.LogisticRegression(C=1).fit` (lbfgs), one per (layer, task)

Reports wall time of each, the ratio B/A, and test accuracy side by side (mean and largest per-probe gap).

    python -m benchmarks.bench_probes [--layers 18] [--tasks 4] [--pairs 1000] [--d 640] [--steps 300] [--k 6]
                                      [--solver auto|adam|newton]
    python -m benchmarks.bench_probes --store PATH   # EOS states of a complete ActivationStore instead

With ``--k`` every probe reads only the k neurons of highest |Welch t| on its train split (the top-k and
random-k probes of paper S, which are most of its probes); both sides get the same columns.

With ``--study`` each (layer, task) gets the plain probes of the sparse-probing study instead: top-k for k on
the powers-of-two grid up to d, and ``--draws`` random draws of k neurons outside the top 1% for k on the
grid from 1% of d (``subset_probe_accuracies``: Newton for k <= 64, all wider ones as masks in one Adam run).

Synthetic features mimic BLiMP EOS states: per pair a shared random base, grammatical sentences shifted
along a random direction whose strength varies by layer.
"""
import argparse
import time

import numpy as np
import torch

from lensneurons.lenses.grammar.analysis import pair_split
from lensneurons.lenses.grammar.probes import NEWTON_MAX_WIDTH, subset_probe_accuracies, train_probes
from lensneurons.lenses.grammar.store import ActivationStore


def synthetic(n_layers: int, n_tasks: int, n_pairs: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for task in range(n_tasks):
        base = torch.randn(n_pairs, 1, n_layers, d, generator=g).expand(-1, 2, -1, -1)
        direction = torch.randn(n_layers, d, generator=g)
        direction = direction / direction.norm(dim=-1, keepdim=True)
        strength = torch.linspace(0.5, 2.5, n_layers)[:, None]
        acts = base + 0.5 * torch.randn(n_pairs, 2, n_layers, d, generator=g)
        acts[:, 0] += strength * direction
        labels = torch.tensor([True, False]).repeat(n_pairs)
        out[f"task{task}"] = (acts.flatten(0, 1), labels, torch.arange(n_pairs).repeat_interleave(2))
    return out


def split(data: dict, test_fraction: float = 0.2):
    """(group, text, neuron) train and test tensors, groups ordered (task, layer); equal sizes per task."""
    xs, ys, xts, yts = [], [], [], []
    for task, (acts, labels, pairs) in data.items():
        is_test = pair_split(int(pairs.max()) + 1, test_fraction, 0, task)[pairs]
        xs.append(acts[~is_test].transpose(0, 1))
        ys.append(labels[~is_test].expand(acts.shape[1], -1))
        xts.append(acts[is_test].transpose(0, 1))
        yts.append(labels[is_test].expand(acts.shape[1], -1))
    return torch.cat(xs).float(), torch.cat(ys), torch.cat(xts).float(), torch.cat(yts)


def top_k_columns(x, y, k):
    from lensneurons.lenses.grammar.analysis import top_k_subsets
    from lensneurons.core.stats import welch_t

    t = torch.stack([welch_t(x[g], y[g]).float() for g in range(x.shape[0])])
    return top_k_subsets(t, k)


def sklearn_loop(x, y, xt, yt, subset=None):
    from sklearn.linear_model import LogisticRegression

    acc = []
    for g in range(x.shape[0]):
        xg, xtg = (x[g], xt[g]) if subset is None else (x[g][:, subset[g]], xt[g][:, subset[g]])
        mu, sd = xg.mean(0), xg.std(0, unbiased=False).clamp_min(1e-6)
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(((xg - mu) / sd).numpy(), y[g].numpy())
        acc.append(clf.score(((xtg - mu) / sd).numpy(), yt[g].numpy()))
    return np.array(acc)


def study_subsets(x, y, draws: int, seed: int = 0) -> list[torch.Tensor]:
    """The sparse-probing study's plain-probe subsets (variant, group, k): top-k per k, random draws per k."""
    from lensneurons.lenses.grammar.analysis import _random_complement, log_grid, top_k_subsets
    from lensneurons.core.stats import welch_t

    d = x.shape[2]
    t = torch.stack([welch_t(x[g], y[g]).float() for g in range(x.shape[0])]).nan_to_num(0.0)
    top_k = max(1, round(0.01 * d))
    top = top_k_subsets(t, top_k)
    gen = torch.Generator().manual_seed(seed)
    return [top_k_subsets(t, k)[None] for k in log_grid(d)] + [
        _random_complement(top, d, k, draws, gen) for k in log_grid(d - top_k, top_k) if k <= d - top_k
    ]


def study(x, y, xt, yt, args) -> None:
    subsets = study_subsets(x, y, args.draws)
    n_probes = sum(s.shape[0] * s.shape[1] for s in subsets)
    print(f"study mode: {n_probes} probes ({len(subsets)} subset sizes × variants × {x.shape[0]} groups)")
    valid, vt = torch.ones_like(y), torch.ones_like(yt)
    subset_probe_accuracies((x[:1, :, :8], y[:1], valid[:1]), (xt[:1, :, :8], yt[:1], vt[:1]),
                            [torch.tensor([[[0, 1]]])])  # warm-up
    started = time.perf_counter()
    ours = subset_probe_accuracies((x, y, valid), (xt, yt, vt), subsets, steps=args.steps, lr=args.lr)
    t_batched = time.perf_counter() - started
    started = time.perf_counter()
    ref = [np.stack([sklearn_loop(x, y, xt, yt, s[v]) for v in range(s.shape[0])]) for s in subsets]
    t_loop = time.perf_counter() - started
    ours_all = np.concatenate([o.flatten().numpy() for o in ours])
    ref_all = np.concatenate([r.flatten() for r in ref])
    gap = np.abs(ours_all - ref_all)
    print(f"A subset_probe_accuracies (Newton k <= {NEWTON_MAX_WIDTH}, masks + {args.steps} Adam steps above): "
          f"{t_batched:8.2f} s   mean test accuracy {ours_all.mean():.4f}")
    print(f"B loop of sklearn LogisticRegression: {t_loop:8.2f} s   mean test accuracy {ref_all.mean():.4f}")
    print(f"B/A = {t_loop / t_batched:.1f}x   accuracy gap per probe: mean {gap.mean() * 100:.2f} points, "
          f"max {gap.max() * 100:.2f} points")
    for s, o, r in zip(subsets, ours, ref):
        print(f"  k = {s.shape[2]:4d} ({s.shape[0]} variant(s)): accuracy {o.mean():.4f} vs {r.mean():.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--d", type=int, default=640)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--k", type=int, default=None, help="probe only the top-k |t| neurons of each probe")
    parser.add_argument("--store", default=None, help="a complete ActivationStore of EOS states")
    parser.add_argument("--solver", default="auto", choices=["auto", "adam", "newton"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--study", action="store_true", help="the study's top-k and random-k probes per group")
    parser.add_argument("--draws", type=int, default=5, help="random draws per k with --study")
    args = parser.parse_args()

    if args.store:
        store = _open_existing(args.store)
        data = {task: store.read(task) for task in store.complete_keys()[: args.tasks]}
    else:
        data = synthetic(args.layers, args.tasks, args.pairs, args.d)
    x, y, xt, yt = split(data)
    print(f"{x.shape[0]} probes (layer × task), {x.shape[1]} train / {xt.shape[1]} test texts, d = {x.shape[2]}, "
          f"k = {args.k or 'all'}, "
          f"torch threads {torch.get_num_threads()}")

    if args.study:
        return study(x, y, xt, yt, args)
    subset = None if args.k is None else top_k_columns(x, y, args.k)
    dev = torch.device(args.device)
    # warm-up outside the timed regions: imports and first-call set-up of both sides
    sklearn_loop(x[:1, :, :8], y[:1], xt[:1, :, :8], yt[:1])
    train_probes(x[:1, :, :8].to(dev), y[:1].to(dev), steps=2, solver=args.solver)
    started = time.perf_counter()
    sub = None if subset is None else subset[None].to(dev)
    fit = train_probes(x.to(dev), y.to(dev), subset=sub, steps=args.steps, lr=args.lr, solver=args.solver)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_batched = time.perf_counter() - started
    ours = fit.accuracy(xt.to(dev), yt.to(dev))[0].cpu().numpy()

    started = time.perf_counter()
    ref = sklearn_loop(x, y, xt, yt, subset)
    t_loop = time.perf_counter() - started

    gap = np.abs(ours - ref)
    width = x.shape[2] if args.k is None else args.k
    solver = args.solver if args.solver != "auto" else ("newton" if width <= NEWTON_MAX_WIDTH else "adam")
    how = f"{args.steps} Adam steps" if solver == "adam" else "Newton"
    print(f"A batched train_probes ({how}):{' ' * max(0, 18 - len(how))} {t_batched:8.2f} s   "
          f"mean test accuracy {ours.mean():.4f}")
    print(f"B loop of sklearn LogisticRegression:          {t_loop:8.2f} s   mean test accuracy {ref.mean():.4f}")
    print(f"B/A = {t_loop / t_batched:.1f}x   accuracy gap per probe: mean {gap.mean() * 100:.2f} points, "
          f"max {gap.max() * 100:.2f} points")


def _open_existing(path: str) -> ActivationStore:
    import json
    from pathlib import Path

    config = json.loads((Path(path) / "config.json").read_text())
    return ActivationStore(path, config=config)


if __name__ == "__main__":
    main()
