"""Throughput of streamed collection against the batch size, to choose the default per device.

Same texts at every size; `pooled_activations` (every layer, mean pooling) at the residual stream (what
`CorpusNeurons` reads) and at the MLP (what `LanguageNeurons` reads). Runs are interleaved (all sizes, then
all sizes again, ...) so that load from other processes hits every size alike; the median of `--repeats`
is reported, with texts/s relative to batch size 16 (the old default) and the growth of peak RSS.

    python -m benchmarks.bench_batch_size [--model gemma-3-270m|toy] [--texts 256] [--device cpu|cuda]
"""
import argparse
import statistics
import time

import torch

from benchmarks.bench_collection import _peak_rss_mib, _reset_peak, _rss_mib, _sync, _texts
from lensneurons.core.activations import pooled_activations
from lensneurons.core.models import load_model, toy_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m", choices=["gemma-3-270m", "toy"])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--sites", nargs="+", default=["resid", "mlp"])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.model == "toy":
        model = toy_model(n_layers=4, d_model=64, d_mlp=256, n_heads=4, n_ctx=128).to(device)
    else:
        model = load_model(args.model, device=device)
    texts, source = _texts(args.texts, 0)
    print(f"model: {args.model} on {device}, torch threads {torch.get_num_threads()}; {len(texts)} texts: {source}; "
          f"max_length {args.max_length}")

    def run(site, size):
        return pooled_activations(model, texts, site=site, batch_size=size, max_length=args.max_length, progress=False)

    for site in args.sites:
        run(site, max(args.sizes))  # warm-up: kernels and the allocator at the widest batch
    times = {(site, size): [] for site in args.sites for size in args.sizes}
    grown = dict.fromkeys(times, 0.0)
    reference = {}
    for _ in range(args.repeats):
        for key in times:
            _reset_peak(device)
            before = _rss_mib()
            _sync(device)
            started = time.perf_counter()
            out = run(*key)
            _sync(device)
            times[key].append(time.perf_counter() - started)
            grown[key] = max(grown[key], _peak_rss_mib() - before)
            # every batch size must give the same numbers (padding is masked out)
            ref = reference.setdefault(key[0], out)
            assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), f"{key}: results differ from the first size"
            del out

    print(f"\n{'site':6} {'batch':>5} {'median s':>9} {'texts/s':>8} {'vs 16':>6} {'peak RSS growth MiB':>20}")
    for site in args.sites:
        base = statistics.median(times[(site, 16)]) if (site, 16) in times else None
        for size in args.sizes:
            med = statistics.median(times[(site, size)])
            ratio = f"{base / med:6.2f}" if base else "     -"
            print(f"{site:6} {size:5d} {med:9.2f} {len(texts) / med:8.1f} {ratio} {grown[(site, size)]:20.0f}")


if __name__ == "__main__":
    main()
