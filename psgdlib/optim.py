"""``PSGD``: a ``torch.optim.Optimizer`` implementing the paper's update (4).

    theta <- theta - lr * P g,                                  (4)

with ``P`` fitted on criterion (3) by one of the preconditioners of
:mod:`psgdlib.preconditioners` from pairs of :mod:`psgdlib.pairs`.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import pairs as _pairs
from .preconditioners import Dense, Diag, Kron, Preconditioner

__all__ = ["PSGD", "PRECONDITIONERS", "NONFINITE", "NonFiniteStepError"]

PRECONDITIONERS = ("kron", "dense", "diag")
#: ``nonfinite`` modes of :class:`PSGD`.
NONFINITE = ("skip", "raise")
# Kinds are stored as ints: Optimizer.load_state_dict mangles str values in the state.
_CLASSES = (Dense, Kron, Diag)
# shapes of each preconditioner's tensors, from its constructor's dimensions
_SHAPES = {Dense: lambda n: {"Q": (n, n)}, Kron: lambda m, n: {"Q1": (m, m), "Q2": (n, n)},
           Diag: lambda n: {"q": (n,)}}


class NonFiniteStepError(FloatingPointError):
    """``PSGD(nonfinite="raise")``: a step's loss or gradient held a NaN or an infinity."""


def _detached(t: Tensor) -> Tensor:
    """``t`` without its graph (itself when it has none: no op dispatched)."""
    return t.detach() if t.requires_grad else t


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_options(g: dict, where: str = "") -> None:
    """Raise a ValueError naming the option and its value if a (group) option is invalid."""
    lr, plr, scale, clip, mom = (g["lr"], g["precond_lr"], g["precond_init_scale"], g["clip_norm"],
                                 g["momentum"])
    if not (_is_real(lr) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"{where}lr must be a positive number, got {lr!r}")
    if not (_is_real(plr) and 0 < plr < 1):
        raise ValueError(f"{where}precond_lr is a normalized step: need 0 < precond_lr < 1, got {plr!r}")
    if g["preconditioner"] not in PRECONDITIONERS:
        raise ValueError(f"{where}unknown preconditioner {g['preconditioner']!r}; "
                         f"choose one of {PRECONDITIONERS}")
    if not (_is_real(scale) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"{where}precond_init_scale must be positive and finite, got {scale!r}")
    if clip is not None and not (_is_real(clip) and clip > 0):
        raise ValueError(f"{where}clip_norm must be positive or None, got {clip!r}")
    if not (_is_real(mom) and 0 <= mom < 1):
        raise ValueError(f"{where}momentum must be in [0, 1), got {mom!r}")
    for key in ("max_kron_dim", "max_dense_dim"):
        v = g.get(key, 1)               # max_dense_dim: absent from older saved groups
        if not (_is_int(v) and v >= 1):
            raise ValueError(f"{where}{key} must be an integer >= 1, got {v!r}")


# warnings point at the caller of step(): warn <- _warn_nonfinite <- _watch_nonfinite <- step
# <- torch.no_grad's wrapper <- Optimizer's step-hook wrapper <- caller
_STACKLEVEL = 6


def _nbytes(n: float) -> str:
    return f"{n:.3g} bytes = {n / 2 ** 30:.3g} GiB"


class PSGD(Optimizer):
    """Preconditioned SGD (Li 2015, 2016).

    Args:
        params: parameters or param groups (real floating-point, dense, non-empty).
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
        max_dense_dim: largest size ``n`` of a :class:`Dense` preconditioner (its factor
            ``Q`` holds ``n^2`` numbers); a larger one is refused at construction.
        nonfinite: what a step whose loss or gradient holds a NaN/inf does (below):
            ``"skip"`` (default) or ``"raise"``.
        seed: seed of the optimizer's own random generator (default: drawn from
            torch's global generator at the first step).

    ``step(closure)``: the closure re-evaluates the model on the current minibatch and
    returns the loss.  It may leave the differentiation to PSGD (``hvp`` needs that: it
    differentiates the loss twice) or, with ``finite_difference`` and ``whitening``, be the
    standard torch closure (``zero_grad()``, ``loss.backward()``, ``return loss``);
    ``finite_difference`` calls it a second time at ``theta + dtheta``.  With
    ``pairs="whitening"`` the closure may be omitted, and the ``.grad`` fields filled by the
    caller's ``backward()`` are used (every parameter must have one).  After a step each
    parameter's ``.grad`` holds the (unpreconditioned) gradient.

    Non-finite steps: a step whose loss or any gradient entry is NaN or infinite changes
    neither the parameters nor any preconditioner or momentum buffer (bit for bit); with
    ``nonfinite="skip"`` this is decided on the device, without a host synchronisation, and
    counted in :attr:`nonfinite_steps` (an int; reading it synchronises) and
    :attr:`nonfinite_steps_tensor` (the live 0-d int64 counter, no synchronisation), saved
    in the state_dict.  A ``RuntimeWarning`` is issued after the 1st, 2nd, 4th, 8th, ...
    such step, read from an asynchronous host copy of the counter (on CUDA it can come a
    step or two late).  A training loop that should stop or log reads the counter when it
    synchronises anyway (e.g. at evaluation time).  ``nonfinite="raise"`` instead raises
    :class:`NonFiniteStepError` (naming the loss and the parameters) before changing
    anything, at the cost of one synchronisation per step.  The random generator and the
    step counter advance in both cases, and a preconditioner due an update counts the
    rejected pair in ``num_updates`` and :attr:`num_skipped`.
    """

    def __init__(self, params: Iterable, lr: float = 0.01, precond_lr: float = 0.01,
                 preconditioner: str = "kron", pairs: str = "hvp", precond_init_scale: float = 1.0,
                 update_every: int = 1, update_prob: float | None = None,
                 clip_norm: float | None = None, momentum: float = 0.0,
                 fd_scale: float | None = None, max_kron_dim: int = 1024, max_dense_dim: int = 16384,
                 nonfinite: str = "skip", seed: int | None = None) -> None:
        defaults = dict(lr=lr, precond_lr=precond_lr, preconditioner=preconditioner,
                        precond_init_scale=precond_init_scale, clip_norm=clip_norm,
                        momentum=momentum, max_kron_dim=max_kron_dim, max_dense_dim=max_dense_dim)
        _check_options(defaults)
        if pairs not in _pairs.PAIR_SOURCES:
            raise ValueError(f"unknown pair source {pairs!r}; choose one of {_pairs.PAIR_SOURCES}")
        if not (_is_int(update_every) and update_every >= 1):
            raise ValueError(f"update_every must be an integer >= 1, got {update_every}")
        if update_prob is not None and not (0 < update_prob <= 1):
            raise ValueError(f"update_prob must be in (0, 1], got {update_prob}")
        if update_prob is not None and update_every != 1:
            raise ValueError("give update_every or update_prob, not both")
        if fd_scale is not None and not (_is_real(fd_scale) and math.isfinite(fd_scale) and fd_scale > 0):
            raise ValueError(f"fd_scale must be positive and finite, got {fd_scale}")
        if nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
        if seed is not None and not _is_int(seed):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        super().__init__(params, defaults)
        self.pairs = pairs
        self.update_every = update_every
        self.update_prob = update_prob
        self.fd_scale = fd_scale
        self.nonfinite = nonfinite
        self._seed = seed
        self._gen: torch.Generator | None = None       # samples v on the parameters' device
        self._cpu_gen: torch.Generator | None = None   # decides update_prob draws
        self._num_steps = 0
        self._nonfinite = torch.zeros((), dtype=torch.int64, device=self._params()[0].device)
        self._nf_host: Tensor | None = None            # CUDA: pinned copy of the counter
        self._nf_event: torch.cuda.Event | None = None  # ... and the event of that copy
        self._nf_warned = 0                            # counter value at the last warning
        # p -> (its state's "precond" dict, the object wrapping those tensors): built once,
        # rebuilt only when the dict is replaced (load_state_dict)
        self._pc_cache: dict[Tensor, tuple[dict, Preconditioner]] = {}
        self._zeros: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    # ---------------------------------------------------------- validation
    def add_param_group(self, param_group: dict) -> None:
        """``Optimizer.add_param_group`` plus checks of the group's options and parameters."""
        super().add_param_group(param_group)
        gi = len(self.param_groups) - 1
        try:
            _check_options(self.param_groups[gi], f"param group {gi}: ")
            self._check_params(self.param_groups[gi], gi)
        except ValueError:
            self.param_groups.pop()
            raise

    def _check_params(self, group: dict, gi: int) -> None:
        """Refuse parameters PSGD cannot precondition, and dense factors too big to allocate."""
        for k, p in enumerate(group["params"]):
            what = f"param group {gi}, parameter {k} (shape {tuple(p.shape)}, dtype {p.dtype})"
            if p.is_complex():
                raise ValueError(f"{what}: complex parameters are not supported (P must be real "
                                 "symmetric positive definite); use two real parameters instead")
            if not p.is_floating_point():
                raise ValueError(f"{what}: PSGD needs floating-point parameters")
            if p.layout != torch.strided:
                raise ValueError(f"{what}: sparse parameters (layout {p.layout}) are not supported")
            if p.numel() == 0:
                raise ValueError(f"{what}: the parameter has no elements; leave it out of the optimizer")
        if group["preconditioner"] == "dense":
            if len({(p.dtype, p.device) for p in group["params"]}) > 1:
                raise ValueError(f"param group {gi}: a dense preconditioner needs all parameters of "
                                 "its group on one device with one dtype")
            sizes = [(sum(p.numel() for p in group["params"]), "its parameters")]
        else:
            sizes = [(d[0], f"parameter {k}") for k, p in enumerate(group["params"])
                     for cls, d in [self._precond_spec(group, p)] if cls is Dense]
        for n, of in sizes:
            self._check_dense_size(group, gi, n, of)

    @staticmethod
    def _check_dense_size(group: dict, gi: int, n: int, of: str) -> None:
        limit = group["max_dense_dim"]
        if n <= limit:
            return
        item = group["params"][0].element_size()
        raise ValueError(
            f"param group {gi}: a dense preconditioner over {of} has n = {n} and needs an n x n "
            f"factor Q of {n * n:.3g} elements ({_nbytes(n * n * item)}), above max_dense_dim={limit}; "
            "use preconditioner='kron' (one pair of Kronecker factors per matrix) or 'diag', "
            "or raise max_dense_dim")

    def _check_loaded_shapes(self, sd: dict) -> None:
        """Raise if a saved preconditioner or momentum buffer does not fit its parameter."""
        groups, state = sd["param_groups"], sd["state"]
        if len(groups) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(groups, self.param_groups)):
            return                                     # Optimizer.load_state_dict says so
        for gi, (saved, g) in enumerate(zip(groups, self.param_groups)):
            group = {**g, **{k: v for k, v in saved.items() if k != "params"}}  # options as loaded
            for k, (idx, p) in enumerate(zip(saved["params"], g["params"])):
                st = state.get(idx, {})
                what = f"param group {gi}, parameter {k} (shape {tuple(p.shape)})"
                buf = st.get("momentum_buffer")
                if buf is not None and tuple(buf.shape) != tuple(p.shape):
                    raise ValueError(f"state_dict does not fit the parameters: {what} has a saved "
                                     f"momentum buffer of shape {tuple(buf.shape)}")
                if "precond" in st:
                    self._check_saved_precond(group, p, st, what)

    def _check_saved_precond(self, group: dict, p: Tensor, st: dict, what: str) -> None:
        if group["preconditioner"] == "dense":
            cls, dims = Dense, (sum(q.numel() for q in group["params"] if q.requires_grad),)
        else:
            cls, dims = self._precond_spec(group, p)
        kind = st.get("precond_kind")
        saved_cls = _CLASSES[kind] if kind in range(len(_CLASSES)) else None
        got = {k: tuple(v.shape) for k, v in st["precond"].items() if torch.is_tensor(v) and k != "skipped"}
        want = _SHAPES[cls](*dims)
        if saved_cls is not cls or got != want:
            raise ValueError(
                f"state_dict does not fit the parameters: {what} needs a {cls.__name__} preconditioner "
                f"with tensors of shapes {want}, the saved state holds a "
                f"{getattr(saved_cls, '__name__', kind)} with {got} (saved for a model of another shape?)")

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
    @staticmethod
    def _precond_spec(group: dict, p: Tensor) -> tuple[type, tuple[int, ...]]:
        """The class and dimensions of the per-parameter preconditioner of ``p``."""
        kind, kmax = group["preconditioner"], group["max_kron_dim"]
        if kind == "diag":
            return Diag, (p.numel(),)
        if p.dim() >= 2:
            m, n = p.shape[0], p.numel() // p.shape[0]
            return (Kron, (m, n)) if max(m, n) <= kmax else (Diag, (p.numel(),))
        return (Dense, (p.numel(),)) if p.numel() <= kmax else (Diag, (p.numel(),))

    def _new_precond(self, group: dict, p: Tensor) -> Preconditioner:
        cls, dims = self._precond_spec(group, p)
        return cls(*dims, init_scale=group["precond_init_scale"], dtype=p.dtype, device=p.device)

    def _precond_of(self, p: Tensor, make: Callable[[], Preconditioner]) -> Preconditioner:
        """The preconditioner kept in ``self.state[p]`` (made by ``make`` at the first step)."""
        state = self.state[p]
        d = state.get("precond")
        hit = self._pc_cache.get(p)
        if hit is not None and hit[0] is d:
            return hit[1]
        if d is None:
            pc = make()
            state["precond"] = pc.state_dict()
            state["precond_kind"] = _CLASSES.index(type(pc))
        else:
            pc = _CLASSES[state["precond_kind"]].from_state_dict(d)
        self._pc_cache[p] = (state["precond"], pc)
        return pc

    @staticmethod
    def _shape_for(pc: Preconditioner, t: Tensor) -> Tensor:
        """``t`` as the matrix (Kron) or vector its preconditioner takes (no op if it is one)."""
        if isinstance(pc, Kron):
            return t if t.shape == (pc.m, pc.n) else t.reshape(pc.m, pc.n)
        return t if t.dim() == 1 else t.reshape(-1)

    # ----------------------------------------------------------- gradients
    def _index(self, p: Tensor) -> str:
        for gi, g in enumerate(self.param_groups):
            for k, q in enumerate(g["params"]):
                if q is p:
                    return f"param group {gi}, parameter {k} (shape {tuple(p.shape)})"
        return f"a parameter of shape {tuple(p.shape)}"  # pragma: no cover

    def _loss_and_grads(self, closure: Callable[[], Tensor] | None, params: list[Tensor],
                        update: bool) -> tuple[Tensor | None, list[Tensor]]:
        """The closure's loss and gradients, or (None, the ``.grad`` fields) without a closure."""
        if closure is not None:
            create = update and self.pairs == "hvp"
            loss, grads = _pairs.loss_and_grads(closure, params, create_graph=create,
                                                allow_backward=self.pairs != "hvp")
        else:
            missing = [p for p in params if p.grad is None]
            if missing:
                raise ValueError(f"pairs='whitening' without a closure preconditions the .grad fields, "
                                 f"but {self._index(missing[0])} has no .grad: call loss.backward() "
                                 "before opt.step(), or set requires_grad=False on a parameter the "
                                 "loss does not use")
            loss, grads = None, [p.grad for p in params]
        for p, g in zip(params, grads):
            if g.layout != torch.strided:
                raise ValueError(f"{self._index(p)}: sparse gradients (layout {g.layout}) are not supported")
        return loss, grads

    @staticmethod
    def _all_finite(loss: Tensor | None, grads: list[Tensor]) -> Tensor:
        """0-d bool tensor: the loss and every gradient entry are finite (on device, no sync).

        One ``aminmax`` per gradient (min and max propagate NaN and keep +-inf), then one
        check of them all: ``x - x == 0`` exactly for a finite ``x``.  Called under no_grad.
        """
        t = [x for g in grads for x in torch.aminmax(g)]
        if loss is not None:
            t.append(loss if loss.dim() == 0 else loss.reshape(()))
        t = torch.stack(t)                                 # promotes mixed dtypes
        return (t - t == 0).all()

    def _raise_nonfinite(self, loss: Tensor | None, params: list[Tensor], grads: list[Tensor]) -> None:
        bad = [self._index(p) for p, g in zip(params, grads) if not bool(torch.isfinite(g).all())]
        value = "no closure" if loss is None else f"loss {loss.item()}"
        raise NonFiniteStepError(
            f"PSGD step {self._num_steps}: non-finite loss or gradient ({value}; non-finite gradients: "
            f"{', '.join(bad) or 'none'}); nothing was changed (nonfinite='raise')")

    # ----------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One PSGD iteration; returns the loss the closure gave (or None).

        With ``nonfinite="skip"`` no value is read back from the device: ``ok`` ("the loss
        and every gradient are finite") is a 0-d device tensor that masks every state change.
        (``update_prob`` draws from a CPU generator, which reads a host tensor, not the device.)
        """
        params = [p for p in self._params() if p.requires_grad]
        if not params:
            return None
        if closure is None and self.pairs != "whitening":
            raise ValueError(f"PSGD with pairs={self.pairs!r} needs a closure that re-evaluates "
                             "the loss on the current minibatch: opt.step(closure)")
        for gi, group in enumerate(self.param_groups):
            _check_options(group, f"param group {gi}: ")   # e.g. an lr set to NaN by a scheduler
        update = self._update_now()
        gen, _ = self._generators()
        loss, grads = self._loss_and_grads(closure, params, update)
        dgrads = [_detached(g) for g in grads]
        for p, g in zip(params, dgrads):
            p.grad = g
        ok = self._all_finite(loss, dgrads)
        if self.nonfinite == "raise" and not bool(ok):
            self._raise_nonfinite(loss, params, grads)

        pair = self._pairs_for(params, grads, closure, gen) if update else {}
        gdict = dict(zip(params, dgrads))
        for group in self.param_groups:
            gp = [p for p in group["params"] if p in gdict]
            if gp:
                self._step_group(group, gp, gdict, pair, update, ok)
        self._num_steps += 1
        self._nonfinite += ~ok
        self._watch_nonfinite()
        return loss.detach() if loss is not None else None

    def _pairs_for(self, params: list[Tensor], grads: list[Tensor], closure: Callable[[], Tensor] | None,
                   gen: torch.Generator) -> dict[Tensor, tuple[Tensor, Tensor]]:
        """``{p: (v, h)}`` from the configured pair source."""
        if self.pairs == "hvp":
            with torch.enable_grad():
                vs, hs = _pairs.hvp(params, grads, gen, allow_constant=True)
        elif self.pairs == "finite_difference":
            vs, hs = _pairs.finite_difference(params, closure, grads, gen, self.fd_scale)
        else:
            vs, hs = _pairs.whitening(params, grads, gen)
        return {p: (_detached(v), _detached(h)) for p, v, h in zip(params, vs, hs)}

    def _step_group(self, group: dict, gp: list[Tensor], gdict: dict, pair: dict, update: bool,
                    ok: Tensor) -> None:
        """Update (3) of the group's preconditioners and update (4) of its parameters, masked by ``ok``."""
        if group["preconditioner"] == "dense":
            n = sum(p.numel() for p in gp)
            p0 = gp[0]
            pc = self._precond_of(p0, lambda: Dense(
                n, init_scale=group["precond_init_scale"], dtype=p0.dtype, device=p0.device))
            if update:
                pc.update(torch.cat([pair[p][0].reshape(-1) for p in gp]),
                          torch.cat([pair[p][1].reshape(-1) for p in gp]), group["precond_lr"], accept=ok)
            flat = pc.precondition(torch.cat([gdict[p].reshape(-1) for p in gp]))
            pgs = [t.view_as(p) for t, p in zip(flat.split([p.numel() for p in gp]), gp)]
            self.state[p0]["precond"]["num_updates"] = pc.num_updates
        else:
            pgs = []
            for p in gp:
                pc = self._precond_of(p, lambda p=p: self._new_precond(group, p))
                if update:
                    v, h = pair[p]
                    pc.update(self._shape_for(pc, v), self._shape_for(pc, h), group["precond_lr"], accept=ok)
                    self.state[p]["precond"]["num_updates"] = pc.num_updates
                pg = pc.precondition(self._shape_for(pc, gdict[p]))
                pgs.append(pg if pg.shape == p.shape else pg.view_as(p))

        if group["clip_norm"] is not None:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in pgs]))
            factor = torch.clamp(group["clip_norm"] / (norm + 1e-30), max=1.0)
            pgs = [t * factor for t in pgs]
        if group["momentum"] > 0:
            new = []
            for p, t in zip(gp, pgs):
                st = self.state[p]
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = torch.where(ok, t, 0.0)
                else:
                    buf = st["momentum_buffer"]
                    buf.copy_(torch.where(ok, buf * group["momentum"] + t, buf))
                new.append(st["momentum_buffer"])
            pgs = new
        for p, t in zip(gp, pgs):
            p.add_(torch.where(ok, t, self._zero(t)), alpha=-group["lr"])

    def _zero(self, p: Tensor) -> Tensor:
        """A 0-d zero of ``p``'s dtype and device (made once; ``where(ok, t, 0.0)`` would make
        one every step)."""
        key = (p.dtype, p.device)
        z = self._zeros.get(key)
        if z is None:
            z = self._zeros[key] = torch.zeros((), dtype=p.dtype, device=p.device)
        return z

    # ----------------------------------------------------- non-finite steps
    @property
    def nonfinite_steps(self) -> int:
        """Number of steps skipped for a non-finite loss or gradient (reading it synchronises)."""
        return int(self._nonfinite.item())

    @property
    def nonfinite_steps_tensor(self) -> Tensor:
        """The live 0-d int64 counter behind :attr:`nonfinite_steps`, on the parameters' device."""
        return self._nonfinite

    def _watch_nonfinite(self) -> None:
        """Warn when the counter grew, from a host copy of it, never waiting for the device.

        CPU: the counter is host memory.  CUDA: it is copied to pinned memory asynchronously;
        the copy is read, and the next one issued, once its event has completed.  Other
        devices: no warning (read :attr:`nonfinite_steps`).
        """
        c = self._nonfinite
        if c.device.type == "cpu":
            self._warn_nonfinite(int(c.numpy()))
            return
        if c.device.type != "cuda":
            return
        if self._nf_event is None:
            self._nf_host = torch.zeros((), dtype=torch.int64, pin_memory=True)
            self._nf_event = torch.cuda.Event()
        elif not self._nf_event.query():
            return
        else:
            self._warn_nonfinite(int(self._nf_host.numpy()))
        self._nf_host.copy_(c, non_blocking=True)
        self._nf_event.record(torch.cuda.current_stream(c.device))

    def _warn_nonfinite(self, n: int) -> None:
        """A RuntimeWarning when the count reaches 1, 2, 4, 8, ... (at least twice the last one)."""
        if n < max(1, 2 * self._nf_warned):
            return
        self._nf_warned = n
        warnings.warn(f"PSGD: {n} step(s) so far had a non-finite loss or gradient and were skipped "
                      "(parameters and preconditioners unchanged); read opt.nonfinite_steps, or pass "
                      "nonfinite='raise' to stop at the first one", RuntimeWarning, stacklevel=_STACKLEVEL)

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
        """Total number of pairs rejected for holding non-finite values (or a non-finite step's)."""
        return sum(pc.num_skipped for pc in self.preconditioners())

    def state_dict(self) -> dict:
        sd = super().state_dict()
        self._generators()
        sd["psgd"] = {"num_steps": self._num_steps, "rng": self._gen.get_state(),
                      "cpu_rng": self._cpu_gen.get_state(), "pairs": self.pairs,
                      "nonfinite_steps": self._nonfinite.clone()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """``Optimizer.load_state_dict`` after checking that the saved state fits the parameters."""
        state_dict = dict(state_dict)
        extra = state_dict.pop("psgd", None)
        if extra is None:
            raise ValueError("not a PSGD state_dict (missing the 'psgd' entry)")
        if extra["pairs"] != self.pairs:
            raise ValueError(f"state_dict was saved with pairs={extra['pairs']!r}, "
                             f"this optimizer uses {self.pairs!r}")
        self._check_loaded_shapes(state_dict)
        super().load_state_dict(state_dict)
        self._generators()
        self._num_steps = int(extra["num_steps"])
        self._gen.set_state(extra["rng"].cpu() if self._gen.device.type == "cpu" else extra["rng"])
        self._cpu_gen.set_state(extra["cpu_rng"].cpu())
        if "nonfinite_steps" in extra:                 # absent from older state_dicts
            self._nonfinite.copy_(extra["nonfinite_steps"])
        self._nf_warned = int(self._nonfinite.item())
