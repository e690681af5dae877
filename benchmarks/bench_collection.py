"""Time streamed collection (`pooled_activations`) against a bare forward and the naive cached way.

Same texts, same length-sorted batches (`tokenize` + `length_batches`, as collection makes them):

  A  bare forward: `model(tokens, attention_mask=..., stop_at_layer=n_layers)`, nothing kept
  B  `pooled_activations(model, texts, site="mlp", pooling="mean")`, all layers (tokenisation included)
  C  naive: `model.run_with_cache(tokens, attention_mask=...)`, logits and a full ActivationCache, then
     mean-pooling every layer's `mlp.hook_post` from the cache

Runs are interleaved (A B C, A B C, ...) so that load from other processes hits all three alike; the
median and best of `--repeats` are reported. B/A is the price of hooking and pooling (target <= 1.15).

    python -m benchmarks.bench_collection [--model gemma-3-270m|toy] [--texts 128] [--device cpu|cuda]

Texts are the first positives of each language of `kojima2024` when `$LENSNEURONS_DATA_DIR` is set,
synthetic sentences otherwise.
"""
import argparse
import math
import os
import random
import resource
import statistics
import sys
import time

import torch

from lensneurons.core.activations import length_batches, pad_id, pool, pooled_activations, tokenize
from lensneurons.core.models import load_model, toy_model
from lensneurons.core.sites import hook_name

_CLEAR_REFS = "/proc/self/clear_refs"


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _reset_peak(device: torch.device) -> bool:
    """Reset the peak-RSS mark (Linux: writing 5 to clear_refs); False where that is unsupported."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_device_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def _texts(n: int, seed: int) -> tuple[list[str], str]:
    if os.environ.get("LENSNEURONS_DATA_DIR"):
        from lensneurons.data import kojima2024

        per_lang = math.ceil(n / 6)
        data = kojima2024(n_positive=per_lang, n_negative=5)
        by_lang = [data.positive_texts(lang) for lang in data.languages]
        texts = [t for row in zip(*by_lang) for t in row][:n]  # round robin over languages
        return texts, f"kojima2024 positives ({', '.join(data.languages)}, round robin)"
    rng = random.Random(seed)
    words = (
        "the a neuron layer model language text token pooled mean activation of in and to is was for on "
        "with as by that this from at are be it an which or has its not but have were they their more"
    ).split()
    texts = []
    for _ in range(n):
        length = rng.randint(8, 48)
        texts.append(" ".join(rng.choice(words) for _ in range(length)).capitalize() + ".")
    return texts, "synthetic English-like sentences (set LENSNEURONS_DATA_DIR for real ones)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m", choices=["gemma-3-270m", "toy"])
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-naive", action="store_true", help="leave out C (the full ActivationCache)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rss_start = _rss_mib()

    started = time.perf_counter()
    if args.model == "toy":
        model = toy_model(n_layers=4, d_model=64, d_mlp=256, n_heads=4, n_ctx=128, seed=args.seed).to(device)
    else:
        model = load_model(args.model, device=device)
    t_load = time.perf_counter() - started
    rss_model, peak_load = _rss_mib(), _peak_rss_mib()
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    param_mib = {n: p.numel() * p.element_size() / 2**20 for n, p in model.named_parameters()}
    total_param_mib = sum(param_mib.values())
    emb_mib = sum(v for n, v in param_mib.items() if n in ("embed.W_E", "unembed.W_U"))

    texts, source = _texts(args.texts, args.seed)
    started = time.perf_counter()
    token_ids = tokenize(model, texts)
    t_tok = time.perf_counter() - started
    pad = pad_id(model)
    batches = list(length_batches(token_ids, args.batch_size, pad, device=device))
    n_tokens = sum(len(ids) for ids in token_ids)
    n_padded = sum(b.tokens.numel() for b in batches)
    lengths = sorted(len(ids) for ids in token_ids)

    print(f"model: {args.model} ({n_layers} layers x d_mlp {d_mlp}) on {device}, loaded in {t_load:.1f} s;"
          f" torch threads: {torch.get_num_threads()}")
    print(f"texts: {len(texts)} {source}")
    print(f"tokens: {n_tokens} real, {n_padded} with padding ({n_padded / n_tokens - 1:.1%} padding) in"
          f" {len(batches)} batches of <= {args.batch_size}; lengths {lengths[0]}..{lengths[-1]}"
          f" (median {lengths[len(lengths) // 2]}); tokenising once took {t_tok * 1e3:.0f} ms")

    def run_a():
        with torch.inference_mode():
            for b in batches:
                model(b.tokens, attention_mask=b.mask.long(), stop_at_layer=n_layers)

    def run_b():
        return pooled_activations(
            model, texts, site="mlp", pooling="mean", batch_size=args.batch_size, progress=False
        )

    names = [hook_name("mlp", layer) for layer in range(n_layers)]
    naive_bytes = {}

    def run_c():
        out = torch.empty(len(texts), n_layers, d_mlp, device=device)
        with torch.inference_mode():
            for b in batches:
                logits, cache = model.run_with_cache(b.tokens, attention_mask=b.mask.long())
                if not naive_bytes:  # the first batch is the widest (longest first)
                    naive_bytes["logits"] = logits.numel() * logits.element_size()
                    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in cache.values()}
                    naive_bytes["cache"] = sum(storages.values())  # distinct storages: views count once
                    naive_bytes["logits_in_cache"] = logits.untyped_storage().data_ptr() in storages
                    naive_bytes["shape"] = tuple(b.tokens.shape)
                for slot, name in enumerate(names):
                    out[b.ids, slot] = pool(cache[name], b.mask, "mean")
                del logits, cache
        return out

    methods = {"A": run_a, "B": run_b} | ({} if args.skip_naive else {"C": run_c})
    labels = {
        "A": "bare forward, stop_at_layer",
        "B": "pooled_activations (18 hooks)" if n_layers == 18 else f"pooled_activations ({n_layers} hooks)",
        "C": "run_with_cache + pool",
    }

    # warm-up on the widest batch (kernels, allocator), then the interleaved timed rounds
    saved, widest = (texts, batches), batches[0].ids.tolist()
    texts = [texts[i] for i in widest]
    batches = list(length_batches([token_ids[i] for i in widest], args.batch_size, pad, device=device))
    for fn in methods.values():
        fn()
    texts, batches = saved

    times = {k: [] for k in methods}
    peaks = {k: 0.0 for k in methods}  # peak RSS during the call, MiB
    grown = {k: 0.0 for k in methods}  # that peak minus the RSS when the call started (memory freed by
    # an earlier call may stay mapped, so the absolute peak alone over-states A and B after C)
    peaks_dev = {k: 0.0 for k in methods}
    can_reset = True
    results = {}
    for _ in range(args.repeats):
        for key, fn in methods.items():
            can_reset = _reset_peak(device) and can_reset
            rss_before = _rss_mib()
            _sync(device)
            started = time.perf_counter()
            out = fn()
            _sync(device)
            times[key].append(time.perf_counter() - started)
            peaks[key] = max(peaks[key], _peak_rss_mib())
            grown[key] = max(grown[key], _peak_rss_mib() - rss_before)
            peaks_dev[key] = max(peaks_dev[key], _peak_device_mib(device))
            if out is not None:
                results[key] = out
            del out

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    print(f"\n{'':34}{'median s':>10}{'best s':>10}{'tokens/s':>11}{'peak RSS MiB':>14}{'(+ in call)':>12}"
          + (f"{'peak GPU MiB':>14}" if device.type == "cuda" else ""))
    for key in methods:
        line = (f"{key}  {labels[key]:<31}{med[key]:10.2f}{best[key]:10.2f}{n_tokens / med[key]:11.0f}"
                f"{peaks[key] if can_reset else float('nan'):14.0f}"
                f"{grown[key] if can_reset else float('nan'):+12.0f}")
        if device.type == "cuda":
            line += f"{peaks_dev[key]:14.0f}"
        print(line)
    print("runs (s): " + "; ".join(f"{k} " + " ".join(f"{t:.2f}" for t in v) for k, v in times.items()))
    verdict = "OK" if best["B"] / best["A"] <= 1.15 else "ABOVE TARGET"
    print(f"B/A = {med['B'] / med['A']:.3f} median, {best['B'] / best['A']:.3f} best"
          f" (target <= 1.15 on best-of, the figure least disturbed by other load: {verdict})")
    if "C" in methods:
        print(f"C/B = {med['C'] / med['B']:.2f} median, {best['C'] / best['B']:.2f} best")
        diff = (results["C"] - results["B"]).abs().max().item()
        print(f"max |B - C| over pooled activations: {diff:.1e}")

    overall = max(peak_load, *peaks.values()) if can_reset else _peak_rss_mib()
    print(f"\npeak RSS of the process: {overall:.0f} MiB (getrusage); RSS {rss_start:.0f} MiB after imports,"
          f" {rss_model:.0f} MiB with the model loaded, peak {peak_load:.0f} MiB while loading it")
    biggest = (f"model parameters {total_param_mib:.0f} MiB ({emb_mib:.0f} MiB of it W_E + W_U)"
               if total_param_mib > rss_start else f"the Python + torch runtime ({rss_start:.0f} MiB after imports)")
    msg = (f"memory: {biggest} dominate(s) A and B, which add only activations of one batch (B keeps"
           f" {len(texts) * n_layers * d_mlp * 4 / 2**20:.0f} MiB of pooled rows)")
    if naive_bytes:
        b, p = naive_bytes["shape"]
        logits = f"{naive_bytes['logits'] / 2**20:.0f} MiB of logits"
        msg += f"; C adds, for its widest batch ({b} x {p} tokens), " + (
            f"a {naive_bytes['cache'] / 2**20:.0f} MiB ActivationCache, of which {naive_bytes['logits'] / 2**20:.0f}"
            " MiB are the logits (unembed.hook_out is the returned logits tensor)" if naive_bytes["logits_in_cache"]
            else f"{logits} and a {naive_bytes['cache'] / 2**20:.0f} MiB ActivationCache")
    print(msg)
    if not can_reset:
        print(f"(per-method peaks unavailable: {_CLEAR_REFS} cannot be written here)", file=sys.stderr)


if __name__ == "__main__":
    main()
