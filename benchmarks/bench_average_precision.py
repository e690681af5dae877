"""Time `lensneurons.core.stats.average_precision` against a per-neuron sklearn loop.

Workload of the language-neuron analysis: one score per (text, neuron) for a Gemma-3-270M
MLP (18 layers x 2048 = 36,864 neurons), 3,000 texts, 6 languages with 500 texts each; one
AP per (language, neuron). sklearn runs on a subset of neurons and is extrapolated linearly.

    python -m benchmarks.bench_average_precision [--texts 3000 --neurons 36864 --langs 6 --reference-neurons 300]
"""
import argparse
import resource
import time

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from lensneurons.core.stats import average_precision, average_precision_multi


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--neurons", type=int, default=36864)
    parser.add_argument("--langs", type=int, default=6)
    parser.add_argument("--reference-neurons", type=int, default=300, help="neurons scored with sklearn")
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.texts % args.langs:
        parser.error(f"--texts ({args.texts}) must be a multiple of --langs ({args.langs})")
    n_ref = min(args.reference_neurons, args.neurons)
    rss_before = _peak_rss_mib()

    gen = torch.Generator().manual_seed(args.seed)
    scores = torch.randn(args.texts, args.neurons, generator=gen)  # float32
    lang_of_text = (torch.arange(args.texts) % args.langs)[torch.randperm(args.texts, generator=gen)]
    labels = torch.stack([lang_of_text == lang for lang in range(args.langs)])
    per_lang = args.texts // args.langs
    rss_data = _peak_rss_mib()
    print(
        f"workload: {args.texts} texts x {args.neurons} neurons (float32), "
        f"{args.langs} languages x {per_lang} positive texts; torch threads: {torch.get_num_threads()}"
    )

    start = time.perf_counter()
    ours = torch.stack([average_precision(scores, labels[lang], args.chunk_size) for lang in range(args.langs)])
    t_ours = time.perf_counter() - start

    start = time.perf_counter()
    ours_multi = average_precision_multi(scores, labels, args.chunk_size)
    t_multi = time.perf_counter() - start

    ref_cols = torch.randperm(args.neurons, generator=gen)[:n_ref]
    sub = scores[:, ref_cols].numpy()
    start = time.perf_counter()
    ref = np.array(
        [[average_precision_score(labels[lang].numpy(), sub[:, j]) for j in range(n_ref)] for lang in range(args.langs)]
    )
    t_ref = time.perf_counter() - start
    t_ref_all = t_ref * args.neurons / n_ref

    max_diff = float(np.abs(ours[:, ref_cols].numpy() - ref).max())
    multi_diff = float((ours_multi - ours).abs().max())
    label_single = f"lensneurons average_precision, {args.langs} calls (one per language):"
    print(f"{label_single:<64}{t_ours:8.2f} s")
    print(f"{'lensneurons average_precision_multi, one call (shared sort):':<64}{t_multi:8.2f} s")
    print(
        f"sklearn average_precision_score loop: {t_ref:.2f} s for {n_ref} neurons x {args.langs} languages,"
        f" extrapolated linearly to {args.neurons} neurons: {t_ref_all:8.1f} s"
    )
    print(
        f"speed-up vs extrapolated sklearn: average_precision {t_ref_all / t_ours:.0f}x, "
        f"average_precision_multi {t_ref_all / t_multi:.0f}x"
    )
    print(f"max |AP - sklearn| on the {n_ref}-neuron subset: {max_diff:.2e}  (multi vs single: {multi_diff:.1e})")
    if max_diff > 1e-6:
        raise SystemExit(f"FAIL: AP differs from sklearn by {max_diff:.2e} > 1e-6")

    peak = _peak_rss_mib()
    scores_mib = scores.numel() * scores.element_size() / 2**20
    # per chunk in flight: transposed float32 block, packed float64 copy, float32 rounding, int32 keys;
    # one chunk per thread
    chunk_mib = min(args.chunk_size, args.neurons) * args.texts * (4 + 8 + 4 + 4) / 2**20
    in_flight = min(torch.get_num_threads(), -(-args.neurons // args.chunk_size))
    parts = {
        "the float32 score matrix": rss_data - rss_before,
        "python + torch + sklearn themselves": rss_before,
        "the AP computation's temporaries": peak - rss_data,
    }
    print(
        f"peak RSS: {peak:.0f} MiB = {rss_before:.0f} after imports + {rss_data - rss_before:.0f} for the data"
        f" (score matrix {scores_mib:.0f} MiB) + {peak - rss_data:.0f} while computing"
    )
    print(
        f"memory is dominated by {max(parts, key=parts.get)}; the AP temporaries scale with --chunk-size, not with"
        f" the number of neurons (~{chunk_mib:.0f} MiB per chunk x {in_flight} chunks in flight, plus"
        " memory the allocator keeps for reuse)"
    )


if __name__ == "__main__":
    main()
