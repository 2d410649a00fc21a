"""Hand-written BPTT for the tanh recurrence of eq. (1), with a cheap double backward.

``recurrence(Z, Wr)`` returns ``X`` with ``X[t] = tanh(Z[t] + X[t-1] Wr^T)``, ``X[-1] = 0``,
for pre-activations ``Z`` (L, B, N) that already hold the input projection and bias.
Its backward is a custom function too, whose own backward (the adjoint of BPTT, one
forward-in-time loop) is written out, so a Hessian-vector product by double backward
costs four time loops of two or three batched ops each, instead of autograd replaying
the derivative of every op of every step.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["recurrence"]


class _Recurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, Z: Tensor, Wr: Tensor) -> Tensor:
        L = Z.shape[0]
        X = torch.empty_like(Z)
        WrT = Wr.T
        torch.tanh(Z[0], out=X[0])
        for t in range(1, L):
            torch.tanh(torch.addmm(Z[t], X[t - 1], WrT), out=X[t])
        ctx.save_for_backward(X, Wr)
        return X

    @staticmethod
    def backward(ctx, dX: Tensor):
        X, Wr = ctx.saved_tensors
        dZ, dWr = _RecurrenceBackward.apply(dX.contiguous(), X, Wr)
        return dZ, dWr


class _RecurrenceBackward(torch.autograd.Function):
    """(dX, X, Wr) -> (dZ, dWr): BPTT.  dZ[t] = (dX[t] + dZ[t+1] Wr) * (1 - X[t]^2)."""

    @staticmethod
    def forward(ctx, dX: Tensor, X: Tensor, Wr: Tensor):
        L, B, N = X.shape
        D = 1 - X * X
        pre = torch.empty_like(X)     # dX[t] + dZ[t+1] Wr
        dZ = torch.empty_like(X)
        pre[L - 1] = dX[L - 1]
        torch.mul(pre[L - 1], D[L - 1], out=dZ[L - 1])
        for t in range(L - 2, -1, -1):
            torch.addmm(dX[t], dZ[t + 1], Wr, out=pre[t])
            torch.mul(pre[t], D[t], out=dZ[t])
        dWr = dZ[1:].reshape(-1, N).T @ X[:-1].reshape(-1, N)
        ctx.save_for_backward(X, Wr, D, pre, dZ)
        return dZ, dWr

    @staticmethod
    @once_differentiable
    def backward(ctx, gdZ: Tensor | None, gdWr: Tensor | None):
        X, Wr, D, pre, dZ = ctx.saved_tensors
        L, B, N = X.shape
        G = torch.zeros_like(X) if gdZ is None else gdZ.clone()
        if gdWr is not None:          # dWr = sum_t dZ[t]^T X[t-1]
            G[1:] += (X[:-1].reshape(-1, N) @ gdWr.T).view(L - 1, B, N)
        S = torch.empty_like(X)       # adjoint of pre[t]
        torch.mul(G[0], D[0], out=S[0])
        for t in range(1, L):         # dZ[t] feeds dZ[t-1] through dZ[t] Wr
            torch.mul(torch.addmm(G[t], S[t - 1], Wr.T), D[t], out=S[t])
        g_Wr = dZ[1:].reshape(-1, N).T @ S[:-1].reshape(-1, N)
        # adjoint of D[t] = 1 - X[t]^2 is (adjoint of dZ[t]) * pre[t], where the adjoint of
        # dZ[t] is G[t] + S[t-1] Wr^T (recomputed in one batched product, no division by D)
        G[1:] += (S[:-1].reshape(-1, N) @ Wr.T).view(L - 1, B, N)
        g_X = G.mul_(pre).mul_(X).mul_(-2.0)
        if gdWr is not None:
            g_X[:-1] += (dZ[1:].reshape(-1, N) @ gdWr).view(L - 1, B, N)
        return S, g_X, g_Wr


def recurrence(Z: Tensor, Wr: Tensor) -> Tensor:
    """``X[t] = tanh(Z[t] + X[t-1] Wr^T)``; Z: (L, B, N), Wr: (N, N) -> X: (L, B, N)."""
    return _Recurrence.apply(Z, Wr)
