"""The PSGD optimizer: update (4) beats SGD on ill-conditioned problems, resumes bit-exactly."""
import math

import pytest
import torch

from psgdlib import PSGD

F64 = torch.float64


def quadratic(n=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    H = U @ torch.diag(torch.logspace(-4, 0, n, dtype=F64)) @ U.T  # condition number 1e4
    xs = torch.randn(n, generator=gen, dtype=F64)
    x0 = torch.randn(n, generator=gen, dtype=F64)
    return H, xs, x0


def run_quadratic(make_opt, steps, H, xs, x0, closure_style="psgd"):
    x = torch.nn.Parameter(x0.clone())
    opt = make_opt([x])

    def loss():
        d = x - xs
        return 0.5 * d @ (H @ d)

    for _ in range(steps):
        if closure_style == "psgd":
            opt.step(loss)
        else:
            opt.zero_grad()
            loss().backward()
            opt.step()
    return ((x.detach() - xs).norm() / (x0 - xs).norm()).item()


def test_psgd_dense_beats_best_sgd_on_condition_1e4():
    H, xs, x0 = quadratic()
    psgd = run_quadratic(lambda p: PSGD(p, lr=0.5, preconditioner="dense", pairs="hvp", seed=0),
                         5000, H, xs, x0)
    assert psgd < 1e-3
    # SGD at its best stable step size (the largest stable one is 2 / lambda_max = 2)
    best_sgd = min(run_quadratic(lambda p: torch.optim.SGD(p, lr=lr), 5000, H, xs, x0, "sgd")
                   for lr in (0.5, 1.0, 1.5, 1.9))
    assert best_sgd > 1e-2


@pytest.mark.parametrize("preconditioner", ["kron", "diag", "dense"])
@pytest.mark.parametrize("pairs", ["hvp", "finite_difference"])
def test_every_variant_beats_sgd_on_a_badly_scaled_matrix_problem(preconditioner, pairs):
    """Least squares ||A W B - C||^2 with badly scaled A, B: a Kronecker-structured Hessian."""
    gen = torch.Generator().manual_seed(1)
    A = torch.diag(torch.logspace(-1, 0, 6, dtype=F64))
    B = torch.diag(torch.logspace(0, -1, 5, dtype=F64))
    C = torch.randn(6, 5, generator=gen, dtype=F64)
    Wstar = torch.linalg.solve(A, C) @ torch.linalg.inv(B)

    def fit(opt_factory, steps, closure_style):
        W = torch.nn.Parameter(torch.zeros(6, 5, dtype=F64))
        opt = opt_factory([W])
        loss = lambda: 0.5 * ((A @ W @ B - C) ** 2).sum()
        for _ in range(steps):
            if closure_style:
                opt.step(loss)
            else:
                opt.zero_grad()
                loss().backward()
                opt.step()
        return ((W.detach() - Wstar).norm() / Wstar.norm()).item()

    err_psgd = fit(lambda p: PSGD(p, lr=0.5, preconditioner=preconditioner, pairs=pairs, seed=0), 3000, True)
    err_sgd = fit(lambda p: torch.optim.SGD(p, lr=1.0), 3000, False)  # lr=1: near the stable limit 2
    assert err_psgd < 1e-3
    assert err_sgd > 0.1


def test_whitening_pairs_fit_inverse_sqrt_gradient_covariance():
    gen = torch.Generator().manual_seed(2)
    n = 4
    L = torch.tril(torch.randn(n, n, generator=gen, dtype=F64)) + 2 * torch.eye(n, dtype=F64)
    C = L @ L.T
    w = torch.nn.Parameter(torch.zeros(n, dtype=F64))
    opt = PSGD([w], lr=1e-12, preconditioner="dense", pairs="whitening", seed=0)
    for _ in range(20_000):
        w.grad = L @ torch.randn(n, generator=gen, dtype=F64)  # g ~ N(0, C)
        opt.step()
    P = opt.preconditioners()[0].P
    evals, evecs = torch.linalg.eigh(C)
    target = evecs @ torch.diag(evals ** -0.5) @ evecs.T
    assert torch.linalg.matrix_norm(P - target) / torch.linalg.matrix_norm(target) < 0.1


def _tiny_problem(seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).to(dtype)
    X = torch.randn(32, 4, generator=gen, dtype=dtype)
    y = torch.randn(32, 2, generator=gen, dtype=dtype)
    return model, X, y


@pytest.mark.parametrize("preconditioner", ["kron", "dense", "diag"])
@pytest.mark.parametrize("pairs", ["hvp", "finite_difference", "whitening"])
def test_state_dict_round_trip_is_bit_identical(preconditioner, pairs, tmp_path):
    kw = dict(lr=0.05, preconditioner=preconditioner, pairs=pairs, update_prob=0.7, momentum=0.5,
              clip_norm=10.0)

    def closure_for(model, X, y):
        return lambda: ((model(X) - y) ** 2).mean()

    torch.manual_seed(123)
    model, X, y = _tiny_problem()
    opt = PSGD(model.parameters(), **kw)
    for _ in range(5):
        opt.step(closure_for(model, X, y))
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    for _ in range(7):
        opt.step(closure_for(model, X, y))
    final_a = [p.detach().clone() for p in model.parameters()]

    torch.manual_seed(999)  # a different global RNG state must not matter
    model2, X, y = _tiny_problem(seed=0)
    opt2 = PSGD(model2.parameters(), **kw)
    ck = torch.load(tmp_path / "ckpt.pt")  # weights_only: the state holds tensors and ints only
    model2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["opt"])
    for _ in range(7):
        opt2.step(closure_for(model2, X, y))
    for a, b in zip(final_a, model2.parameters()):
        assert torch.equal(a, b.detach())


def test_kron_layout_and_fallbacks():
    w = torch.nn.Parameter(torch.zeros(3, 4))
    b = torch.nn.Parameter(torch.zeros(3))
    big = torch.nn.Parameter(torch.zeros(2, 50))
    conv = torch.nn.Parameter(torch.zeros(2, 3, 2, 2))
    opt = PSGD([w, b, big, conv], max_kron_dim=20, seed=0)
    loss = lambda: (w ** 2).sum() + (b ** 2).sum() + (big ** 2).sum() + (conv ** 2).sum() + 1.0
    opt.step(loss)
    kinds = [type(pc).__name__ for pc in opt.preconditioners()]
    assert kinds == ["Kron", "Dense", "Diag", "Kron"]
    assert (opt.preconditioners()[3].m, opt.preconditioners()[3].n) == (2, 12)


def test_update_every_and_clipping_and_momentum():
    w = torch.nn.Parameter(torch.ones(3, 3))
    opt = PSGD([w], lr=0.1, update_every=3, seed=0)
    for _ in range(7):
        opt.step(lambda: (w ** 2).sum())
    assert opt.preconditioners()[0].num_updates == 3  # steps 0, 3, 6

    w = torch.nn.Parameter(torch.full((2, 2), 100.0))
    opt = PSGD([w], lr=1.0, clip_norm=0.5, seed=0)
    before = w.detach().clone()
    opt.step(lambda: (w ** 2).sum())
    assert (w.detach() - before).norm().item() == pytest.approx(0.5, rel=1e-5)

    # momentum: the second step is longer than the first on a linear loss with fixed P
    w = torch.nn.Parameter(torch.zeros(2))
    opt = PSGD([w], lr=0.1, momentum=0.9, pairs="whitening", update_every=10**6, seed=0)
    w.grad = torch.ones(2)
    opt.step()
    s1 = w.detach().clone()
    w.grad = torch.ones(2)
    opt.step()
    assert (w.detach() - s1).norm().item() == pytest.approx(1.9 * s1.norm().item(), rel=1e-6)


def test_nonfinite_pairs_are_skipped_by_the_optimizer():
    w = torch.nn.Parameter(torch.ones(2, 2))
    opt = PSGD([w], lr=0.01, pairs="whitening", seed=0)
    w.grad = torch.tensor([[float("nan"), 1.0], [1.0, 1.0]])
    opt.step()
    assert opt.num_skipped == 1
    Q1 = opt.preconditioners()[0].Q1
    assert torch.isfinite(Q1).all()


def test_bad_arguments_raise_clear_errors():
    w = torch.nn.Parameter(torch.ones(2, 2))
    with pytest.raises(ValueError, match="unknown preconditioner"):
        PSGD([w], preconditioner="full")
    with pytest.raises(ValueError, match="unknown pair source"):
        PSGD([w], pairs="secant")
    with pytest.raises(ValueError, match="lr must be a positive"):
        PSGD([w], lr=0)
    with pytest.raises(ValueError, match="lr must be a positive"):
        PSGD([w], lr=-0.1)
    with pytest.raises(ValueError, match="precond_lr"):
        PSGD([w], precond_lr=1.0)
    with pytest.raises(ValueError, match="update_every or update_prob"):
        PSGD([w], update_every=2, update_prob=0.5)
    with pytest.raises(ValueError, match="needs a closure"):
        PSGD([w], pairs="hvp").step()
    with pytest.raises(ValueError, match="needs a closure"):
        PSGD([w], pairs="finite_difference").step()
    with pytest.raises(ValueError, match="closure must return the scalar loss"):
        PSGD([w]).step(lambda: 1.0)
    opt = PSGD([w], pairs="hvp")
    with pytest.raises(ValueError, match="pairs="):
        PSGD([w], pairs="whitening").load_state_dict(opt.state_dict())
