"""The standard RNN of the paper's eq. (1), with its two weight matrices.

    x(t) = phi(W1 [u(t); x(t-1); 1]),     y(t) = W2 [x(t); 1],     x(-1) = 0.   (1)

``W1`` has shape ``(Nx, Nu + Nx + 1)`` and ``W2`` ``(Ny, Nx + 1)``, stored as
exactly those two matrices, so that :class:`psgdlib.PSGD` with
``preconditioner="kron"`` builds the preconditioner of eq. (5).
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from .bptt import recurrence

__all__ = ["RNN", "orthogonal_", "IMPLS", "positive_int"]

IMPLS = ("auto", "bptt", "fused", "loop")
_ACT = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}


def positive_int(name: str, v: object) -> int:
    """``v`` as an int if it is an integer >= 1; ValueError naming ``name`` otherwise (no truncation)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != int(v) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)


def orthogonal_(w: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Fill the square matrix ``w`` in place with a Haar-random orthogonal matrix."""
    n = w.shape[0]
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))[None, :]
    with torch.no_grad():
        w.copy_(q.to(w.dtype))
    return w


class RNN(nn.Module):
    """Eq. (1) with outputs at every step.

    Args:
        input_dim, hidden_dim, output_dim: ``Nu``, ``Nx``, ``Ny``.
        nonlinearity: ``"tanh"`` (default, as every public re-implementation),
            ``"sigmoid"`` (the paper's wording) or ``"relu"``.
        init_std: std of the normal init of the non-recurrent weights (biases start at 0;
            the recurrent block of ``W1`` starts as a random orthogonal matrix).
        zero_sum_outputs: store only ``Ny - 1`` rows of ``W2`` and complete it so that
            every column sums to zero (the paper's fix for the singular Hessian of the
            cross-entropy loss in the 5-bit memorization problem).
        impl: ``"bptt"`` (tanh only) runs the recurrence and its backward as hand-written
            time loops whose double backward is written out too (:mod:`.bptt`): the
            fastest Hessian-vector products; ``"fused"`` uses torch's RNN kernel
            (tanh/relu; cuDNN disabled so double backward works on CUDA too); ``"loop"``
            a Python time loop under autograd.  ``"auto"`` (default): ``bptt`` for tanh,
            ``fused`` for relu, ``loop`` for sigmoid.  All give the same numbers;
            ``benchmarks/rnn_speed.py`` times them.
    """

    #: blocks of ``Nx`` rows in ``W1`` (one per gate; the LSTM subclass has 4), each with its
    #: own orthogonal recurrent block at init
    _GATES = 1

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, nonlinearity: str = "tanh",
                 init_std: float = 0.1, zero_sum_outputs: bool = False, impl: str = "auto",
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        input_dim, hidden_dim, output_dim = (positive_int(name, v) for name, v in (
            ("input_dim", input_dim), ("hidden_dim", hidden_dim), ("output_dim", output_dim)))
        if nonlinearity not in _ACT:
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; choose one of {tuple(_ACT)}")
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
        if zero_sum_outputs and output_dim < 2:
            raise ValueError("zero_sum_outputs needs output_dim >= 2")
        self.input_dim, self.hidden_dim, self.output_dim = int(input_dim), int(hidden_dim), int(output_dim)
        self.nonlinearity, self.zero_sum_outputs = nonlinearity, zero_sum_outputs
        if impl == "auto":
            impl = {"tanh": "bptt", "relu": "fused", "sigmoid": "loop"}[nonlinearity]
        if impl == "bptt" and nonlinearity != "tanh":
            raise ValueError("impl='bptt' is written for tanh; use 'fused' or 'loop'")
        if impl == "fused" and nonlinearity == "sigmoid":
            impl = "loop"
        self.impl = impl
        Nu, Nx, Ny = self.input_dim, self.hidden_dim, self.output_dim
        # Drawn in float32 whatever the dtype, then cast: one seed gives the same initial
        # weights (up to rounding) in float32 and float64, and float32 runs keep the weights
        # they always had (every stored result is float32).
        dt = dtype or torch.get_default_dtype()
        w1 = (torch.randn(self._GATES * Nx, Nu + Nx + 1, generator=generator, dtype=torch.float32)
              * init_std).to(dt)
        w1[:, -1] = 0
        for k in range(self._GATES):
            orthogonal_(w1[k * Nx:(k + 1) * Nx, Nu:Nu + Nx], generator)
        rows = Ny - 1 if zero_sum_outputs else Ny
        w2 = (torch.randn(rows, Nx + 1, generator=generator, dtype=torch.float32) * init_std).to(dt)
        w2[:, -1] = 0
        self.W1 = nn.Parameter(w1.to(device))
        self.W2 = nn.Parameter(w2.to(device))

    def output_matrix(self) -> Tensor:
        """The full ``(Ny, Nx + 1)`` output matrix (completed when ``zero_sum_outputs``)."""
        if self.zero_sum_outputs:
            return torch.cat([self.W2, -self.W2.sum(0, keepdim=True)], 0)
        return self.W2

    def _check(self, u: Tensor) -> None:
        if u.dim() != 3 or u.shape[-1] != self.input_dim:
            raise ValueError(f"RNN input must be time-major (L, B, {self.input_dim}), got {tuple(u.shape)}")
        if u.shape[0] == 0:
            raise ValueError(f"RNN input has no time steps (L = 0, shape {tuple(u.shape)}); "
                             "a sequence needs at least one")
        if u.dtype != self.W1.dtype:
            raise ValueError(f"input dtype {u.dtype} differs from the model's {self.W1.dtype}")

    def hidden_states(self, u: Tensor) -> Tensor:
        """States ``x(t)`` of eq. (1) for ``u`` (L, B, Nu); returns (L, B, Nx)."""
        self._check(u)
        L, B, Nu = u.shape
        Nx = self.hidden_dim
        Win, Wr, b = self.W1[:, :Nu], self.W1[:, Nu:Nu + Nx], self.W1[:, -1]
        if self.impl == "fused":
            fn = torch._VF.rnn_tanh if self.nonlinearity == "tanh" else torch._VF.rnn_relu
            h0 = u.new_zeros(1, B, Nx)
            with torch.backends.cudnn.flags(enabled=False):
                X, _ = fn(u, h0, [Win, Wr, b, torch.zeros_like(b)], True, 1, 0.0, self.training, False, False)
            return X
        Z = torch.addmm(b, u.reshape(L * B, Nu), Win.T).view(L, B, Nx)
        if self.impl == "bptt":
            return recurrence(Z, Wr)
        act = _ACT[self.nonlinearity]
        x = act(Z[0])
        xs = [x]
        WrT = Wr.T
        for t in range(1, L):
            x = act(torch.addmm(Z[t], x, WrT))
            xs.append(x)
        return torch.stack(xs)

    def forward(self, u: Tensor) -> Tensor:
        """Outputs ``y(t)`` at every step: (L, B, Nu) -> (L, B, Ny)."""
        X = self.hidden_states(u)
        L, B, Nx = X.shape
        W2 = self.output_matrix()
        return torch.addmm(W2[:, -1], X.reshape(L * B, Nx), W2[:, :Nx].T).view(L, B, self.output_dim)

    def extra_repr(self) -> str:
        return (f"Nu={self.input_dim}, Nx={self.hidden_dim}, Ny={self.output_dim}, "
                f"phi={self.nonlinearity}, impl={self.impl}, zero_sum_outputs={self.zero_sum_outputs}")
