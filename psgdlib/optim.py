"""``PSGD``: a ``torch.optim.Optimizer`` implementing the paper's update (4).

    theta <- theta - lr * P g,                                  (4)

with ``P`` fitted on criterion (3) by one of the preconditioners of
:mod:`psgdlib.preconditioners` from pairs of :mod:`psgdlib.pairs`.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import pairs as _pairs
from .preconditioners import Dense, Diag, Kron, Preconditioner

__all__ = ["PSGD", "PRECONDITIONERS"]

PRECONDITIONERS = ("kron", "dense", "diag")
# Kinds are stored as ints: Optimizer.load_state_dict mangles str values in the state.
_CLASSES = (Dense, Kron, Diag)


class PSGD(Optimizer):
    """Preconditioned SGD (Li 2015, 2016).

    Args:
        params: parameters or param groups.
        lr: the normalized step size ``mu`` of update (4) (paper: 0.01).
        precond_lr: normalized step of the preconditioner fit on (3) (paper: 0.01).
        preconditioner: ``"kron"`` (one :class:`Kron` per 2-D parameter, eq. (5);
            tensors with more dimensions are viewed as ``(shape[0], -1)``; 1-D
            parameters get a :class:`Dense` preconditioner, i.e. a Kronecker
            factor against a 1x1 one; any parameter with a dimension above
            ``max_kron_dim`` falls back to :class:`Diag`), ``"dense"`` (one
            :class:`Dense` over all parameters of a param group, Sec. II.B.1) or
            ``"diag"``.
        pairs: ``"hvp"`` (exact Hessian-vector products), ``"finite_difference"``
            (the paper's ``dtheta ~ N(0, eps)`` perturbation) or ``"whitening"``.
        precond_init_scale: initial ``P = precond_init_scale * I`` (paper: identity).
        update_every: fit the preconditioner on every k-th step only.
        update_prob: alternatively, fit it with this probability per step.
        clip_norm: clip the norm of the preconditioned gradient ``P g`` (over the
            param group) to this value; ``None`` disables clipping.
        momentum: heavy-ball momentum on ``P g`` (0 = off, the paper's setting).
        fd_scale: std of the finite-difference perturbation; default
            :func:`psgdlib.pairs.default_fd_scale` of the parameter dtype.
        max_kron_dim: largest Kronecker factor dimension before falling back to ``Diag``.
        seed: seed of the optimizer's own random generator (default: drawn from
            torch's global generator at the first step).

    ``step(closure)``: the closure re-evaluates the model on the current
    minibatch and returns the loss **without** calling ``backward()`` (PSGD
    differentiates it itself; ``hvp`` needs the graph and ``finite_difference``
    calls the closure a second time at ``theta + dtheta``).  With
    ``pairs="whitening"`` the closure may be omitted, and the ``.grad`` fields
    filled by the caller's ``backward()`` are used.  After a step each
    parameter's ``.grad`` holds the (unpreconditioned) gradient.
    """

    def __init__(self, params: Iterable, lr: float = 0.01, precond_lr: float = 0.01,
                 preconditioner: str = "kron", pairs: str = "hvp", precond_init_scale: float = 1.0,
                 update_every: int = 1, update_prob: float | None = None,
                 clip_norm: float | None = None, momentum: float = 0.0,
                 fd_scale: float | None = None, max_kron_dim: int = 1024,
                 seed: int | None = None) -> None:
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive number, got {lr}")
        if not (0 < precond_lr < 1):
            raise ValueError(f"precond_lr is a normalized step: need 0 < precond_lr < 1, got {precond_lr}")
        if preconditioner not in PRECONDITIONERS:
            raise ValueError(f"unknown preconditioner {preconditioner!r}; choose one of {PRECONDITIONERS}")
        if pairs not in _pairs.PAIR_SOURCES:
            raise ValueError(f"unknown pair source {pairs!r}; choose one of {_pairs.PAIR_SOURCES}")
        if not (isinstance(update_every, int) and update_every >= 1):
            raise ValueError(f"update_every must be an integer >= 1, got {update_every}")
        if update_prob is not None and not (0 < update_prob <= 1):
            raise ValueError(f"update_prob must be in (0, 1], got {update_prob}")
        if update_prob is not None and update_every != 1:
            raise ValueError("give update_every or update_prob, not both")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm must be positive or None, got {clip_norm}")
        if not (0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if fd_scale is not None and not fd_scale > 0:
            raise ValueError(f"fd_scale must be positive, got {fd_scale}")
        if not precond_init_scale > 0:
            raise ValueError(f"precond_init_scale must be positive, got {precond_init_scale}")
        defaults = dict(lr=lr, precond_lr=precond_lr, preconditioner=preconditioner,
                        precond_init_scale=precond_init_scale, clip_norm=clip_norm,
                        momentum=momentum, max_kron_dim=max_kron_dim)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["preconditioner"] not in PRECONDITIONERS:
                raise ValueError(f"unknown preconditioner {group['preconditioner']!r}")
        self.pairs = pairs
        self.update_every = update_every
        self.update_prob = update_prob
        self.fd_scale = fd_scale
        self._seed = seed
        self._gen: torch.Generator | None = None       # samples v on the parameters' device
        self._cpu_gen: torch.Generator | None = None   # decides update_prob draws
        self._num_steps = 0

    # ------------------------------------------------------------------ rng
    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _generators(self) -> tuple[torch.Generator, torch.Generator]:
        if self._gen is None:
            seed = self._seed
            if seed is None:
                seed = int(torch.randint(0, 2 ** 62, (1,)).item())
            device = self._params()[0].device
            self._gen = torch.Generator(device=device).manual_seed(seed)
            self._cpu_gen = torch.Generator().manual_seed(seed + 1)
        return self._gen, self._cpu_gen

    def _update_now(self) -> bool:
        _, cpu = self._generators()
        if self.update_prob is not None:
            return bool(torch.rand((), generator=cpu).item() < self.update_prob)
        return self._num_steps % self.update_every == 0

    # ------------------------------------------------------ preconditioners
    def _new_precond(self, group: dict, p: Tensor) -> Preconditioner:
        kind, s, kmax = group["preconditioner"], group["precond_init_scale"], group["max_kron_dim"]
        kw = dict(init_scale=s, dtype=p.dtype, device=p.device)
        if kind == "diag":
            return Diag(p.numel(), **kw)
        if p.dim() >= 2:
            m, n = p.shape[0], p.numel() // p.shape[0]
            return Kron(m, n, **kw) if max(m, n) <= kmax else Diag(p.numel(), **kw)
        return Dense(p.numel(), **kw) if p.numel() <= kmax else Diag(p.numel(), **kw)

    def _precond_of(self, state: dict, make: Callable[[], Preconditioner]) -> Preconditioner:
        if "precond" not in state:
            pc = make()
            state["precond"] = pc.state_dict()
            state["precond_kind"] = _CLASSES.index(type(pc))
            return pc
        return _CLASSES[state["precond_kind"]].from_state_dict(state["precond"])

    @staticmethod
    def _shape_for(pc: Preconditioner, t: Tensor) -> Tensor:
        return t.reshape(pc.m, pc.n) if isinstance(pc, Kron) else t.reshape(-1)

    # ----------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One PSGD iteration; returns the loss the closure gave (or None)."""
        params = [p for p in self._params() if p.requires_grad]
        if not params:
            return None
        if closure is None and self.pairs != "whitening":
            raise ValueError(f"PSGD with pairs={self.pairs!r} needs a closure that re-evaluates "
                             "the loss on the current minibatch: opt.step(closure)")
        update = self._update_now()
        gen, _ = self._generators()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
                if not (torch.is_tensor(loss) and loss.numel() == 1 and loss.requires_grad):
                    raise ValueError("the closure must return the scalar loss as a tensor attached "
                                     "to the graph (and must not call backward())")
                create = update and self.pairs == "hvp"
                grads = torch.autograd.grad(loss, params, create_graph=create, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            for p, g in zip(params, grads):
                p.grad = g.detach()
        else:
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]

        if update:
            if self.pairs == "hvp":
                with torch.enable_grad():
                    vs, hs = _pairs.hvp(params, grads, gen)
            elif self.pairs == "finite_difference":
                vs, hs = _pairs.finite_difference(params, closure, grads, gen, self.fd_scale)
            else:
                vs, hs = _pairs.whitening(params, grads, gen)
            pair = {p: (v.detach(), h.detach()) for p, v, h in zip(params, vs, hs)}
        gdict = {p: g.detach() for p, g in zip(params, grads)}

        for group in self.param_groups:
            gp = [p for p in group["params"] if p in gdict]
            if not gp:
                continue
            if group["preconditioner"] == "dense":
                n = sum(p.numel() for p in gp)
                p0 = gp[0]
                pc = self._precond_of(self.state[p0], lambda: Dense(
                    n, init_scale=group["precond_init_scale"], dtype=p0.dtype, device=p0.device))
                if update:
                    pc.update(torch.cat([pair[p][0].reshape(-1) for p in gp]),
                              torch.cat([pair[p][1].reshape(-1) for p in gp]), group["precond_lr"])
                flat = pc.precondition(torch.cat([gdict[p].reshape(-1) for p in gp]))
                pgs = [t.view_as(p) for t, p in zip(flat.split([p.numel() for p in gp]), gp)]
                self.state[p0]["precond"]["num_updates"] = pc.num_updates
            else:
                pgs = []
                for p in gp:
                    st = self.state[p]
                    pc = self._precond_of(st, lambda p=p: self._new_precond(group, p))
                    if update:
                        pc.update(self._shape_for(pc, pair[p][0]), self._shape_for(pc, pair[p][1]),
                                  group["precond_lr"])
                        st["precond"]["num_updates"] = pc.num_updates
                    pgs.append(pc.precondition(self._shape_for(pc, gdict[p])).view_as(p))

            if group["clip_norm"] is not None:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in pgs]))
                factor = torch.clamp(group["clip_norm"] / (norm + 1e-30), max=1.0)
                pgs = [t * factor for t in pgs]
            if group["momentum"] > 0:
                new = []
                for p, t in zip(gp, pgs):
                    st = self.state[p]
                    if "momentum_buffer" not in st:
                        st["momentum_buffer"] = t.clone()
                    else:
                        st["momentum_buffer"].mul_(group["momentum"]).add_(t)
                    new.append(st["momentum_buffer"])
                pgs = new
            for p, t in zip(gp, pgs):
                p.add_(t, alpha=-group["lr"])
        self._num_steps += 1
        return loss.detach() if loss is not None else None

    # ------------------------------------------------------------ utilities
    def preconditioners(self) -> list[Preconditioner]:
        """The live preconditioner objects (for inspection), in parameter order."""
        out = []
        for p in self._params():
            st = self.state.get(p, {})
            if "precond" in st:
                out.append(_CLASSES[st["precond_kind"]].from_state_dict(st["precond"]))
        return out

    @property
    def num_skipped(self) -> int:
        """Total number of pairs rejected for holding non-finite values."""
        return sum(pc.num_skipped for pc in self.preconditioners())

    def state_dict(self) -> dict:
        sd = super().state_dict()
        self._generators()
        sd["psgd"] = {"num_steps": self._num_steps, "rng": self._gen.get_state(),
                      "cpu_rng": self._cpu_gen.get_state(), "pairs": self.pairs}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("psgd", None)
        if extra is None:
            raise ValueError("not a PSGD state_dict (missing the 'psgd' entry)")
        if extra["pairs"] != self.pairs:
            raise ValueError(f"state_dict was saved with pairs={extra['pairs']!r}, "
                             f"this optimizer uses {self.pairs!r}")
        super().load_state_dict(state_dict)
        self._generators()
        self._num_steps = int(extra["num_steps"])
        self._gen.set_state(extra["rng"].cpu() if self._gen.device.type == "cpu" else extra["rng"])
        self._cpu_gen.set_state(extra["cpu_rng"].cpu())
