"""Pair sources: finite differences (the paper's way) agree with exact Hessian-vector products."""
import pytest
import torch

from psgdlib import pairs
from psgdlib.models import RNN


def _setup(dtype, seed=0, T=40, B=16, Nx=20):
    gen = torch.Generator().manual_seed(seed)
    model = RNN(2, Nx, 1, dtype=dtype, generator=gen)
    u = torch.rand(T, B, 2, generator=gen, dtype=dtype)
    t = torch.rand(B, generator=gen, dtype=dtype)
    closure = lambda: ((model(u)[-1, :, 0] - t) ** 2).mean()
    return model, closure


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-5), (torch.float32, 2e-2)])
def test_finite_difference_agrees_with_hvp(dtype, tol):
    model, closure = _setup(dtype)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    g = torch.autograd.grad(closure(), params, create_graph=True)
    v, h_exact = pairs.hvp(params, g, torch.Generator().manual_seed(1))
    # the same dtheta direction, scaled as the finite-difference source scales it
    v_fd, h_fd = pairs.finite_difference(params, closure, [x.detach() for x in g],
                                         torch.Generator().manual_seed(1))
    s = pairs.default_fd_scale(dtype)
    torch.testing.assert_close(_flat(v_fd), s * _flat(v))
    err = (_flat(h_fd) / s - _flat(h_exact)).norm() / _flat(h_exact).norm()
    assert err < tol
    # parameters restored bit-exactly
    for a, b in zip(before, params):
        assert torch.equal(a, b.detach())


def test_finite_difference_scale_matters():
    """Sanity: a far too large perturbation does not match the Hessian (the test above can fail)."""
    model, closure = _setup(torch.float64)
    params = list(model.parameters())
    g = torch.autograd.grad(closure(), params, create_graph=True)
    v, h_exact = pairs.hvp(params, g, torch.Generator().manual_seed(1))
    _, h_fd = pairs.finite_difference(params, closure, [x.detach() for x in g],
                                      torch.Generator().manual_seed(1), scale=0.5)
    err = (_flat(h_fd) / 0.5 - _flat(h_exact)).norm() / _flat(h_exact).norm()
    assert err > 0.05


def test_hvp_is_symmetric_bilinear_form():
    """u^T H v == v^T H u for the exact Hessian-vector product (float64)."""
    model, closure = _setup(torch.float64)
    params = list(model.parameters())
    g = torch.autograd.grad(closure(), params, create_graph=True)
    gen_u, gen_v = torch.Generator().manual_seed(2), torch.Generator().manual_seed(3)
    v = pairs.randn_like(params, gen_v)
    u = pairs.randn_like(params, gen_u)
    hv = torch.autograd.grad(g, params, v, retain_graph=True)
    _, hu = pairs.hvp(params, g, torch.Generator().manual_seed(2))  # same draw as u
    torch.testing.assert_close(_flat(u) @ _flat(hv), _flat(v) @ _flat(hu))


def test_hvp_requires_graph_and_fd_scale_dtype():
    model, closure = _setup(torch.float64)
    params = list(model.parameters())
    g = torch.autograd.grad(closure(), params)
    with pytest.raises(ValueError, match="create_graph"):
        pairs.hvp(params, g)
    assert pairs.default_fd_scale(torch.float64) == 2.0 ** -26  # sqrt(eps), eps = 2^-52 (paper)
    with pytest.raises(ValueError, match="floating-point"):
        pairs.default_fd_scale(torch.int64)


def test_hvp_refuses_a_standard_closure_and_says_what_to_write():
    """Under hvp (allow_backward=False) a closure that calls backward() is refused with the
    closure to write instead and the pair sources that take the standard one; the .grad
    fields are restored; the same closure is accepted where backward is allowed."""
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    w.grad = torch.full_like(w, 7.0)

    def torch_closure():
        w.grad = None
        loss = (w ** 3).sum()
        loss.backward()
        return loss

    with pytest.raises(ValueError) as e:
        pairs.loss_and_grads(torch_closure, [w], create_graph=True, allow_backward=False)
    msg = str(e.value)
    assert "write `def closure(): return loss_fn(model(x), y)`" in msg
    assert "no zero_grad() and no backward()" in msg and "pairs='finite_difference'" in msg
    assert torch.equal(w.grad, torch.full_like(w, 7.0))
    loss, (g,) = pairs.loss_and_grads(torch_closure, [w], allow_backward=True)
    assert torch.equal(g, 3 * w.detach() ** 2) and float(loss) == 9.0
    assert torch.equal(w.grad, torch.full_like(w, 7.0))
