"""Sparse probing of grammaticality (Sato, Kamoda, Heinzerling & Sakaguchi), on BLiMP minimal pairs.

Each sentence gets an EOS token appended; the residual stream at that EOS position, per layer, is the
probe input (label: grammatical). Per layer and task:

- a learnable-mask probe (hard-concrete L0 gate) for every λ: test accuracy and fraction of neurons used;
- a dense logistic probe;
- probes on the top-k neurons by |Welch t| (train split only) for k on a log grid;
- probes on k neurons drawn at random from outside the top set (``top_fraction`` of d), several draws;
- the Spearman correlation between the learned mask and |t|;
- at one layer and λ, the cross-task matrix (probe trained on task A, tested on task B) and its
  difference to the λ = 1 probe.

All probes of a chunk of tasks train together (variants × layers × tasks in one tensor computation):
mask probes and probes on more than ``probes.NEWTON_MAX_WIDTH`` (64) neurons by ``steps`` full-batch Adam
steps (all wide top-k and random-k probes of a chunk in one call, as 0/1 masks over the shared features),
the narrower top-k / random-k probes by batched Newton's method (``train_probes(solver="auto")``).

    sp = SparseProbing(lams=[1.0, 0.5, 0.2, 0.1], cross_layer=6).fit(model, load_blimp(), store=store)
    sp.mask_accuracy_[:, layer, task], sp.mask_density_, sp.topk_accuracy_, sp.cross_task_
    sp.neurons("passive_1", lam=0.2)   # a NeuronSet (site "resid")
"""
from __future__ import annotations

import os
import zlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from lensneurons.data.blimp import MinimalPair, sentences
from lensneurons.core.neurons import NeuronSet
from lensneurons.lenses.grammar.probes import HardConcrete, ProbeFit, check_lams, subset_probe_accuracies, train_probes
from lensneurons.core.analysis import Analysis, Collection
from lensneurons.core.results import Checkpoint
from lensneurons.core.sites import check_layers
from lensneurons.core.stats import welch_t
from lensneurons.lenses.grammar.extraction import eos_states, extract_to_store, store_config  # noqa: F401 (re-exported)
from lensneurons.lenses.grammar.store import ActivationStore
from lensneurons.core.models import CausalModel

__all__ = [
    "SparseProbing",
    "default_ks",
    "eos_states",
    "extract_to_store",
    "log_grid",
    "pair_split",
    "spearman",
    "top_k_subsets",
]

class TaskData(NamedTuple):
    """One task's data for `SparseProbing.fit_activations` (a plain 3-tuple works too): the activations of
    its sentences (text, layer, neuron), whether each sentence is grammatical, and the index of its pair
    (both sentences of a pair share one, so a split never separates them; `data.blimp.sentences` makes all
    three from minimal pairs)."""

    acts: Float[Tensor, "text layer neuron"]
    labels: Bool[Tensor, "text"]
    pair_index: Int[Tensor, "text"]


TaskLike = TaskData | tuple[Tensor, Tensor, Tensor]


# --------------------------------------------------------------------------- helpers


def pair_split(n_pairs: int, test_fraction: float, seed: int, task: str = "") -> Bool[Tensor, "pair"]:
    """True for held-out pairs: a fixed random ``test_fraction`` of pairs, seeded by (seed, task name)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    n_test = round(n_pairs * test_fraction)
    if n_test < 1 or n_test > n_pairs - 1:
        raise ValueError(f"{n_pairs} pairs with test_fraction={test_fraction} leave an empty train or test side")
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(task.encode()))
    is_test = torch.zeros(n_pairs, dtype=torch.bool)
    is_test[torch.randperm(n_pairs, generator=gen)[:n_test]] = True
    return is_test


def log_grid(d: int, start: int = 1) -> list[int]:
    """Powers of two from ``start`` up to d, with d itself last."""
    out, k = [], start
    while k < d:
        out.append(k)
        k *= 2
    return out + [d]


def default_ks(d: int, top_k: int) -> list[int]:
    """The top-k grid: powers of two up to d, plus the top set's size (1%), a quarter of d (the paper's
    "top 25%") and 40 (the paper's 1% of Llama-3-8B's 4,096 neurons, for comparison), where they fit."""
    return sorted(set(log_grid(d)) | {top_k, max(1, round(d / 4))} | ({40} if 40 <= d else set()))


def spearman(a: Float[Tensor, "*batch n"], b: Float[Tensor, "*batch n"]) -> Float[Tensor, "*batch"]:
    """Spearman's rank correlation along the last dim, ties given their average rank (as scipy does).

    NaN where either row is constant.
    """
    if a.shape != b.shape:
        raise ValueError(f"spearman needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")

    def ranks(x: Tensor) -> Tensor:
        x = x.double().contiguous()
        srt = x.sort(-1).values
        below = torch.searchsorted(srt, x, side="left")
        upto = torch.searchsorted(srt, x, side="right")
        return (below + upto + 1).double() / 2

    ra, rb = ranks(a), ranks(b)
    ra = ra - ra.mean(-1, keepdim=True)
    rb = rb - rb.mean(-1, keepdim=True)
    den = (ra.square().sum(-1) * rb.square().sum(-1)).sqrt()
    r = (ra * rb).sum(-1) / den
    return torch.where(den > 0, r, torch.full_like(r, float("nan"))).float()


def top_k_subsets(scores: Float[Tensor, "group neuron"], k: int) -> Int[Tensor, "group k"]:
    """Indices of the k highest-|score| neurons per group (ties broken by lower index)."""
    d = scores.shape[-1]
    if not 1 <= k <= d:
        raise ValueError(f"k must be between 1 and the number of neurons ({d}), got {k}")
    order = torch.sort(scores.abs().nan_to_num(0.0), dim=-1, descending=True, stable=True).indices
    return order[:, :k]


def _random_complement(top: Int[Tensor, "group k0"], d: int, k: int, draws: int, gen: torch.Generator) -> Tensor:
    """``draws`` sets of k neurons per group, drawn without replacement from outside ``top``."""
    n_groups = top.shape[0]
    keys = torch.rand(draws, n_groups, d, generator=gen)
    keys.scatter_(2, top[None].expand(draws, -1, -1), float("inf"))  # top neurons sort last
    return keys.argsort(-1)[..., :k]


# --------------------------------------------------------------------------- analysis


class SparseProbing(Analysis):
    """Mask (L0), dense, Welch-t top-k and random-k probes for grammaticality, per layer and task.

    Parameters are stored as given and validated in ``fit``. ``collection`` says how ``fit(model, pairs)``
    reads sentences (default: the residual stream after each block at an EOS token appended to the
    sentence, 32 sentences per pass). Fitted attributes end in ``_``; tensors are indexed
    ``[lam, layer, task]``, ``[k, layer, task]`` or ``[k, draw, layer, task]``.
    """

    fitted = ("mask_accuracy_",)
    default_collection = Collection(site="resid", pooling="last", append_eos=True, batch_size=32, max_length=None)

    def __init__(
        self,
        lams: Sequence[float] = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01),
        ks: Sequence[int] | None = None,
        random_ks: Sequence[int] | None = None,
        n_random: int = 5,
        top_fraction: float = 0.01,
        test_fraction: float = 0.2,
        cross_layer: int | None = None,
        cross_lam: float = 0.2,
        C: float = 1.0,
        steps: int = 300,
        lr: float = 0.05,
        gate_lr: float | None = None,
        beta: float = 2 / 3,
        gamma: float = -0.1,
        zeta: float = 1.1,
        task_chunk: int = 8,
        random_state: int = 0,
        collection: Collection | None = None,
    ):
        self._init_collection(collection)
        self.lams = lams
        self.ks = ks
        self.random_ks = random_ks
        self.n_random = n_random
        self.top_fraction = top_fraction
        self.test_fraction = test_fraction
        self.cross_layer = cross_layer
        self.cross_lam = cross_lam
        self.C = C
        self.steps = steps
        self.lr = lr
        self.gate_lr = gate_lr
        self.beta = beta
        self.gamma = gamma
        self.zeta = zeta
        self.task_chunk = task_chunk
        self.random_state = random_state

    # entry points -------------------------------------------------------------------------
    def fit(
        self,
        model: CausalModel,
        pairs: Mapping[str, Sequence[MinimalPair]],
        store: ActivationStore | str | os.PathLike | None = None,
        layers: int | Sequence[int] | None = None,
        batch_size: int | None = None,
        progress: bool = True,
    ) -> SparseProbing:
        """Read every task's sentences through the collection and fit (``layers`` and ``batch_size``, when
        given, change the collection's). With ``store`` (a study's activation store) the EOS states go into
        it, and a finished one is reused."""
        if layers is not None or batch_size is not None:
            self._init_collection(self.collection, layers=layers, batch_size=batch_size)
        layers = None if self.layers is None else list(self.layers) if isinstance(self.layers, tuple) else self.layers
        if store is not None:
            store = extract_to_store(model, pairs, store, layers, self.batch_size, progress, site=self.site)
            return self.fit_store(store, tasks=list(pairs), progress=progress)
        data = {}
        for task, task_pairs in pairs.items():
            texts, labels, pair_index = sentences(task_pairs)
            data[task] = (self.collection.pooled(model, texts, progress=False), labels, pair_index)
        return self.fit_activations(data, progress=progress, layers=check_layers(model, layers),
                                    n_layers=model.cfg.n_layers)

    def fit_store(
        self, store: ActivationStore, tasks: Sequence[str] | None = None, progress: bool = True,
        checkpoint: Checkpoint | str | os.PathLike | None = None,
    ) -> SparseProbing:
        """Fit from a complete activation store (all its tasks, or the given ones); see ``fit_activations``
        for ``checkpoint``."""
        keys = store.complete_keys()
        tasks = keys if tasks is None else list(tasks)
        missing = [t for t in tasks if t not in keys]
        if missing:
            raise ValueError(f"unknown task(s) {missing}; the store has {keys}")
        return self.fit_activations(store.as_mapping(tasks), progress=progress, checkpoint=checkpoint,
                                    layers=store.config.get("layers"), n_layers=store.config.get("n_layers"))

    # validation ---------------------------------------------------------------------------
    def _validate(self, d: int, n_layers: int) -> None:
        lams = check_lams(self.lams).tolist()
        check_lams([self.cross_lam])
        for extra in (self.cross_lam, 1.0):
            if not any(abs(extra - v) < 1e-6 for v in lams):
                lams.append(extra)
        self.lams_ = torch.tensor(sorted(set(lams), reverse=True))
        self.top_k_ = max(1, round(self.top_fraction * d)) if 0 < self.top_fraction < 1 else None
        if self.top_k_ is None:
            raise ValueError(f"top_fraction must lie in (0, 1), got {self.top_fraction}")
        self.ks_ = list(self.ks) if self.ks is not None else default_ks(d, self.top_k_)
        self.random_ks_ = (
            list(self.random_ks) if self.random_ks is not None
            else [k for k in log_grid(d - self.top_k_, self.top_k_) if k <= d - self.top_k_]
        )
        for name, ks, limit in (("ks", self.ks_, d), ("random_ks", self.random_ks_, d - self.top_k_)):
            bad = [k for k in ks if not (isinstance(k, int) and 1 <= k <= limit)]
            if bad or not ks:
                raise ValueError(f"{name} must be integers in 1..{limit} (d = {d} neurons), got {list(ks)}")
        if self.n_random < 0:
            raise ValueError(f"n_random must be >= 0, got {self.n_random}")
        if self.task_chunk < 1:
            raise ValueError(f"task_chunk must be >= 1, got {self.task_chunk}")
        layer = n_layers - 1 if self.cross_layer is None else self.cross_layer
        if not -n_layers <= layer < n_layers:
            raise ValueError(f"cross_layer {self.cross_layer} is out of range for {n_layers} layers")
        self.cross_layer_ = layer % n_layers
        self.hard_concrete_ = HardConcrete(self.beta, self.gamma, self.zeta)

    # fitting --------------------------------------------------------------------------------
    def fit_activations(
        self, data: Mapping[str, TaskLike], progress: bool = True,
        checkpoint: Checkpoint | str | os.PathLike | None = None,
        layers: Sequence[int] | None = None,
        n_layers: int | None = None,
    ) -> SparseProbing:
        """Fit from per-task (activations ``text layer neuron``, labels, pair index).

        ``layers`` names the model layer of each activation slot (default: slot l is layer l) and
        ``n_layers`` the model's number of layers (default: the largest + 1), so that neuron sets
        (`neurons`, `top_neurons`) carry the model's layer numbers and can patch it.

        ``checkpoint`` (a `Checkpoint`, as a study hands it in; a file path is wrapped in one): receives the fit
        so far after every chunk of tasks; a later call with the same parameters and tasks resumes after the
        last saved chunk and ends with the same result as one uninterrupted fit. It is cleared when the fit is
        complete.
        """
        tasks = list(data)
        if not tasks:
            raise ValueError("no tasks given")
        first = data[tasks[0]][0]
        if first.ndim != 3:
            raise ValueError(f"activations must be (text, layer, neuron), got shape {tuple(first.shape)}")
        _, n_slots, d = first.shape
        self.layers_ = list(range(n_slots)) if layers is None else [int(layer) for layer in layers]
        if len(self.layers_) != n_slots:
            raise ValueError(f"layers names {len(self.layers_)} layers but the activations have {n_slots}")
        self.model_n_layers_ = max(self.layers_) + 1 if n_layers is None else int(n_layers)
        n_layers = n_slots
        self._validate(d, n_layers)
        self.tasks_, self.n_layers_, self.width_ = tasks, n_layers, d
        n_lam, n_t = len(self.lams_), len(tasks)
        self.mask_accuracy_ = torch.zeros(n_lam, n_layers, n_t)
        self.mask_density_ = torch.zeros(n_lam, n_layers, n_t)
        self.gates_ = torch.zeros(n_lam, n_layers, n_t, d)
        self.dense_accuracy_ = torch.zeros(n_layers, n_t)
        self.t_ = torch.zeros(n_layers, n_t, d)
        self.topk_accuracy_ = torch.zeros(len(self.ks_), n_layers, n_t)
        self.random_accuracy_ = torch.zeros(len(self.random_ks_), self.n_random, n_layers, n_t)
        self.top_reference_accuracy_ = torch.zeros(n_layers, n_t)
        self.spearman_ = torch.zeros(n_lam, n_layers, n_t)
        self.splits_: dict[str, Bool[Tensor, "pair"]] = {}
        cross_probes, cross_test = [], []
        gen = torch.Generator().manual_seed(self.random_state)
        chunks = [tasks[i : i + self.task_chunk] for i in range(0, n_t, self.task_chunk)]
        done = 0
        if isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = Checkpoint(checkpoint)
        saved = None if checkpoint is None else checkpoint.load()
        if saved is not None:
            done, cross_probes, cross_test = self._resume(saved, gen, checkpoint.path)
        bar = tqdm(total=len(chunks), initial=done, desc="probing", unit="chunk", disable=not progress)
        for chunk_no in range(done, len(chunks)):
            chunk = chunks[chunk_no]
            cols = slice(chunk_no * self.task_chunk, chunk_no * self.task_chunk + len(chunk))
            batch = self._prepare(chunk, data, n_layers, d)
            out = self._fit_chunk(batch, gen)
            for name, value in out.items():
                if name.endswith("_"):  # per (layer, task) results: the task is the last dim
                    getattr(self, name)[..., cols] = value
            self.gates_[:, :, cols] = out["gates"]
            self.t_[:, cols] = out["t"]
            cross_probes.append(out["cross_probe"])
            cross_test.append(out["cross_test"])
            if checkpoint is not None and chunk_no + 1 < len(chunks):
                state = {**self._partial_state(), "chunks_done": chunk_no + 1, "cross_probes": cross_probes,
                         "cross_test": cross_test, "generator": gen.get_state()}
                checkpoint.save(state)
            bar.update()
        bar.close()
        self._cross_task(cross_probes, cross_test)
        if checkpoint is not None:
            checkpoint.clear()
        return self

    # saving ------------------------------------------------------------------------------------
    def get_params(self) -> dict:
        """The constructor's arguments, as plain values (what a saved fit must agree with)."""
        params = {name: getattr(self, name) for name in _PARAMS}
        for name, kind in (("lams", float), ("ks", int), ("random_ks", int)):
            if params[name] is not None:
                params[name] = [kind(v) for v in params[name]]
        return params

    def state_dict(self) -> dict:
        """Everything a fit produced, with the parameters it was made with (``torch.save``-able, weights_only)."""
        self._check_fitted()
        return {**self._partial_state(), **{name: getattr(self, name) for name in _CROSS}}

    def load_state_dict(self, state: dict) -> SparseProbing:
        """Restore a fit saved by ``state_dict``; its parameters must equal this object's."""
        self._check_state(state, "saved fit")
        self._validate(state["width_"], state["n_layers_"])
        for name in _FITTED + _CROSS:
            setattr(self, name, state[name])
        # fits saved before layer numbers were kept: slot l was layer l
        self.layers_ = list(state.get("layers_", range(self.n_layers_)))
        self.model_n_layers_ = state.get("model_n_layers_", max(self.layers_) + 1)
        return self

    @classmethod
    def from_state_dict(cls, state: dict) -> SparseProbing:
        """A fitted SparseProbing with the saved parameters and results."""
        return cls(**state["params"]).load_state_dict(state)

    def _partial_state(self) -> dict:
        return {"params": self.get_params(), "layers_": self.layers_, "model_n_layers_": self.model_n_layers_,
                **{name: getattr(self, name) for name in _FITTED}}

    def _check_state(self, state: dict, what: str) -> None:
        if state.get("params") != self.get_params():
            raise ValueError(f"the {what} was made with other parameters ({state.get('params')}) than {self.get_params()}")

    def _resume(self, state: dict, gen: torch.Generator, path) -> tuple[int, list, list]:
        self._check_state(state, f"checkpoint {path}")
        if (state["tasks_"], state["n_layers_"], state["width_"]) != (self.tasks_, self.n_layers_, self.width_):
            raise ValueError(f"checkpoint {path} belongs to a fit of other tasks or activation shapes; delete it to start over")
        for name in _FITTED:
            setattr(self, name, state[name])
        gen.set_state(state["generator"])
        return state["chunks_done"], list(state["cross_probes"]), list(state["cross_test"])

    def _prepare(self, chunk: list[str], data: Mapping[str, TaskLike], n_layers: int, d: int) -> dict:
        """Train/test tensors of a chunk of tasks, groups ordered (task, layer), padded to equal length."""
        parts = {"train": [], "test": []}
        for task in chunk:
            acts, labels, pair_index = data[task]
            if acts.ndim != 3 or acts.shape[1:] != (n_layers, d):
                raise ValueError(f"task {task!r}: activations have shape {tuple(acts.shape)}, expected (text, {n_layers}, {d})")
            if labels.shape != (acts.shape[0],) or pair_index.shape != (acts.shape[0],):
                raise ValueError(
                    f"task {task!r}: {acts.shape[0]} activation rows but {labels.shape[0]} labels and "
                    f"{pair_index.shape[0]} pair indices"
                )
            if labels.dtype != torch.bool:
                raise ValueError(f"task {task!r}: labels must be bool, got {labels.dtype}")
            pairs, inverse = torch.unique(pair_index, return_inverse=True)
            is_test_pair = pair_split(len(pairs), self.test_fraction, self.random_state, task)
            self.splits_[task] = is_test_pair
            is_test = is_test_pair[inverse]
            for side, rows in (("train", ~is_test), ("test", is_test)):
                parts[side].append((acts[rows].float(), labels[rows]))
        batch = {}
        for side, items in parts.items():
            n_max = max(a.shape[0] for a, _ in items)
            x = torch.zeros(len(items), n_layers, n_max, d)
            y = torch.zeros(len(items), n_layers, n_max, dtype=torch.bool)
            valid = torch.zeros(len(items), n_layers, n_max, dtype=torch.bool)
            for i, (a, lab) in enumerate(items):
                x[i, :, : len(a)] = a.transpose(0, 1)
                y[i, :, : len(a)] = lab
                valid[i, :, : len(a)] = True
            batch[side] = (x.flatten(0, 1), y.flatten(0, 1), valid.flatten(0, 1))
        batch["n_tasks"] = len(chunk)
        batch["train_task"] = parts["train"]
        return batch

    def _train(self, x, y, valid, **kwargs) -> ProbeFit:
        return train_probes(
            x, y, valid=valid, C=self.C, steps=self.steps, lr=self.lr, gate_lr=self.gate_lr,
            hard_concrete=self.hard_concrete_, seed=self.random_state, **kwargs,
        )

    def _fit_chunk(self, batch: dict, gen: torch.Generator) -> dict:
        x, y, valid = batch["train"]
        xt, yt, vt = batch["test"]
        n_tasks, n_layers, d = batch["n_tasks"], self.n_layers_, self.width_

        def per_layer_task(v: Tensor) -> Tensor:  # (..., task*layer) -> (..., layer, task)
            return v.unflatten(-1, (n_tasks, n_layers)).transpose(-1, -2)

        t = torch.stack([welch_t(a, lab).float() for a, lab in batch["train_task"]])  # task layer neuron
        t_groups = t.flatten(0, 1).nan_to_num(0.0)

        masked = self._train(x, y, valid, lams=self.lams_, gated=True)
        dense = self._train(x, y, valid)
        out = {
            "mask_accuracy_": per_layer_task(masked.accuracy(xt, yt, vt)),
            "mask_density_": per_layer_task(masked.density()),
            "dense_accuracy_": per_layer_task(dense.accuracy(xt, yt, vt)[0]),
            "t": t.transpose(0, 1),
            "spearman_": per_layer_task(spearman(masked.gate, t_groups.abs().expand_as(masked.gate))),
        }
        out["gates"] = masked.gate.unflatten(1, (n_tasks, n_layers)).transpose(1, 2)
        top = top_k_subsets(t_groups, self.top_k_)
        subsets = [top_k_subsets(t_groups, k)[None] for k in self.ks_] + [top[None]]
        if self.n_random > 0:
            subsets += [_random_complement(top, d, k, self.n_random, gen) for k in self.random_ks_]
        acc = self._subset_accuracies(batch, subsets)
        out["topk_accuracy_"] = per_layer_task(torch.cat(acc[: len(self.ks_)]))
        out["top_reference_accuracy_"] = per_layer_task(acc[len(self.ks_)][0])
        if self.n_random > 0:
            out["random_accuracy_"] = per_layer_task(torch.stack(acc[len(self.ks_) + 1 :]))
        # cross-task: the probes of this chunk at the chosen layer, folded to act on raw features
        groups = torch.arange(n_tasks) * n_layers + self.cross_layer_
        lam_rows = [self._lam_index(self.cross_lam), self._lam_index(1.0)]
        w = (masked.weight * masked.gate)[lam_rows][:, groups] / masked.std[groups]
        b = masked.bias[lam_rows][:, groups] - (w * masked.mean[groups]).sum(-1)
        out["cross_probe"] = (w, b)
        out["cross_test"] = (xt[groups], yt[groups], vt[groups])
        return out

    def _subset_accuracies(self, batch: dict, subsets: list[Tensor]) -> list[Tensor]:
        return subset_probe_accuracies(
            batch["train"], batch["test"], subsets, C=self.C, steps=self.steps, lr=self.lr, seed=self.random_state
        )

    def _lam_index(self, lam: float) -> int:
        hits = (self.lams_ - lam).abs() < 1e-6
        if not hits.any():
            raise ValueError(f"λ={lam} was not fitted; fitted λ values are {self.lams_.tolist()}")
        return int(hits.nonzero()[0])

    def _cross_task(self, probes: list, tests: list) -> None:
        w = torch.cat([p[0] for p in probes], 1)  # (sparse/dense, train task, neuron)
        b = torch.cat([p[1] for p in probes], 1)
        n_max = max(t[0].shape[1] for t in tests)
        xs, ys, vs = [], [], []
        for x, y, v in tests:
            pad = n_max - x.shape[1]
            xs.append(torch.nn.functional.pad(x, (0, 0, 0, pad)))
            ys.append(torch.nn.functional.pad(y, (0, pad)))
            vs.append(torch.nn.functional.pad(v, (0, pad)))
        x, y, v = torch.cat(xs), torch.cat(ys), torch.cat(vs)  # (test task, text, neuron)
        logits = torch.einsum("btn,san->sabt", x, w) + b[..., None, None]
        correct = ((logits > 0) == y).float() * v
        acc = correct.sum(-1) / v.sum(-1)
        self.cross_task_: Float[Tensor, "task task"] = acc[0]
        self.cross_task_dense_: Float[Tensor, "task task"] = acc[1]
        self.cross_task_diff_: Float[Tensor, "task task"] = acc[0] - acc[1]

    # results ---------------------------------------------------------------------------------
    def task_index(self, task: str) -> int:
        self._check_fitted()
        if task not in self.tasks_:
            raise ValueError(f"unknown task {task!r}; fitted tasks are {self.tasks_}")
        return self.tasks_.index(task)

    def rows(self) -> list[dict]:
        """One row per task, λ and probed layer: mask density and accuracy, and the dense probe's accuracy."""
        return [
            {"task": task, "lam": lam, "layer": layer, "density": round(float(self.mask_density_[li, s, ti]), 5),
             "accuracy": round(float(self.mask_accuracy_[li, s, ti]), 5),
             "dense_accuracy": round(float(self.dense_accuracy_[s, ti]), 5)}
            for ti, task in enumerate(self.tasks_) for li, lam in enumerate(self.lams_.tolist())
            for s, layer in enumerate(self.layers_)
        ]

    def _slot(self, layer: int) -> int:
        self._check_fitted()
        if layer not in self.layers_:
            raise ValueError(f"layer {layer} was not probed; the probed layers are {self.layers_}")
        return self.layers_.index(layer)

    def _neuron_set(self, slots: Tensor, indices: Tensor) -> NeuronSet:
        layers = torch.as_tensor(self.layers_, dtype=torch.long)[slots]
        return NeuronSet.from_pairs(self.site, self.model_n_layers_, self.width_, layers, indices)

    def neurons(self, task: str, lam: float, layers: int | Sequence[int] | None = None) -> NeuronSet:
        """The neurons whose test-time gate is open in ``task``'s mask probe at λ (site "resid"), numbered by
        the model's layers; ``layers`` (model layer numbers) keeps only those layers."""
        ti, li = self.task_index(task), self._lam_index(lam)
        open_ = self.gates_[li, :, ti] > 0
        if layers is not None:
            keep = torch.zeros(self.n_layers_, dtype=torch.bool)
            keep[[self._slot(layer) for layer in ([layers] if isinstance(layers, int) else layers)]] = True
            open_ &= keep[:, None]
        slots, idx = open_.nonzero(as_tuple=True)
        return self._neuron_set(slots, idx)

    def top_neurons(self, task: str, k: int, layer: int) -> NeuronSet:
        """The top-k neurons by |Welch t| of ``task`` at model layer ``layer`` (train split)."""
        ti, slot = self.task_index(task), self._slot(layer)
        sub = top_k_subsets(self.t_[slot, ti][None], k)[0]
        return self._neuron_set(torch.full_like(sub, slot), sub)

    def random_match_k(self) -> Float[Tensor, "layer task"]:
        """Per layer and task, the smallest random k whose mean accuracy reaches the top-1% probe's (NaN if none)."""
        self._check_fitted()
        if self.n_random == 0:
            raise ValueError("no random probes were fitted (n_random=0)")
        mean = self.random_accuracy_.mean(1)  # k layer task
        reached = mean >= self.top_reference_accuracy_[None]
        ks = torch.tensor(self.random_ks_, dtype=torch.float32)[:, None, None].expand_as(mean)
        first = torch.where(reached, ks, torch.full_like(ks, float("inf"))).amin(0)
        return torch.where(torch.isinf(first), torch.full_like(first, float("nan")), first)


_PARAMS = ("lams", "ks", "random_ks", "n_random", "top_fraction", "test_fraction", "cross_layer", "cross_lam", "C",
           "steps", "lr", "gate_lr", "beta", "gamma", "zeta", "task_chunk", "random_state")
_FITTED = ("tasks_", "n_layers_", "width_", "mask_accuracy_", "mask_density_", "gates_", "dense_accuracy_", "t_",
           "topk_accuracy_", "random_accuracy_", "top_reference_accuracy_", "spearman_", "splits_")
_CROSS = ("cross_task_", "cross_task_dense_", "cross_task_diff_")
