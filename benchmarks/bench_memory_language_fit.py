"""Peak memory of the language study's per-language statistics at paper size, each variant in its own process.

The pooled matrix of the paper's sentence sets over Gemma-3-270M's `linear` units is 5,873 texts × 18 layers
× 6,912 units in float32 (2.9 GB). For each of 6 languages (500 positives, 2,500 negatives) the study takes
the median of the positives and the mean difference positives − negatives:

  copies    `median(x[pos])`, `x[pos].double().mean(0) - x[neg].double().mean(0)` (up to session 23)
  in place  `median(x, rows=pos)`, `row_mean(x, pos) - row_mean(x, neg)` (chunks of rows, float64 sums)

Random values stand in for activations: memory depends on shapes only. Reports resident memory above the
pooled matrix at the peak of each variant (Linux `clear_refs` peak reset after the matrix is built).

    python -m benchmarks.bench_memory_language_fit [--texts 5873] [--units 124416]
"""
import argparse
import json
import subprocess
import sys

import torch

from benchmarks.bench_collection import _peak_rss_mib, _reset_peak, _rss_mib
from lensneurons.core.stats import median, row_mean

LANGUAGES, POSITIVES, NEGATIVES = 6, 500, 2500


def measure(variant: str, n_texts: int, n_units: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(n_texts, n_units)
    generator = torch.Generator().manual_seed(1)
    base = _rss_mib()
    exact_peak = _reset_peak(torch.device("cpu"))
    for _ in range(LANGUAGES):
        order = torch.randperm(n_texts, generator=generator)
        pos, neg = order[:POSITIVES], order[POSITIVES : POSITIVES + NEGATIVES]
        if variant == "copies":
            positives = x[pos]
            median(positives)
            negatives = x[neg]
            (positives.double().mean(0) - negatives.double().mean(0)).float()
            del positives, negatives
        else:
            median(x, rows=pos)
            (row_mean(x, pos) - row_mean(x, neg)).float()
    return {"variant": variant, "pooled_mib": round(x.numel() * 4 / 2**20), "resident_before_mib": round(base),
            "peak_above_mib": round(_peak_rss_mib() - base) if exact_peak else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=5873)
    parser.add_argument("--units", type=int, default=18 * 6912)
    parser.add_argument("--variant", choices=["copies", "in place"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(measure(args.variant, args.texts, args.units)))
        return
    print(f"{args.texts} texts × {args.units} units, {LANGUAGES} languages of {POSITIVES} + {NEGATIVES} texts")
    for variant in ("copies", "in place"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_memory_language_fit", "--variant", variant,
                              "--texts", str(args.texts), "--units", str(args.units)],
                             capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"{variant:9s} pooled {row['pooled_mib']} MiB, resident before {row['resident_before_mib']} MiB, "
              f"peak above that {row['peak_above_mib']} MiB")


if __name__ == "__main__":
    main()
