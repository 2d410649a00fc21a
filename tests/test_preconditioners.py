"""Criterion (3) and its minimizers: the preconditioners converge to the right P."""
import math

import pytest
import torch

from psgdlib.preconditioners import Dense, Diag, Kron

F64 = torch.float64


def spd(n, cond, gen, indefinite=False):
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    eig = torch.logspace(0, math.log10(cond), n, dtype=F64)
    if indefinite:
        eig = eig * torch.tensor([(-1) ** i for i in range(n)], dtype=F64)
    return U @ torch.diag(eig) @ U.T, U, eig


def test_dense_converges_to_inverse_hessian():
    gen = torch.Generator().manual_seed(0)
    H, _, _ = spd(8, 50.0, gen)
    p = Dense(8, dtype=F64)
    for _ in range(20_000):
        v = torch.randn(8, generator=gen, dtype=F64)
        p.update(v, H @ v, lr=0.01)
    for _ in range(5):
        x = torch.randn(8, generator=gen, dtype=F64)
        assert (p.P @ H @ x - x).norm() / x.norm() < 0.05
    # also in operator norm, and the triangular factor keeps a positive diagonal
    assert torch.linalg.matrix_norm(p.P @ H - torch.eye(8, dtype=F64), 2) < 0.1
    assert (p.Q.diagonal() > 0).all() and torch.equal(p.Q, torch.triu(p.Q))
    assert p.num_skipped == 0 and p.num_updates == 20_000


def test_dense_untrained_is_far_from_inverse_hessian():
    """The convergence test above can fail: identity is nowhere near H^-1."""
    gen = torch.Generator().manual_seed(0)
    H, _, _ = spd(8, 50.0, gen)
    p = Dense(8, dtype=F64)
    x = torch.randn(8, generator=gen, dtype=F64)
    assert (p.P @ H @ x - x).norm() / x.norm() > 1.0


def test_dense_indefinite_hessian_gives_abs_inverse():
    """Sec. II.A: for indefinite H, the positive definite solution is |H|^-1."""
    gen = torch.Generator().manual_seed(1)
    H, U, eig = spd(6, 10.0, gen, indefinite=True)
    absHinv = U @ torch.diag(1 / eig.abs()) @ U.T
    p = Dense(6, dtype=F64)
    for _ in range(20_000):
        v = torch.randn(6, generator=gen, dtype=F64)
        p.update(v, H @ v, lr=0.01)
    rel = torch.linalg.matrix_norm(p.P - absHinv) / torch.linalg.matrix_norm(absHinv)
    assert rel < 0.06
    # and P is not H^-1 (which is not positive definite)
    assert torch.linalg.matrix_norm(p.P - torch.linalg.inv(H)) / torch.linalg.matrix_norm(absHinv) > 0.5
    assert torch.linalg.eigvalsh(p.P).min() > 0


def test_kron_fits_both_factors():
    """Pairs H = A V B: the Kron preconditioner gives P1 A X B P2 = X."""
    gen = torch.Generator().manual_seed(2)
    A, _, _ = spd(5, 10.0, gen)
    B, _, _ = spd(4, 10.0, gen)
    p = Kron(5, 4, dtype=F64)
    for _ in range(20_000):
        V = torch.randn(5, 4, generator=gen, dtype=F64)
        p.update(V, A @ V @ B, lr=0.01)
    for _ in range(3):
        X = torch.randn(5, 4, generator=gen, dtype=F64)
        assert (p.P1 @ A @ X @ B @ p.P2 - X).norm() / X.norm() < 0.05
    assert (p.Q1.diagonal() > 0).all() and (p.Q2.diagonal() > 0).all()


def test_kron_is_eq5_kronecker_product():
    """precondition and criterion equal those of the dense P = P2 (x) P1 on vec(G)."""
    gen = torch.Generator().manual_seed(3)
    p = Kron(3, 4, dtype=F64)
    p.Q1 = torch.triu(torch.randn(3, 3, generator=gen, dtype=F64)) + 3 * torch.eye(3, dtype=F64)
    p.Q2 = torch.triu(torch.randn(4, 4, generator=gen, dtype=F64)) + 3 * torch.eye(4, dtype=F64)
    P = torch.kron(p.P2, p.P1)
    vec = lambda M: M.T.reshape(-1)  # column-major vec
    G, V, Hm = (torch.randn(3, 4, generator=gen, dtype=F64) for _ in range(3))
    torch.testing.assert_close(vec(p.precondition(G)), P @ vec(G))
    dense = vec(Hm) @ P @ vec(Hm) + vec(V) @ torch.linalg.solve(P, vec(V))
    torch.testing.assert_close(p.criterion(V, Hm), dense)


def test_dense_criterion_value_and_minimum():
    gen = torch.Generator().manual_seed(4)
    p = Dense(5, dtype=F64)
    p.Q = torch.triu(torch.randn(5, 5, generator=gen, dtype=F64)) + 3 * torch.eye(5, dtype=F64)
    v, h = torch.randn(5, generator=gen, dtype=F64), torch.randn(5, generator=gen, dtype=F64)
    P = p.P
    torch.testing.assert_close(p.criterion(v, h), h @ P @ h + v @ torch.linalg.solve(P, v))


def test_diag_converges_to_ratio_of_scales():
    gen = torch.Generator().manual_seed(5)
    d = torch.tensor([0.01, 0.1, 1.0, 10.0, 100.0], dtype=F64)
    p = Diag(5, dtype=F64)
    for _ in range(10_000):
        v = torch.randn(5, generator=gen, dtype=F64)
        p.update(v, d * v, lr=0.01)
    rel = (p.P.diagonal() * d - 1).abs().max()
    assert rel < 0.1


@pytest.mark.parametrize("make,shape", [(lambda: Dense(4), (4,)), (lambda: Kron(3, 2), (3, 2)),
                                        (lambda: Diag(4), (4,))])
def test_nonfinite_pairs_are_skipped_and_counted(make, shape):
    p = make()
    before = {k: v.clone() for k, v in p.state_dict().items() if torch.is_tensor(v)}
    v = torch.ones(shape)
    for bad in (float("nan"), float("inf")):
        h = torch.ones(shape)
        h.view(-1)[0] = bad
        p.update(v, h)
        p.update(h, v)
    assert p.num_skipped == 4
    for k, t in p.state_dict().items():
        if k not in ("skipped",) and torch.is_tensor(t):
            assert torch.equal(t, before[k]), k
    p.update(v, 2 * v)  # a finite pair still moves Q
    assert p.num_skipped == 4
    assert any(not torch.equal(t, before[k]) for k, t in p.state_dict().items()
               if torch.is_tensor(t) and k != "skipped")


def test_shape_and_argument_errors():
    with pytest.raises(ValueError, match="shape"):
        Dense(4).update(torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="shape"):
        Kron(3, 2).precondition(torch.ones(2, 3))
    with pytest.raises(ValueError, match="shape"):
        Diag(3).criterion(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="0 < lr < 1"):
        Dense(2).update(torch.ones(2), torch.ones(2), lr=1.5)
    with pytest.raises(ValueError, match="0 < lr < 1"):
        Kron(2, 2).update(torch.ones(2, 2), torch.ones(2, 2), lr=0.0)
    with pytest.raises(ValueError, match="n >= 1"):
        Dense(0)
    with pytest.raises(ValueError, match="init_scale"):
        Diag(3, init_scale=-1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows(dtype):
    p = Kron(3, 2, dtype=dtype)
    p.update(torch.randn(3, 2, dtype=dtype), torch.randn(3, 2, dtype=dtype))
    assert p.Q1.dtype == dtype and p.precondition(torch.randn(3, 2, dtype=dtype)).dtype == dtype


def test_state_dict_round_trip():
    gen = torch.Generator().manual_seed(6)
    p = Kron(3, 2, dtype=F64)
    for _ in range(10):
        p.update(torch.randn(3, 2, generator=gen, dtype=F64), torch.randn(3, 2, generator=gen, dtype=F64))
    q = Kron(3, 2, dtype=F64)
    q.load_state_dict({k: (v.clone() if torch.is_tensor(v) else v) for k, v in p.state_dict().items()})
    assert torch.equal(q.Q1, p.Q1) and torch.equal(q.Q2, p.Q2) and q.num_updates == 10
    with pytest.raises(ValueError, match="shape"):
        Kron(2, 2).load_state_dict(p.state_dict())


@pytest.mark.parametrize("n,block", [(9, 128), (37, 8), (40, 8)])
def test_relative_gradient_step_is_exact(n, block):
    """The blocked O(n^2) evaluation of Q - lr triu(a a^T - b b^T) Q equals the explicit
    product, for column-major and row-major Q and blocks that do or do not divide n."""
    from psgdlib.preconditioners import _relgrad_step_
    gen = torch.Generator().manual_seed(7)
    Q = torch.triu(torch.randn(n, n, generator=gen, dtype=F64))
    a, b = torch.randn(n, generator=gen, dtype=F64), torch.randn(n, generator=gen, dtype=F64)
    explicit = Q - 0.3 * torch.triu(torch.outer(a, a) - torch.outer(b, b)) @ Q
    for layout in (Q.T.contiguous().T, Q.clone()):
        _relgrad_step_(layout, a, b, 0.3, block=block)
        torch.testing.assert_close(layout, explicit)
        assert torch.equal(layout, torch.triu(layout))


@pytest.mark.parametrize("layout", ["column-major (default)", "row-major"])
def test_dense_update_is_the_normalized_relative_gradient_step(layout):
    """One update equals Q - lr / max|G| * G Q with G = triu(a a^T - b b^T), a = Q h,
    b = Q^{-T} v, written out with dense matrices, whatever Q's memory layout."""
    gen = torch.Generator().manual_seed(8)
    n = 11
    p = Dense(n, dtype=F64)
    with torch.no_grad():
        p.Q.add_(0.3 * torch.triu(torch.randn(n, n, generator=gen, dtype=F64)))
    if layout == "row-major":
        p.Q = p.Q.contiguous()
    for _ in range(3):
        v, h = torch.randn(n, generator=gen, dtype=F64), torch.randn(n, generator=gen, dtype=F64)
        Q0 = p.Q.clone()
        a = Q0 @ h
        b = torch.linalg.solve(Q0.T, v)
        G = torch.triu(torch.outer(a, a) - torch.outer(b, b))
        expected = Q0 - 0.05 / G.abs().max() * G @ Q0
        p.update(v, h, lr=0.05)
        torch.testing.assert_close(p.Q, expected)
        assert torch.equal(p.Q, torch.triu(p.Q))


@pytest.mark.parametrize("make,shape", [(lambda: Dense(4, dtype=F64), (4,)),
                                        (lambda: Kron(3, 2, dtype=F64), (3, 2)),
                                        (lambda: Diag(4, dtype=F64), (4,))])
def test_accept_mask_rejects_a_finite_pair_and_true_changes_nothing(make, shape):
    """``update(..., accept=False)`` leaves Q bit-identical and counts the pair;
    ``accept=True`` gives exactly the update without a mask."""
    gen = torch.Generator().manual_seed(9)
    v, h = torch.randn(shape, generator=gen, dtype=F64), torch.randn(shape, generator=gen, dtype=F64)
    plain, masked = make(), make()
    plain.update(v, h)
    masked.update(v, h, accept=torch.tensor(True))
    for k, t in plain._tensors().items():
        assert torch.equal(t, masked._tensors()[k]), k
    before = {k: t.clone() for k, t in masked._tensors().items()}
    masked.update(v, h, accept=torch.tensor(False))
    assert masked.num_skipped == 1 and masked.num_updates == 2
    for k, t in masked._tensors().items():
        assert torch.equal(t, before[k]), k


def _kron_update_reference(Q1, Q2, v, h, lr):
    """Kron.update as first written (commit 0b42df2), kept as the reference for the faster one:
    left solve with Q1^T, separate products for a a^T and b b^T, the step applied after grad @ Q."""
    a = Q1 @ h @ Q2.T
    b = torch.linalg.solve_triangular(Q1.T, v, upper=False)
    b = torch.linalg.solve_triangular(Q2, b, upper=True, left=False)
    grad1 = torch.triu(a @ a.T - b @ b.T)
    grad2 = torch.triu(a.T @ a - b.T @ b)
    g1max, g2max = grad1.abs().max(), grad2.abs().max()
    Q1n = Q1 - (lr / (g1max + 1e-30)) * (grad1 @ Q1)
    Q2n = Q2 - (lr / (g2max + 1e-30)) * (grad2 @ Q2)
    r = torch.sqrt(Q1n.diagonal().abs().max() / Q2n.diagonal().abs().max())
    return Q1n / r, Q2n * r


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 2e-6)])
@pytest.mark.parametrize("shape", [(7, 5), (1, 9), (30, 31), (6, 1)])
def test_kron_update_equals_the_reference_formula_to_rounding(shape, dtype, tol):
    """Along 200 updates on (3) with a Kronecker Hessian, each optimized step equals the
    reference step from the same factors to float rounding (relative to the largest entry).
    (Step by step: over many steps the normalized iteration amplifies any rounding
    difference, whichever formula makes it.)  The factors end far from identity."""
    m, n = shape
    gen = torch.Generator().manual_seed(0)
    A1, A2 = torch.randn(m, m, generator=gen, dtype=dtype), torch.randn(n, n, generator=gen, dtype=dtype)
    H1, H2 = A1 @ A1.T + 0.1 * torch.eye(m, dtype=dtype), A2 @ A2.T + 0.1 * torch.eye(n, dtype=dtype)
    k = Kron(m, n, dtype=dtype)
    worst = 0.0
    for _ in range(200):
        v = torch.randn(m, n, generator=gen, dtype=dtype)
        h = H1 @ v @ H2
        R1, R2 = _kron_update_reference(k.Q1.clone(), k.Q2.clone(), v, h, 0.05)
        k.update(v, h, lr=0.05)
        for mine, ref in ((k.Q1, R1), (k.Q2, R2)):
            worst = max(worst, float((mine - ref).abs().max() / ref.abs().max()))
    assert worst <= tol
    P = torch.kron(k.P2, k.P1)     # P of eq. (5) acting on vec(V) (column-major vec)
    assert (P - torch.eye(m * n, dtype=dtype)).abs().max() > 0.5
    assert k.num_updates == 200 and k.num_skipped == 0
