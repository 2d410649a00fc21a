"""PSGD preconditioners fitted on criterion (3) (Li 2016; Li, arXiv:1512.04202).

Every preconditioner keeps ``P = Q^T Q`` with ``Q`` upper triangular with a
positive diagonal (``Diag``: ``P = diag(q)^2``), so ``P`` stays symmetric
positive definite.  ``update(v, h)`` takes one step of stochastic *relative*
(natural) gradient descent on criterion (3)::

    c(P) = h^T P h + v^T P^{-1} v,            (3)

from a single pair ``(v, h)`` (the paper's ``(dtheta, dg)``).  Writing
``a = Q h`` and ``b = Q^{-T} v``, the relative gradient of (3) with respect to
``Q`` (the change ``dQ = E Q`` with ``E`` upper triangular) is
``triu(a a^T - b b^T)``; the update is::

    Q <- Q - mu / max|grad| * grad @ Q,

the *normalized* step of [7]: dividing by the largest entry keeps every
diagonal factor ``1 - mu grad_ii / max|grad|`` inside ``(1 - mu, 1 + mu)``, so
``Q`` keeps a positive diagonal for any pair and ``0 < mu < 1``.  The minimizer of (3) satisfies
``P E[h h^T] P = E[v v^T]`` (the paper's Sec. II.A): for noise-free pairs
``h = H v`` and ``E[v v^T] = I`` that is ``P = |H|^{-1}``.  Because each step is
divided by its own ``max|grad|``, the stochastic iteration settles where
``E[grad / max|grad|] = 0``, which equals the minimizer only when ``grad``
vanishes pair by pair at it (noise-free pairs with ``Dense``/``Kron``); with
noisy pairs it can sit a few per cent away (chapter 1, exercise 2).  ``Dense``
also adapts slowly along directions whose curvature is far below the largest
one (each step's size is set by the largest entry): ``Kron`` reaches spectra
spanning 1e6 within thousands of updates where ``Dense`` needs far more.

A pair holding a non-finite value is skipped (``Q`` is left untouched) and
counted in ``num_skipped``, without a host/device synchronisation.  ``update(..., accept=ok)``
takes a 0-d bool tensor ``ok`` as well: where it is false the pair is skipped and counted
whatever its values (:class:`psgdlib.PSGD` passes "this step's loss and gradient are finite").
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["Dense", "Kron", "Diag", "Preconditioner"]

_TINY = 1e-30


def _check_lr(lr: float) -> None:
    if not (0.0 < float(lr) < 1.0):
        raise ValueError(f"the normalized preconditioner step must satisfy 0 < lr < 1, got {lr}")


def _check_dim(where: str, name: str, v: int) -> int:
    """``v`` as an int if it is an integer >= 1 (``2.7`` or ``True`` are refused, not truncated)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != int(v) or v < 1:
        raise ValueError(f"{where} needs an integer {name} >= 1, got {v!r}")
    return int(v)


def _accepted(ok: Tensor, accept: Tensor | None) -> Tensor:
    """``ok & accept`` (both 0-d bool tensors), or ``ok`` when ``accept`` is None."""
    return ok if accept is None else ok & accept


def _check_init_scale(scale: float) -> None:
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"init_scale must be a positive finite number, got {scale}")


def _relgrad_step_(Q: Tensor, a: Tensor, b: Tensor, lr: float, block: int = 128) -> None:
    """In place ``Q <- Q - lr * triu(a a^T - b b^T) @ Q`` for an upper triangular ``Q``, in O(n^2).

    Row i of ``triu(a a^T) Q`` is ``a_i * sum_{k >= i} a_k Q[k, :]``: a reverse cumulative
    sum, no O(n^3) product.  With ``L = Q^T`` (lower triangular; contiguous when ``Q`` is
    stored column-major, as :class:`Dense` does) the sums run along the rows of ``L``, which
    are independent: ``L`` is processed ``block`` rows at a time, each block restricted to
    its non-zero columns, so the temporaries stay cache-sized and half of the work is
    skipped.  a, b: (n,), Q: (n, n).
    """
    L = Q.T
    if not L.is_contiguous():          # row-major Q: same arithmetic on a column-major copy
        Lc = L.contiguous()
        _relgrad_step_(Lc.T, a, b, lr, block)
        Q.copy_(Lc.T)
        return
    n = L.shape[0]
    for j0 in range(0, n, block):
        j1 = min(n, j0 + block)
        Lb, ab, bb = L[j0:j1, :j1], a[:j1], b[:j1]
        Ra = (Lb * ab).flip(1).cumsum(1).flip(1)   # Ra[j, i] = sum_{k >= i} a_k Q[k, j]
        Rb = (Lb * bb).flip(1).cumsum(1).flip(1)
        Lb.addcmul_(Ra, ab, value=-lr).addcmul_(Rb, bb, value=lr)


class Preconditioner:
    """Common bookkeeping: step counters and the skipped-pair counter."""

    def __init__(self, dtype: torch.dtype | None, device: torch.device | str | None) -> None:
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._skipped = torch.zeros((), dtype=torch.int64, device=self.device)
        self.num_updates = 0

    @property
    def num_skipped(self) -> int:
        """Number of pairs rejected because they held a non-finite value."""
        return int(self._skipped.item())

    def _accept(self, ok: Tensor, *pairs: tuple[Tensor, Tensor]) -> None:
        """Write ``new`` into ``old`` in place where ``ok`` (a 0-d bool tensor); count rejects."""
        self._skipped += ~ok
        for old, new in pairs:
            old.copy_(torch.where(ok, new, old))

    # serialisation -------------------------------------------------------
    def state_dict(self) -> dict:
        """The live tensors (not copies) plus counters; ``from_state_dict`` wraps them again."""
        d = {k: v for k, v in self._tensors().items()}
        d["skipped"] = self._skipped
        d["num_updates"] = self.num_updates
        return d

    @classmethod
    def from_state_dict(cls, state: dict) -> "Preconditioner":
        """A preconditioner whose tensors *are* those of ``state`` (no copy)."""
        obj = cls.__new__(cls)
        first = next(v for k, v in state.items() if k not in ("skipped", "num_updates"))
        obj.dtype, obj.device = first.dtype, first.device
        for k in state:
            if k not in ("skipped", "num_updates"):
                setattr(obj, k, state[k])
        obj._skipped = state["skipped"]
        obj.num_updates = int(state["num_updates"])
        obj._set_dims()
        return obj

    def load_state_dict(self, state: dict) -> None:
        for k, v in self._tensors().items():
            if state[k].shape != v.shape:
                raise ValueError(f"{k}: expected shape {tuple(v.shape)}, got {tuple(state[k].shape)}")
            v.copy_(state[k])
        self._skipped.copy_(state["skipped"])
        self.num_updates = int(state["num_updates"])

    def _tensors(self) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_dims(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class Dense(Preconditioner):
    """Dense preconditioner for a flat parameter vector of length ``n`` (paper Sec. II.B.1).

    ``P = Q^T Q``, ``Q`` (n, n) upper triangular.  Memory O(n^2); each update
    and each ``precondition`` call costs O(n^2) (the relative-gradient product
    ``triu(a a^T - b b^T) Q`` is evaluated as two reverse cumulative sums).
    ``Q`` is kept in column-major memory (``Q.T`` contiguous) so that those sums run along
    contiguous memory, block by block and in place (``benchmarks/dense_update.py`` times
    the update against the straightforward formulation).
    """

    def __init__(self, n: int, init_scale: float = 1.0, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        n = _check_dim("Dense(n)", "n", n)
        _check_init_scale(init_scale)
        super().__init__(dtype, device)
        self.n = n
        # column-major storage: self.Q is the transposed view of a contiguous (lower) matrix
        self.Q = (torch.eye(self.n, dtype=self.dtype, device=self.device) * math.sqrt(init_scale)).T

    def _tensors(self) -> dict[str, Tensor]:
        return {"Q": self.Q}

    def _set_dims(self) -> None:
        self.n = self.Q.shape[0]

    def _check(self, x: Tensor, name: str) -> Tensor:
        if x.dim() != 1 or x.shape[0] != self.n:
            raise ValueError(f"Dense({self.n}): {name} must be a vector of shape ({self.n},), "
                             f"got {tuple(x.shape)}")
        return x.to(self.Q.dtype)

    @property
    def P(self) -> Tensor:
        """The preconditioner ``Q^T Q`` as a dense (n, n) matrix."""
        return self.Q.T @ self.Q

    def precondition(self, g: Tensor) -> Tensor:
        """``P g = Q^T (Q g)`` for g of shape (n,)."""
        g = self._check(g, "g")
        return self.Q.T @ (self.Q @ g)

    def criterion(self, v: Tensor, h: Tensor) -> Tensor:
        """``h^T P h + v^T P^{-1} v``, criterion (3) for one pair."""
        v, h = self._check(v, "v"), self._check(h, "h")
        a = self.Q @ h
        b = torch.linalg.solve_triangular(self.Q.T, v[:, None], upper=False)[:, 0]
        return a @ a + b @ b

    def update(self, v: Tensor, h: Tensor, lr: float = 0.01, accept: Tensor | None = None) -> None:
        """One normalized relative-gradient step on (3) from the pair (v, h), both (n,).

        ``accept``: optional 0-d bool tensor; where false the pair is skipped (see the module).
        """
        _check_lr(lr)
        v, h = self._check(v, "v"), self._check(h, "h")
        Q = self.Q
        a = Q @ h
        b = torch.linalg.solve_triangular(Q.T, v[:, None], upper=False)[:, 0]  # Q^{-T} v
        # the gradient triu(a a^T - b b^T); a a^T - b b^T is symmetric, so its largest
        # magnitude over the upper triangle is its largest magnitude overall
        grad = torch.outer(a, a).addr_(b, b, alpha=-1)
        lo, hi = torch.aminmax(grad)
        gmax = torch.maximum(hi, -lo)
        del grad
        ok = _accepted(torch.isfinite(gmax), accept)  # false for any NaN/inf in the pair
        # normalize a and b by sqrt(gmax) so that step = lr / gmax needs no n x n pass,
        # and zero them for a rejected pair (Q then stays as it is)
        scale = torch.where(ok, torch.rsqrt(gmax + _TINY), torch.zeros_like(gmax))
        a = torch.where(ok, a * scale, torch.zeros_like(a))
        b = torch.where(ok, b * scale, torch.zeros_like(b))
        _relgrad_step_(Q, a, b, lr)
        self._skipped += ~ok
        self.num_updates += 1


class Kron(Preconditioner):
    """Kronecker-product preconditioner for an (m, n) matrix (the paper's eq. (5)).

    ``P = P2 (x) P1`` with ``P1 = Q1^T Q1`` (m, m) and ``P2 = Q2^T Q2`` (n, n),
    acting on a gradient matrix as ``G -> P1 @ G @ P2``.  For the RNN of eq. (1)
    one ``Kron`` per weight matrix (bias folded in as the last column) gives
    exactly eq. (5).  The split of scale between ``Q1`` and ``Q2`` is not
    identifiable; it is rebalanced after every update (harmless for ``P``).
    """

    def __init__(self, m: int, n: int, init_scale: float = 1.0, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        m, n = _check_dim("Kron(m, n)", "m", m), _check_dim("Kron(m, n)", "n", n)
        _check_init_scale(init_scale)
        super().__init__(dtype, device)
        self.m, self.n = m, n
        s = init_scale ** 0.25
        self.Q1 = torch.eye(self.m, dtype=self.dtype, device=self.device) * s
        self.Q2 = torch.eye(self.n, dtype=self.dtype, device=self.device) * s

    def _tensors(self) -> dict[str, Tensor]:
        return {"Q1": self.Q1, "Q2": self.Q2}

    def _set_dims(self) -> None:
        self.m, self.n = self.Q1.shape[0], self.Q2.shape[0]

    def _transposed(self) -> tuple[Tensor, Tensor]:
        """The views ``Q1^T``, ``Q2^T``, made once per factor tensor (the factors are updated
        in place, so the views stay current; assigning a new ``Q1``/``Q2`` makes new ones)."""
        cache = self.__dict__.get("_T")
        if cache is None or cache[0] is not self.Q1 or cache[1] is not self.Q2:
            cache = self._T = (self.Q1, self.Q2, self.Q1.T, self.Q2.T)
        return cache[2], cache[3]

    def _check(self, x: Tensor, name: str) -> Tensor:
        if x.dim() != 2 or tuple(x.shape) != (self.m, self.n):
            raise ValueError(f"Kron({self.m}, {self.n}): {name} must be a matrix of shape "
                             f"({self.m}, {self.n}), got {tuple(x.shape)}")
        return x if x.dtype == self.Q1.dtype else x.to(self.Q1.dtype)

    @property
    def P1(self) -> Tensor:
        return self.Q1.T @ self.Q1

    @property
    def P2(self) -> Tensor:
        return self.Q2.T @ self.Q2

    def precondition(self, g: Tensor) -> Tensor:
        """``P1 @ G @ P2`` for G of shape (m, n)."""
        g = self._check(g, "g")
        Q1T, Q2T = self._transposed()
        return Q1T @ (self.Q1 @ g @ Q2T) @ self.Q2

    def _ab(self, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """``a = Q1 H Q2^T`` and ``b = Q1^{-T} V Q2^{-1}``, both (m, n).

        Both solves are right-hand solves with the upper triangular factors themselves:
        ``(Q1^{-T} V)^T = V^T Q1^{-1}``.  On transposed (column-major) views LAPACK needs no
        copies (3x faster on the CPU than a left solve with the view ``Q1^T``).
        """
        a = self.Q1 @ h @ self._transposed()[1]
        bt = torch.linalg.solve_triangular(self.Q1, v.T, upper=True, left=False)  # (n, m)
        b = torch.linalg.solve_triangular(self.Q2, bt.T, upper=True, left=False)
        return a, b

    def criterion(self, v: Tensor, h: Tensor) -> Tensor:
        """``tr(H^T P1 H P2) + tr(V^T P1^{-1} V P2^{-1})``: criterion (3) with P of eq. (5)."""
        v, h = self._check(v, "v"), self._check(h, "h")
        a, b = self._ab(v, h)
        return (a * a).sum() + (b * b).sum()

    def update(self, v: Tensor, h: Tensor, lr: float = 0.01, accept: Tensor | None = None) -> None:
        """One normalized relative-gradient step on (3) for both factors; v, h: (m, n).

        ``accept``: optional 0-d bool tensor; where false the pair is skipped (see the module).
        """
        _check_lr(lr)
        v, h = self._check(v, "v"), self._check(h, "h")
        Q1, Q2 = self.Q1, self.Q2
        a, b = self._ab(v, h)
        aT, bT = a.T, b.T
        grad1 = torch.addmm(a @ aT, b, bT, alpha=-1).triu_()     # triu(a a^T - b b^T), (m, m)
        grad2 = torch.addmm(aT @ a, bT, b, alpha=-1).triu_()     # triu(a^T a - b^T b), (n, n)
        g1max, g2max = grad1.abs().amax(), grad2.abs().amax()
        # Q <- Q - lr (grad / max|grad|) @ Q: normalized in place, lr the product's alpha
        lr = float(lr)
        Q1n = torch.addmm(Q1, grad1.div_(g1max + _TINY), Q1, alpha=-lr)
        Q2n = torch.addmm(Q2, grad2.div_(g2max + _TINY), Q2, alpha=-lr)
        # rebalance the scale between the two factors (P is unchanged)
        r = torch.sqrt(Q1n.diagonal().abs().amax() / Q2n.diagonal().abs().amax())
        Q1n.div_(r)
        Q2n.mul_(r)
        # every entry finite: min and max propagate NaN and keep +-inf, and x - x == 0
        # exactly for a finite x (one pass over each factor, one check for all)
        t = torch.stack([*torch.aminmax(Q1n), *torch.aminmax(Q2n), g1max, g2max])
        ok = _accepted((t - t == 0).all(), accept)
        torch.where(ok, Q1n, Q1, out=Q1)
        torch.where(ok, Q2n, Q2, out=Q2)
        self._skipped += ~ok
        self.num_updates += 1


class Diag(Preconditioner):
    """Diagonal preconditioner ``P = diag(q)^2`` for a vector of length n.

    Criterion (3) separates per coordinate; the fixed point is
    ``p_i = sqrt(E[v_i^2] / E[h_i^2])``.
    """

    def __init__(self, n: int, init_scale: float = 1.0, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        n = _check_dim("Diag(n)", "n", n)
        _check_init_scale(init_scale)
        super().__init__(dtype, device)
        self.n = n
        self.q = torch.full((self.n,), math.sqrt(init_scale), dtype=self.dtype, device=self.device)

    def _tensors(self) -> dict[str, Tensor]:
        return {"q": self.q}

    def _set_dims(self) -> None:
        self.n = self.q.shape[0]

    def _check(self, x: Tensor, name: str) -> Tensor:
        if x.dim() != 1 or x.shape[0] != self.n:
            raise ValueError(f"Diag({self.n}): {name} must be a vector of shape ({self.n},), "
                             f"got {tuple(x.shape)}")
        return x.to(self.q.dtype)

    @property
    def P(self) -> Tensor:
        return torch.diag(self.q * self.q)

    def precondition(self, g: Tensor) -> Tensor:
        g = self._check(g, "g")
        return self.q * self.q * g

    def criterion(self, v: Tensor, h: Tensor) -> Tensor:
        v, h = self._check(v, "v"), self._check(h, "h")
        a, b = self.q * h, v / self.q
        return a @ a + b @ b

    def update(self, v: Tensor, h: Tensor, lr: float = 0.01, accept: Tensor | None = None) -> None:
        """One normalized step on (3) per coordinate; v, h: (n,); ``accept`` as for :class:`Dense`."""
        _check_lr(lr)
        v, h = self._check(v, "v"), self._check(h, "h")
        q = self.q
        a, b = q * h, v / q
        grad = a * a - b * b
        gmax = grad.abs().max()
        qn = q - (lr / (gmax + _TINY)) * grad * q
        ok = torch.isfinite(gmax) & torch.isfinite(qn).all()
        self._accept(_accepted(ok, accept), (q, qn))
        self.num_updates += 1
