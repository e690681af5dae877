"""Integrated gradients for all layers of a prompt: `integrated_gradients` against the straightforward way.

  fast   `integrated_gradients(mode="layer")`: one clean pass caches the residual stream entering each block;
         each layer's steps start there, the steps of all layers run as one batch that grows block by block,
         parameters need no gradients, and the final norm and unembedding are applied at the answer
         positions only
  naive  `integrated_gradients_naive`: per layer, a full forward from the tokens with logits at every
         position and a full backward (parameter gradients included) for every batch of steps, as in
         Dai et al.'s code

Same prompts, steps and baseline; runs are interleaved (fast, naive, fast, naive, ...) so load from other
processes hits both alike. Prints seconds per prompt, prompts per second, the ratio, peak RSS per method
(Linux; CUDA: peak allocated) and the largest difference of the scores relative to the largest score of
its layer.

    python -m benchmarks.bench_attribution [--model gemma-3-270m|toy] [--prompts 4] [--steps 20] [--device cpu]
        [--layers 0 9 17] [--verbose]

`--layers` restricts both methods to some layers (default: all) for a quicker run on a loaded machine;
`--verbose` prints each run's seconds as it finishes.
"""
import argparse
import resource
import statistics
import time

import torch

from lensneurons.lenses.knowledge.attribution import integrated_gradients, integrated_gradients_naive
from lensneurons.core.models import load_model, toy_model

PROMPTS = [
    ("The capital of Finland is", " Helsinki"),
    ("The official language of France is", " French"),
    ("Albert Einstein was born in", " Germany"),
    ("The Eiffel Tower is located in", " Paris"),
    ("Toyota is a company from", " Japan"),
    ("The currency of the United States is the", " dollar"),
    ("Water is made of hydrogen and", " oxygen"),
    ("The largest planet in the solar system is", " Jupiter"),
]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _peak_rss_mib()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m", choices=["gemma-3-270m", "toy"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="layers to attribute (default: all)")
    parser.add_argument("--verbose", action="store_true", help="print every run's time as it finishes")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.model == "toy":
        model = toy_model(n_layers=6, d_model=64, d_mlp=256, n_heads=4, n_ctx=128).to(device)
    else:
        model = load_model(args.model, device=device)
    prompts = PROMPTS[: args.prompts]
    times = {"fast": [], "naive": []}
    peaks = {"fast": 0.0, "naive": 0.0}
    worst = 0.0
    for _ in range(args.repeats):
        for prompt, answer in prompts:
            _reset_peak(device)
            started = time.perf_counter()
            fast = integrated_gradients(model, prompt, answer, layers=args.layers, steps=args.steps, warn=False).scores
            times["fast"].append(time.perf_counter() - started)
            peaks["fast"] = max(peaks["fast"], _peak(device))
            _reset_peak(device)
            started = time.perf_counter()
            naive = integrated_gradients_naive(model, prompt, answer, layers=args.layers, steps=args.steps)
            times["naive"].append(time.perf_counter() - started)
            peaks["naive"] = max(peaks["naive"], _peak(device))
            scale = naive.abs().amax(-1, keepdim=True).clamp_min(1e-30)
            worst = max(worst, float(((fast - naive).abs() / scale).max()))
            if args.verbose:
                print(f"{prompt!r}: fast {times['fast'][-1]:.2f} s, naive {times['naive'][-1]:.2f} s", flush=True)
    fast_s, naive_s = statistics.median(times["fast"]), statistics.median(times["naive"])
    print(f"model {args.model} ({model.cfg.n_layers} layers × {model.cfg.d_mlp} neurons, vocab {model.cfg.d_vocab}), "
          f"{len(prompts)} prompts × {args.repeats}, {args.steps} steps, "
          f"{'all layers' if args.layers is None else f'layers {args.layers}'}, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'':8s}{'s/prompt':>10s}{'prompts/s':>11s}{'peak MiB':>10s}")
    for name, s in (("fast", fast_s), ("naive", naive_s)):
        print(f"{name:8s}{s:10.2f}{1 / s:11.3f}{peaks[name]:10.0f}")
    print(f"speed-up naive/fast: {naive_s / fast_s:.2f}×   max relative difference of scores: {worst:.2e}")
    print("(peak RSS is the process high-water mark on CPU: the later method's figure includes the earlier's unless "
          "/proc/self/clear_refs could reset it)")


if __name__ == "__main__":
    main()
