"""Batched logistic probes, dense or with a hard-concrete L0 gate (Louizos, Welling & Kingma 2018).

Many independent probes train as one tensor computation. Data come in ``group``s (e.g. layer × task),
each with its own texts and features; every group is probed by several ``variant``s that share its data
(the λ values of a mask probe, or the k / random draws of fixed-subset probes). Parameters therefore have
shape ``variant group neuron`` and one einsum scores all probes at once.

The objective of each probe is its own (a mean over its own texts), and the summed loss couples no two
probes; since Adam updates every coordinate from that coordinate's gradient history alone, one batched
Adam run equals separate runs, probe by probe.

Plain probes on few features (the top-k and random-k probes, ``width <= NEWTON_MAX_WIDTH``) are fitted by
batched Newton's method instead (``solver="auto"``): a (k+1)×(k+1) Hessian per probe, a handful of
iterations with a backtracking line search, to the optimum that scikit-learn's lbfgs also reaches.
Wider and gated probes use Adam. A wide probe on a subset of neurons trains as a dense probe whose weights
are multiplied by a 0/1 ``mask``: all variants then share their group's features, and one matrix product
per group scores them all (no gathered copy of the features per variant).

Mask probe loss (Sato et al.): ``λ·(BCE + L2) + (1−λ)·E[L0]/d`` with the gate ``z`` sampled while
training and the deterministic gate ``clamp(sigmoid(log α)(ζ−γ)+γ, 0, 1)`` at test time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = [
    "NEWTON_MAX_WIDTH",
    "HardConcrete",
    "ProbeFit",
    "check_lams",
    "subset_probe_accuracies",
    "train_probes",
]


NEWTON_MAX_WIDTH = 64  # plain probes on at most this many features use Newton's method with solver="auto"
_MASK_BUDGET = 1 << 24  # elements per (variant, group, text or neuron) tensor of one masked-probe call (64 MiB)


@dataclass(frozen=True)
class HardConcrete:
    """The hard-concrete distribution: a binary-concrete sample stretched to (γ, ζ) and clipped to [0, 1]."""

    beta: float = 2 / 3
    gamma: float = -0.1
    zeta: float = 1.1

    def __post_init__(self):
        if not self.beta > 0:
            raise ValueError(f"beta (temperature) must be > 0, got {self.beta}")
        if not (self.gamma < 0 and self.zeta > 1):
            raise ValueError(f"need gamma < 0 < 1 < zeta for a hard-concrete gate, got {self.gamma}, {self.zeta}")

    def sample(self, log_alpha: Float[Tensor, "*gate"], generator: torch.Generator | None = None) -> Float[Tensor, "*gate"]:
        """One reparameterised sample of the gate (differentiable in ``log_alpha``)."""
        u = torch.rand(log_alpha.shape, generator=generator, device=log_alpha.device, dtype=log_alpha.dtype)
        u = u.clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / self.beta)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def deterministic(self, log_alpha: Float[Tensor, "*gate"]) -> Float[Tensor, "*gate"]:
        """The test-time gate of Louizos et al. (eq. 13): no noise, the same value every call."""
        return (torch.sigmoid(log_alpha) * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def prob_nonzero(self, log_alpha: Float[Tensor, "*gate"]) -> Float[Tensor, "*gate"]:
        """P(gate > 0); summed over gates it is the expected L0 norm (closed form)."""
        return torch.sigmoid(log_alpha - self.beta * math.log(-self.gamma / self.zeta))


def check_lams(lams) -> Float[Tensor, "lam"]:
    lams = torch.as_tensor(lams, dtype=torch.float32).flatten()
    if lams.numel() == 0:
        raise ValueError("lams is empty; give at least one λ in (0, 1]")
    bad = [float(v) for v in lams if not (0.0 < float(v) <= 1.0)]
    if bad:
        raise ValueError(f"every λ must lie in (0, 1] (1.0 = dense probe), got {bad}")
    return lams


@dataclass
class ProbeFit:
    """Trained probes. ``weight`` and ``bias`` act on features standardised per group with the training
    ``mean`` and ``std``; ``logits`` takes raw features and does that itself."""

    weight: Float[Tensor, "variant group neuron"]
    bias: Float[Tensor, "variant group"]
    gate: Float[Tensor, "variant group neuron"]  # test-time gate × feature mask (1 for a plain dense probe)
    log_alpha: Float[Tensor, "variant group neuron"] | None
    mean: Float[Tensor, "group neuron"]
    std: Float[Tensor, "group neuron"]

    def logits(self, x: Float[Tensor, "group text neuron"]) -> Float[Tensor, "variant group text"]:
        groups, width = self.mean.shape
        if x.ndim != 3 or x.shape[0] != groups or x.shape[2] != width:
            # a single group would broadcast against every group's normalisation and probe
            raise ValueError(f"features have shape {tuple(x.shape)}, but this fit takes (group, text, neuron) with "
                             f"{groups} groups (one per fitted layer × task, in the fit's order) of {width} neurons")
        w = self.weight * self.gate / self.std
        return torch.einsum("gtn,vgn->vgt", x, w) + (self.bias - (w * self.mean).sum(-1))[..., None]

    def accuracy(
        self, x: Float[Tensor, "group text neuron"], y: Bool[Tensor, "group text"],
        valid: Bool[Tensor, "group text"] | None = None,
    ) -> Float[Tensor, "variant group"]:
        """Fraction of (valid) texts whose predicted label (logit > 0) is right."""
        _check_xy(x, y)
        correct = ((self.logits(x) > 0) == y).float()
        if valid is None:
            return correct.mean(-1)
        v = valid.float()
        return (correct * v).sum(-1) / v.sum(-1).clamp_min(1)

    def density(self) -> Float[Tensor, "variant group"]:
        """Fraction of neurons whose test-time gate is open (> 0)."""
        return (self.gate > 0).float().mean(-1)


def _masked_mean_std(x: Tensor, v: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """Per-group mean and std over valid texts, one group at a time (no temporary of x's full size)."""
    mean = torch.empty(x.shape[0], x.shape[2], dtype=x.dtype, device=x.device)
    var = torch.empty_like(mean)
    for g in range(x.shape[0]):
        xg, vg = x[g], v[g][:, None]
        mean[g] = (xg * vg).sum(0) / n[g]
        var[g] = ((xg - mean[g]) ** 2 * vg).sum(0) / n[g]
    return mean, var.sqrt().clamp_min(1e-6)


def _check_xy(x: Tensor, y: Tensor) -> None:
    if y.shape != x.shape[:2]:
        raise ValueError(f"labels have shape {tuple(y.shape)} but features have {tuple(x.shape[:2])} (group, text)")
    bad = ~torch.isfinite(x)
    if bad.any():
        group, text, neuron = bad.nonzero()[0].tolist()
        raise ValueError(f"features contain {int(bad.sum())} NaN/inf values (first: group {group}, text {text}, "
                         f"neuron {neuron}); a probe on them has NaN logits. Drop or fill them first")


def train_probes(
    x: Float[Tensor, "group text neuron"],
    y: Bool[Tensor, "group text"],
    lams: Float[Tensor, "variant"] | None = None,
    subset: Int[Tensor, "variant group k"] | None = None,
    valid: Bool[Tensor, "group text"] | None = None,
    gated: bool = False,
    mask: Bool[Tensor, "variant group neuron"] | None = None,
    C: float = 1.0,
    steps: int = 300,
    lr: float = 0.05,
    gate_lr: float | None = None,
    init_log_alpha: float = 2.0,
    hard_concrete: HardConcrete = HardConcrete(),
    seed: int = 0,
    solver: str = "auto",
    newton_steps: int = 30,
    tol: float = 1e-7,
) -> ProbeFit:
    """Train ``variant × group`` logistic probes at once (full-batch Adam, or batched Newton; see ``solver``).

    ``gated=True`` learns a hard-concrete mask per probe with loss ``λ·(BCE + L2) + (1−λ)·E[L0]/d``
    (one variant per λ in ``lams``). Otherwise the probes are plain L2-regularised logistic regressions
    like scikit-learn's ``LogisticRegression(C=C)`` (loss ``BCE + ‖w‖²/(2·C·n)``): one variant per row of
    ``subset`` (the indices of the k neurons each probe reads; the features are gathered, so a probe on k
    neurons costs k, not d), or a single dense variant. The returned weights and gates are in the full
    ``neuron`` space either way (zero outside a probe's subset).

    ``solver``: ``"adam"`` (``steps`` full-batch Adam steps), ``"newton"`` (plain probes only: at most
    ``newton_steps`` batched Newton iterations, stopping once every probe's predicted remaining decrease
    of the loss, half its Newton decrement g·H⁻¹·g, is below ``tol``) or
    ``"auto"`` (Newton for plain probes given by a ``subset`` of at most ``NEWTON_MAX_WIDTH`` neurons, or dense
    ones on at most that many features; Adam otherwise).
    """
    _check_xy(x, y)
    if y.dtype != torch.bool:
        raise ValueError(f"labels must be a bool tensor, got {y.dtype}")
    if valid is None:
        valid = torch.ones_like(y)
    elif valid.shape != y.shape:
        raise ValueError(f"valid has shape {tuple(valid.shape)}, expected {tuple(y.shape)}")
    if solver not in ("auto", "adam", "newton"):
        raise ValueError(f"solver must be 'auto', 'adam' or 'newton', got {solver!r}")
    if solver == "newton" and gated:
        raise ValueError("solver='newton' fits plain probes only; a gated (mask) probe trains with Adam")
    if newton_steps < 1 or tol <= 0:
        raise ValueError(f"need newton_steps >= 1 and tol > 0; got newton_steps={newton_steps}, tol={tol}")
    if steps < 1 or lr <= 0 or C <= 0:
        raise ValueError(f"need steps >= 1, lr > 0 and C > 0; got steps={steps}, lr={lr}, C={C}")
    n_groups, _, d = x.shape
    v = valid.float()
    n = v.sum(1)
    if (n < 2).any():
        raise ValueError("every group needs at least 2 valid texts")
    one_class = ((y & valid).sum(1) == 0) | ((~y & valid).sum(1) == 0)
    if one_class.any():
        g = int(one_class.nonzero()[0])
        raise ValueError(f"group {g} has only one class among its valid texts; a probe needs both")

    if gated:
        if lams is None:
            raise ValueError("a gated (mask) probe needs lams, the λ values in (0, 1]")
        lams = check_lams(lams).to(x.device)
        n_var = len(lams)
    else:
        if lams is not None:
            raise ValueError("lams only applies to gated probes (gated=True)")
        n_var = 1 if subset is None else subset.shape[0]
        lams = torch.ones(n_var, device=x.device)
    if mask is not None:
        if gated or subset is not None:
            raise ValueError("mask applies to plain probes without a subset; give one of subset and mask")
        if mask.dtype != torch.bool or mask.ndim != 3 or mask.shape[1:] != (n_groups, d):
            raise ValueError(f"mask must be a bool tensor (variant, {n_groups}, {d}), got {mask.dtype} {tuple(mask.shape)}")
        if not mask.any(-1).all():
            raise ValueError("every probe's mask must select at least one neuron")
        if solver == "newton":
            raise ValueError("solver='newton' takes the neurons as a subset (equal k per call), not as a mask")
        n_var = mask.shape[0]
        lams = torch.ones(n_var, device=x.device)
        mask = mask.to(x.device)
    if subset is not None:
        if gated:
            raise ValueError("subset applies to plain probes; a gated probe chooses its own neurons")
        if subset.shape[1] != n_groups or subset.shape[2] < 1:
            raise ValueError(f"subset has shape {tuple(subset.shape)}, expected (variant, {n_groups}, k >= 1)")
        if subset.min() < 0 or subset.max() >= d:
            raise ValueError(f"subset indices must lie in [0, {d}) (the number of neurons)")
        if (subset.sort(-1).values.diff(dim=-1) == 0).any():
            raise ValueError("a probe's subset lists the same neuron twice; indices must be distinct")
        subset = subset.to(x.device)

    target = y.float()
    newton = solver == "newton" or (
        solver == "auto" and not gated and mask is None and (d if subset is None else subset.shape[2]) <= NEWTON_MAX_WIDTH
    )
    if subset is not None and not newton:  # Adam: the same probes as masks over shared features
        mask, subset = _subset_mask(subset, d), None
    if subset is None:
        # standardisation is folded into the weights each step, so x itself is never copied
        mean, std = _masked_mean_std(x, v, n)
        width, spec, xs = d, "gtn,vgn->vgt", x
        scale, shift = 1 / std, mean / std
    else:
        # gather the k columns first; statistics only of those (unused columns get mean 0, std 1)
        width, spec = subset.shape[2], "vgtn,vgn->vgt"
        n_text = x.shape[1]
        xs = torch.gather(x.expand(n_var, -1, -1, -1), 3, subset[:, :, None, :].expand(-1, -1, n_text, -1))
        vv = v[None, :, :, None]
        mu = (xs * vv).sum(2) / n[:, None]
        sd = ((((xs - mu[:, :, None]) ** 2) * vv).sum(2) / n[:, None]).sqrt().clamp_min(1e-6)
        scale, shift = 1 / sd, mu / sd
        mean = torch.zeros(n_groups, d, dtype=x.dtype, device=x.device)
        std = torch.ones(n_groups, d, dtype=x.dtype, device=x.device)
        flat = subset.transpose(0, 1).reshape(n_groups, -1)
        mean.scatter_(1, flat, mu.transpose(0, 1).reshape(n_groups, -1))
        std.scatter_(1, flat, sd.transpose(0, 1).reshape(n_groups, -1))

    if newton:
        weight, bias = _newton(xs, scale, shift, target, v, n, C, newton_steps, tol)
        return _finish(weight, bias, None, subset, mean, std, n_var, n_groups, d, hard_concrete, x.device)

    weight = torch.zeros(n_var, n_groups, width, device=x.device, requires_grad=True)
    bias = torch.zeros(n_var, n_groups, device=x.device, requires_grad=True)
    params = [{"params": [weight, bias], "lr": lr}]
    log_alpha = None
    if gated:
        log_alpha = torch.full((n_var, n_groups, d), float(init_log_alpha), device=x.device, requires_grad=True)
        params.append({"params": [log_alpha], "lr": gate_lr or lr})
    opt = torch.optim.Adam(params)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    lam = lams[:, None]
    keep = None if mask is None else mask.to(x.dtype)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            w = weight if keep is None else weight * keep  # masked-out weights get no gradient and stay 0
            if gated:
                w = w * hard_concrete.sample(log_alpha, gen)
            logits = torch.einsum(spec, xs, w * scale) + (bias - (w * shift).sum(-1))[..., None]
            bce = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none")
            fit = (bce * v).sum(-1) / n + (weight**2).sum(-1) / (2 * C * n)
            loss = lam * fit
            if gated:
                loss = loss + (1 - lam) * hard_concrete.prob_nonzero(log_alpha).sum(-1) / d
            loss.sum().backward()
            opt.step()

    return _finish(weight.detach(), bias.detach(), None if log_alpha is None else log_alpha.detach(), subset, mean,
                   std, n_var, n_groups, d, hard_concrete, x.device, mask)


def subset_probe_accuracies(
    train: tuple[Float[Tensor, "group text neuron"], Bool[Tensor, "group text"], Bool[Tensor, "group text"]],
    test: tuple[Float[Tensor, "group test neuron"], Bool[Tensor, "group test"], Bool[Tensor, "group test"]],
    subsets: list[Int[Tensor, "_ group _"]],
    **kwargs,
) -> list[Float[Tensor, "_ group"]]:
    """Test accuracy (variant, group) of plain probes on each of ``subsets`` (each variant × group × k).

    ``train`` and ``test`` are (features, labels, valid). Subsets of at most ``NEWTON_MAX_WIDTH`` neurons are
    fitted by Newton on their gathered columns, one k at a time; all wider ones, whatever their k, train
    together as masks over the shared features (Adam), in pieces that bound each tensor of a call to
    ``_MASK_BUDGET`` elements. ``kwargs`` go to ``train_probes``.
    """
    (x, y, valid), (xt, yt, vt) = train, test
    out: list[Tensor | None] = [None] * len(subsets)
    wide = [i for i, s in enumerate(subsets) if s.shape[2] > NEWTON_MAX_WIDTH]
    for i, s in enumerate(subsets):
        if i not in wide:
            out[i] = train_probes(x, y, valid=valid, subset=s, **kwargs).accuracy(xt, yt, vt)
    if wide:
        n_groups, d = x.shape[0], x.shape[2]
        masks = torch.cat([_subset_mask(subsets[i].to(x.device), d) for i in wide])
        step = max(1, _MASK_BUDGET // (n_groups * max(x.shape[1], d)))
        acc = torch.cat([
            train_probes(x, y, valid=valid, mask=masks[j : j + step], **kwargs).accuracy(xt, yt, vt)
            for j in range(0, len(masks), step)
        ])
        for i, part in zip(wide, acc.split([len(subsets[i]) for i in wide])):
            out[i] = part
    return out


def _subset_mask(subset: Tensor, d: int) -> Tensor:
    """(variant, group, k) neuron indices as a (variant, group, d) bool mask."""
    return torch.zeros(*subset.shape[:2], d, dtype=torch.bool, device=subset.device).scatter_(2, subset, True)


def _finish(weight, bias, log_alpha, subset, mean, std, n_var, n_groups, d, hard_concrete, device, mask=None) -> ProbeFit:
    """Weights and gates in the full neuron space."""
    with torch.no_grad():
        gate = torch.ones(n_var, n_groups, d, device=device)
        if log_alpha is not None:
            gate = hard_concrete.deterministic(log_alpha)
        if mask is not None:
            gate = mask.to(gate.dtype)
        if subset is not None:
            gate = torch.zeros_like(gate).scatter_(2, subset, 1.0)
            weight = torch.zeros(n_var, n_groups, d, device=device).scatter_(2, subset, weight)
        return ProbeFit(weight=weight, bias=bias, gate=gate, log_alpha=log_alpha, mean=mean, std=std)


def _newton(xs: Tensor, scale: Tensor, shift: Tensor, target: Tensor, v: Tensor, n: Tensor, C: float, max_steps: int,
            tol: float) -> tuple[Tensor, Tensor]:
    """Batched Newton's method for L2 logistic regression on standardised features.

    ``xs`` is ``group text width`` (one shared set of features, one variant) or ``variant group text width``;
    ``scale``/``shift`` standardise it. Minimises ``mean BCE + ‖w‖²/(2·C·n)`` per probe (bias unpenalised),
    the objective of scikit-learn's ``LogisticRegression(C)`` divided by ``C·n``. Each step solves
    ``H δ = g`` with the exact (k+1)×(k+1) Hessian and takes the full step where every probe's loss falls enough
    (Armijo); otherwise each probe backtracks to the first of steps ½, ¼, 0.1, 0.03, 0.01 that does.
    """
    with torch.no_grad():
        if xs.ndim == 3:
            xs = xs[None]
            scale, shift = scale[None], shift[None]
        z = xs * scale[:, :, None, :] - shift[:, :, None, :]  # standardised, variant? group text width
        z = torch.cat([z, torch.ones_like(z[..., :1])], -1)  # bias column
        n_var = max(z.shape[0], scale.shape[0])
        n_groups, width = z.shape[1], z.shape[-1] - 1
        theta = torch.zeros(n_var, n_groups, width + 1, dtype=z.dtype, device=z.device)
        reg = torch.full((width + 1,), 1.0, dtype=torch.float64, device=z.device)
        reg[-1] = 0.0  # the bias is not penalised
        reg_n = reg / (C * n.double()[:, None])  # group × (width+1)
        vn = v / n[:, None]  # group × text: each text's weight in its probe's mean
        narrow = width < 16  # matrix-vector products as multiply-and-sum: faster than bmm for a few columns
        steps = torch.tensor([1.0, 0.5, 0.25, 0.1, 0.03, 0.01], dtype=z.dtype, device=z.device)

        def objective(margin: Tensor, th: Tensor) -> Tensor:
            bce = F.binary_cross_entropy_with_logits(margin, target.expand_as(margin), reduction="none")
            return (bce * vn).sum(-1) + 0.5 * (th.double().square() * reg_n).sum(-1).to(margin.dtype)

        margin = torch.zeros(n_var, n_groups, z.shape[2], dtype=z.dtype, device=z.device)
        loss = objective(margin, theta)
        for _ in range(max_steps):
            p = torch.sigmoid(margin)
            resid = (p - target) * vn  # variant group text
            if narrow:
                grad = (resid[..., None] * z).sum(-2)
            else:
                grad = torch.einsum("vgt,vgtn->vgn", resid, z.expand(n_var, -1, -1, -1))
            grad = grad.double() + theta.double() * reg_n
            curv = (p * (1 - p) * vn).sqrt()
            zw = z * curv[..., None]
            hess = (zw.transpose(-1, -2) @ zw).double() + torch.diag_embed(reg_n.expand_as(grad) + 1e-10)
            delta = torch.linalg.solve(hess, grad).to(z.dtype)  # the Newton step is −delta
            decrease = (grad * delta.double()).sum(-1)  # g·H⁻¹·g >= 0: twice the predicted decrease of the loss
            if float(decrease.max()) < 2 * tol:  # every probe within tol of its optimum (float32 noise level)
                break
            decrease = decrease.to(z.dtype)
            if narrow:
                z_delta = (z * delta[:, :, None, :]).sum(-1)
            else:
                z_delta = torch.einsum("vgtn,vgn->vgt", z.expand(n_var, -1, -1, -1), delta)
            full_loss = objective(margin - z_delta, theta - delta)
            if bool((full_loss <= loss - 1e-4 * decrease).all()):  # the usual case: every probe takes the full step
                theta, margin, loss = theta - delta, margin - z_delta, full_loss
                continue
            # backtrack: all candidate steps at once (the margins are linear in the step length)
            cand_margin = margin[None] - steps[:, None, None, None] * z_delta[None]
            cand_theta = theta[None] - steps[:, None, None, None] * delta[None]
            cand_loss = objective(cand_margin, cand_theta)  # step variant group
            ok = cand_loss <= loss[None] - 1e-4 * steps[:, None, None] * decrease[None]
            first = torch.where(ok.any(0), ok.float().argmax(0), torch.full_like(loss, len(steps) - 1, dtype=torch.long))
            moved = ok.any(0)
            pick = first[None, ..., None]
            theta = torch.where(moved[..., None], cand_theta.gather(0, pick.expand(1, -1, -1, width + 1))[0], theta)
            margin = torch.where(moved[..., None], cand_margin.gather(0, pick.expand(1, -1, -1, margin.shape[-1]))[0], margin)
            loss = torch.where(moved, cand_loss.gather(0, first[None])[0], loss)
            if not moved.any():
                break
        return theta[..., :width].contiguous(), theta[..., width].contiguous()
