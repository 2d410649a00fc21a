"""An LSTM baseline stored like eq. (1): one input matrix ``W1`` and one output matrix ``W2``.

    [i; f; g; o](t) = W1 [u(t); x(t-1); 1]
    c(t) = sigmoid(f) * c(t-1) + sigmoid(i) * tanh(g),   x(t) = sigmoid(o) * tanh(c(t))
    y(t) = W2 [x(t); 1],                                 x(-1) = c(-1) = 0

``W1`` has shape ``(4 Nx, Nu + Nx + 1)`` (gate rows in torch's order i, f, g, o) and
``W2`` ``(Ny, Nx + 1)``, so :class:`psgdlib.PSGD` with ``preconditioner="kron"`` treats
it exactly like the RNN of eq. (1).  The paper's introduction contrasts PSGD on a plain
RNN with LSTMs, which are known to fail the XOR problem; this model lets the runner
check that claim with the same loop and optimizers.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .rnn import RNN

__all__ = ["LSTM"]


class LSTM(RNN):
    """LSTM with outputs at every step, time-major ``(L, B, Nu) -> (L, B, Ny)``.

    Init: input weights normal(0, ``init_std``), each gate's recurrent block a random
    orthogonal matrix, biases 0 except the forget gate's, ``forget_bias`` (1 by default,
    the usual choice).  The forward pass is torch's LSTM kernel fed with views of ``W1``
    (cuDNN disabled, so double backward and Hessian-vector products work on CUDA too).
    """

    _GATES = 4

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, init_std: float = 0.1,
                 forget_bias: float = 1.0, zero_sum_outputs: bool = False,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(input_dim, hidden_dim, output_dim, init_std=init_std,
                         zero_sum_outputs=zero_sum_outputs, impl="loop", dtype=dtype, device=device,
                         generator=generator)      # W1 (4 Nx, Nu + Nx + 1): _GATES = 4
        with torch.no_grad():
            self.W1[self.hidden_dim:2 * self.hidden_dim, -1] = forget_bias
        self.impl = "lstm"

    def hidden_states(self, u: Tensor) -> Tensor:
        """States ``x(t)`` for ``u`` (L, B, Nu); returns (L, B, Nx)."""
        self._check(u)
        B, Nu, Nx = u.shape[1], self.input_dim, self.hidden_dim
        Win, Wr, b = self.W1[:, :Nu], self.W1[:, Nu:Nu + Nx], self.W1[:, -1]
        h0 = u.new_zeros(1, B, Nx)
        with torch.backends.cudnn.flags(enabled=False):
            X, _, _ = torch._VF.lstm(u, (h0, h0), [Win, Wr, b, torch.zeros_like(b)], True, 1, 0.0,
                                     self.training, False, False)
        return X

    def extra_repr(self) -> str:
        return (f"Nu={self.input_dim}, Nx={self.hidden_dim}, Ny={self.output_dim}, "
                f"zero_sum_outputs={self.zero_sum_outputs}")
