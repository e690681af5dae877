"""The TransformerBridge backend against HookedTransformer on the same weights, side by side in one process.

  load      `load_model(name)` from the dequantised cache, each backend (the first load, which dequantises the
            GGUF, is timed with `--first-load`: a fresh cache folder)
  pooled    `pooled_activations(site="mlp")` over every layer of the same texts
  generate  `generate_from_bos`: seeded samples of `--new-tokens` tokens (HookedTransformer: TransformerLens'
            key-value cache; bridge: the whole sequence again at every step, see docs/design.md)

Runs are interleaved and the median of `--repeats` is reported with the bridge/hooked ratio; results are
checked equal before timing.

    python -m benchmarks.bench_backends [--model smollm2-135m-instruct|gemma-3-270m] [--texts 64]
"""
import argparse
import os
import statistics
import tempfile
import time

import torch

from benchmarks.bench_collection import _peak_rss_mib, _texts
from lensneurons.core.activations import pooled_activations
from lensneurons.core.generation import generate_from_bos
from lensneurons.core.models import load_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--first-load", action="store_true", help="also time a first load into a fresh cache")
    args = parser.parse_args(argv)

    if args.first_load:
        with tempfile.TemporaryDirectory() as cache:
            before, os.environ["LENSNEURONS_CACHE"] = os.environ.get("LENSNEURONS_CACHE"), cache
            started = time.perf_counter()
            load_model(args.model, device="cpu")
            print(f"first load (dequantise + cache + load): {time.perf_counter() - started:.1f} s")
            if before is None:
                del os.environ["LENSNEURONS_CACHE"]
            else:
                os.environ["LENSNEURONS_CACHE"] = before
    models, load_s = {}, {}
    load_model(args.model, device="cpu")  # the cache exists before anything is timed
    for backend in ("hooked", "bridge"):
        started = time.perf_counter()
        models[backend] = load_model(args.model, device="cpu", backend=backend)
        load_s[backend] = time.perf_counter() - started
    texts, source = _texts(args.texts, 0)
    print(f"model {args.model}, torch threads {torch.get_num_threads()}; {len(texts)} texts: {source}")
    print("cached load: " + ", ".join(f"{b} {s:.1f} s" for b, s in load_s.items()))

    def pooled(m):
        return lambda: pooled_activations(m, texts, site="mlp", progress=False)

    def generate(m):
        return lambda: generate_from_bos(m, seeds=range(1, args.seeds + 1), max_new_tokens=args.new_tokens,
                                         progress=False)

    a, b = pooled(models["hooked"])(), pooled(models["bridge"])()
    print(f"pooled mlp: max |hooked - bridge| = {(a - b).abs().max().item():.2e}")
    same = generate(models["hooked"])() == generate(models["bridge"])()
    print(f"generation: identical samples: {same}")
    for task, make in (("pooled mlp", pooled), ("generate", generate)):
        times = {backend: [] for backend in models}
        for _ in range(args.repeats):
            for backend, m in models.items():
                started = time.perf_counter()
                make(m)()
                times[backend].append(time.perf_counter() - started)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{task:11s} hooked {med['hooked']:.2f} s, bridge {med['bridge']:.2f} s: "
              f"bridge/hooked = {med['bridge'] / med['hooked']:.2f}")
    print(f"peak RSS of the process (both models held): {_peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
