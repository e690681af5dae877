"""Time the streaming `lensneurons.core.stats.TopK` against a Python `heapq` per neuron.

Workload of the corpus-neuron analysis (paper O): the top-K sentences of every neuron of one layer
(Gemma-3-270M residual stream: 640 neurons) over 100,000 sentences, arriving in batches of 32 as
they do from `activations.collect`. Synthetic scores; K = 100 and K = 10,000 (the paper's). The
heap runs on a subset of neurons and is extrapolated linearly; both must give identical sets.

    python -m benchmarks.bench_topk [--sentences 100000 --neurons 640 --ks 100 10000 --reference-neurons 8]
"""
import argparse
import heapq
import resource
import time

import torch

from lensneurons.core.stats import TopK


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def _reset_peak_rss() -> float:
    """Reset the peak resident set size (Linux: write 5 to clear_refs) and return the current RSS in MiB."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass  # then the peak below includes earlier allocations
    return _status_mib("VmRSS")


def _peak_rss_mib() -> float:
    try:
        return _status_mib("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def heap_topk(scores: torch.Tensor, k: int, batch: int) -> tuple[list[list[float]], list[list[int]]]:
    """One min-heap of (value, -id) per column, fed batch by batch: the worst kept entry is the
    smallest value, and among equal values the larger id (so ties go to the lower id, as in TopK)."""
    n, m = scores.shape
    heaps: list[list] = [[] for _ in range(m)]
    for start in range(0, n, batch):
        rows = scores[start : start + batch].tolist()
        for r, row in enumerate(rows):
            key_id = -(start + r)
            for j, v in enumerate(row):
                h = heaps[j]
                if len(h) < k:
                    heapq.heappush(h, (v, key_id))
                elif (v, key_id) > h[0]:
                    heapq.heapreplace(h, (v, key_id))
    values, ids = [], []
    for h in heaps:
        best = sorted(h, reverse=True)  # value descending, then -id descending = id ascending
        values.append([v for v, _ in best])
        ids.append([-i for _, i in best])
    return values, ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=100_000)
    parser.add_argument("--neurons", type=int, default=640)
    parser.add_argument("--ks", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--batch", type=int, default=32, help="sentences per update, as from collect")
    parser.add_argument("--reference-neurons", type=int, default=8, help="neurons run through heapq")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_ref = min(args.reference_neurons, args.neurons)

    gen = torch.Generator().manual_seed(args.seed)
    # rounded to 1/64 so that ties occur and the tie rule is exercised
    scores = (torch.randn(args.sentences, args.neurons, generator=gen) * 64).round() / 64
    ref_cols = torch.randperm(args.neurons, generator=gen)[:n_ref]
    ref_scores = scores[:, ref_cols].contiguous()
    print(f"workload: {args.sentences} sentences x {args.neurons} neurons (float32), batches of {args.batch}; "
          f"torch threads: {torch.get_num_threads()}")
    print(f"{'K':>7} {'TopK s':>9} {'heapq s (extrapolated)':>24} {'ratio':>7} {'identical':>10} "
          f"{'TopK state MiB':>15} {'peak RSS +MiB':>14}")
    for k in args.ks:
        rss0 = _reset_peak_rss()
        start = time.perf_counter()
        topk = TopK(k)
        for s in range(0, args.sentences, args.batch):
            ids = torch.arange(s, min(s + args.batch, args.sentences))
            topk.update(scores[s : s + args.batch], ids)
        values, ids = topk.values, topk.ids
        t_ours = time.perf_counter() - start
        rss_ours = _peak_rss_mib() - rss0
        state_mib = values.numel() * (values.element_size() + ids.element_size()) / 2**20

        start = time.perf_counter()
        ref_values, ref_ids = heap_topk(ref_scores, k, args.batch)
        t_ref = time.perf_counter() - start
        t_ref_all = t_ref * args.neurons / n_ref
        same = all(
            ids[:, c].tolist() == ref_ids[j] and values[:, c].tolist() == ref_values[j]
            for j, c in enumerate(ref_cols.tolist())
        )
        print(f"{k:>7} {t_ours:>9.2f} {t_ref_all:>13.1f} ({n_ref:>3} n: {t_ref:5.1f}) {t_ref_all / t_ours:>6.0f}x "
              f"{str(same):>10} {state_mib:>15.1f} {rss_ours:>14.0f}")
        if not same:
            raise SystemExit(f"TopK and heapq disagree for K={k}")


if __name__ == "__main__":
    main()
