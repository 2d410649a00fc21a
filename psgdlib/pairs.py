"""Sources of the pairs ``(v, h)`` that criterion (3) is fitted on.

* ``hvp``: ``v ~ N(0, I)``, ``h = H v`` by double backward (exact Hessian-vector product).
* ``finite_difference``: the paper's way, ``dtheta ~ N(0, s^2)`` element-wise and
  ``dg = g(theta + dtheta) - g(theta)`` on the same minibatch.
* ``whitening``: ``(v, g)`` with ``v ~ N(0, I)``; then ``P`` fits ``E[g g^T]^{-1/2}``.

All functions take and return lists of tensors shaped like the parameters.
:func:`loss_and_grads` evaluates a closure in either style: PSGD's (return the loss, do not
differentiate) or torch's standard one (``zero_grad()``, ``loss.backward()``, return the loss).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["PAIR_SOURCES", "default_fd_scale", "loss_and_grads", "hvp", "finite_difference", "whitening",
           "randn_like"]

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


_BACKWARD_IN_HVP_CLOSURE = (
    "pairs='hvp' differentiates the loss twice itself, so its closure must only return the loss: "
    "write `def closure(): return loss_fn(model(x), y)`, with no zero_grad() and no backward() "
    "(this closure called backward(): it filled the .grad fields); PSGD fills .grad itself. "
    "To keep the standard torch closure, use pairs='finite_difference' (the paper's pairs) or "
    "pairs='whitening'")


def _checked_loss(loss: object, differentiated: bool) -> Tensor:
    """``loss`` if it is a one-element tensor (attached to the graph unless ``differentiated``)."""
    if not (torch.is_tensor(loss) and loss.numel() == 1):
        raise ValueError("the closure must return the scalar loss as a tensor attached to the graph, "
                         f"got {type(loss).__name__}"
                         + (f" of shape {tuple(loss.shape)}" if torch.is_tensor(loss) else ""))
    if not (differentiated or loss.requires_grad):
        raise ValueError("the closure must return the scalar loss as a tensor attached to the graph "
                         "(it returned a tensor that does not require grad: was it detached, or "
                         "computed under torch.no_grad()?)")
    return loss


def loss_and_grads(closure: Callable[[], Tensor], params: Sequence[Tensor], create_graph: bool = False,
                   allow_backward: bool = True) -> tuple[Tensor, list[Tensor]]:
    """Evaluate ``closure`` and the gradient of its loss with respect to ``params``.

    A closure that only returns the loss is differentiated here (``create_graph`` keeps the
    graph for :func:`hvp`).  A standard torch closure (``zero_grad()``, ``backward()``,
    ``return loss``) is recognised by gradients appearing in the ``.grad`` fields, cleared
    for the call; its gradients are taken from there, which needs ``allow_backward`` (a
    ValueError saying what to write otherwise).  The ``.grad`` fields are restored afterwards;
    the gradient of a parameter the loss does not use is zeros.  Returns ``(loss, grads)``.
    """
    saved = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        with torch.enable_grad():
            loss = closure()
            filled = [p.grad for p in params]
            if any(g is not None for g in filled):
                if not allow_backward:
                    raise ValueError(_BACKWARD_IN_HVP_CLOSURE)
                _checked_loss(loss, differentiated=True)
                grads = list(filled)
            else:
                grads = _autograd_grads(_checked_loss(loss, differentiated=False), params, create_graph)
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    return loss, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _autograd_grads(loss: Tensor, params: Sequence[Tensor], create_graph: bool) -> list[Tensor | None]:
    """``d loss / d params`` (None for an unused parameter); a clear error for a freed graph."""
    try:
        return list(torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True))
    except RuntimeError as e:
        if "second time" not in str(e):
            raise
        raise ValueError("the closure's graph was already freed (did it call backward() on a loss that "
                         "does not involve the optimized parameters?): return the loss and let PSGD "
                         "differentiate it") from e


def hvp(params: Sequence[Tensor], grads: Sequence[Tensor], generator: torch.Generator | None = None,
        allow_constant: bool = False) -> tuple[list[Tensor], list[Tensor]]:
    """``v ~ N(0, I)`` and ``h = H v`` by differentiating ``grads . v``.

    ``grads`` must have been computed with ``create_graph=True``.  A gradient that then
    does not require grad is constant in the parameters (the loss is linear in, or does not
    use, that parameter): its rows and columns of ``H`` are zero, so it adds nothing to any
    ``h``, and its own ``h`` is zeros.  If *no* gradient requires grad a ValueError is raised
    (``create_graph`` was probably forgotten) unless ``allow_constant`` (then every ``h`` is zeros).
    """
    varying = [i for i, g in enumerate(grads) if g.requires_grad]
    if not varying and not allow_constant:
        raise ValueError("hvp pairs need gradients computed with create_graph=True "
                         "(none of the gradients requires grad)")
    vs = randn_like(params, generator)
    hs: list[Tensor | None] = [None] * len(params)
    if varying:
        hs = list(torch.autograd.grad([grads[i] for i in varying], params, [vs[i] for i in varying],
                                      allow_unused=True))
    return vs, [torch.zeros_like(p) if h is None else h for p, h in zip(params, hs)]


def finite_difference(params: Sequence[Tensor], closure: Callable[[], Tensor], grads: Sequence[Tensor],
                      generator: torch.Generator | None = None,
                      scale: float | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """The paper's pair: ``dtheta ~ N(0, scale^2)``, ``dg = g(theta + dtheta) - g(theta)``.

    ``closure`` must evaluate the loss on the same minibatch as ``grads``, in either style of
    :func:`loss_and_grads`.  The parameters are restored bit-exactly afterwards (copied, not
    subtracted), and so are their ``.grad`` fields.
    """
    if scale is None:
        scale = default_fd_scale(params[0].dtype)
    vs = [z.mul_(scale) for z in randn_like(params, generator)]
    with torch.no_grad():
        saved = [p.clone() for p in params]
    try:
        with torch.no_grad():
            for p, v in zip(params, vs):
                p.add_(v)
        _, g2 = loss_and_grads(closure, params)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    hs = [b - (a.detach() if a.requires_grad else a) for a, b in zip(grads, g2)]
    return vs, hs


def whitening(params: Sequence[Tensor], grads: Sequence[Tensor],
              generator: torch.Generator | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """``(v, g)`` with ``v ~ N(0, I)``: P then fits ``(E[g g^T])^{-1/2}``; no second gradient."""
    return randn_like(params, generator), [g.detach() for g in grads]
