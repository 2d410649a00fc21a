"""Sources of the pairs ``(v, h)`` that criterion (3) is fitted on.

* ``hvp``: ``v ~ N(0, I)``, ``h = H v`` by double backward (exact Hessian-vector product).
* ``finite_difference``: the paper's way, ``dtheta ~ N(0, s^2)`` element-wise and
  ``dg = g(theta + dtheta) - g(theta)`` on the same minibatch.
* ``whitening``: ``(v, g)`` with ``v ~ N(0, I)``; then ``P`` fits ``E[g g^T]^{-1/2}``.

All functions take and return lists of tensors shaped like the parameters.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["PAIR_SOURCES", "default_fd_scale", "hvp", "finite_difference", "whitening", "randn_like"]

PAIR_SOURCES = ("hvp", "finite_difference", "whitening")


def default_fd_scale(dtype: torch.dtype) -> float:
    """Std of the finite-difference perturbation ``dtheta`` for parameters of ``dtype``.

    float64: ``sqrt(eps) = 2^-26`` exactly as in the paper (``dtheta ~ N(0, eps)``,
    ``eps = 2^-52``).  The forward difference of a gradient has relative
    truncation error O(s) and relative rounding error O(eps / s), balanced near
    ``s ~ sqrt(eps)``.  float32: ``s = 2^-14`` (6.1e-5, a little under
    ``sqrt(eps_32) = 3.5e-4``).  Measured on a tanh RNN (Nx=30, T=50) against the
    exact Hessian-vector product, the relative error of ``dg / s`` is 7e-3 at
    2^-12, 1.8e-3 at 2^-14, 1.0e-3 at 2^-16 and 1.6e-2 at 2^-20 (rounding takes
    over); 2^-14 leaves a margin on the rounding side for longer sequences.
    ``tests/test_pairs.py`` checks the agreement in float32 and float64.
    half precisions: ``2^-6``.
    """
    if dtype == torch.float64:
        return 2.0 ** -26
    if dtype in (torch.float32, torch.float16, torch.bfloat16):
        return 2.0 ** -14 if dtype == torch.float32 else 2.0 ** -6
    raise ValueError(f"finite-difference pairs need floating-point parameters, got {dtype}")


def randn_like(params: Sequence[Tensor], generator: torch.Generator | None) -> list[Tensor]:
    """Standard normal tensors shaped like ``params`` drawn from ``generator``."""
    return [torch.randn(p.shape, dtype=p.dtype, device=p.device, generator=generator) for p in params]


def hvp(params: Sequence[Tensor], grads: Sequence[Tensor],
        generator: torch.Generator | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """``v ~ N(0, I)`` and ``h = H v`` by differentiating ``grads . v``.

    ``grads`` must have been computed with ``create_graph=True``.
    """
    if not all(g.requires_grad for g in grads):
        raise ValueError("hvp pairs need gradients computed with create_graph=True")
    vs = randn_like(params, generator)
    hs = torch.autograd.grad(grads, params, vs, allow_unused=True)
    hs = [torch.zeros_like(p) if h is None else h for p, h in zip(params, hs)]
    return vs, list(hs)


def finite_difference(params: Sequence[Tensor], closure: Callable[[], Tensor], grads: Sequence[Tensor],
                      generator: torch.Generator | None = None,
                      scale: float | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """The paper's pair: ``dtheta ~ N(0, scale^2)``, ``dg = g(theta + dtheta) - g(theta)``.

    ``closure`` must evaluate the loss on the same minibatch as ``grads``.  The
    parameters are restored bit-exactly afterwards (copied, not subtracted).
    """
    if scale is None:
        scale = default_fd_scale(params[0].dtype)
    vs = [scale * z for z in randn_like(params, generator)]
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, v in zip(params, vs):
                p.add_(v)
        with torch.enable_grad():
            loss = closure()
            g2 = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    hs = [(torch.zeros_like(p) if b is None else b) - a.detach() for p, a, b in zip(params, grads, g2)]
    return vs, hs


def whitening(params: Sequence[Tensor], grads: Sequence[Tensor],
              generator: torch.Generator | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """``(v, g)`` with ``v ~ N(0, I)``: P then fits ``(E[g g^T])^{-1/2}``; no second gradient."""
    return randn_like(params, generator), [g.detach() for g in grads]
