"""The RNN of eq. (1): shapes, initialisation, exact gradients, fused == loop."""
import pytest
import torch

from psgdlib.models import RNN


def test_shapes_and_eq1_by_hand():
    gen = torch.Generator().manual_seed(0)
    m = RNN(3, 5, 2, dtype=torch.float64, generator=gen)
    assert m.W1.shape == (5, 3 + 5 + 1) and m.W2.shape == (2, 5 + 1)
    with torch.no_grad():
        m.W1[:, -1] = torch.randn(5, generator=gen, dtype=torch.float64)
        m.W2[:, -1] = torch.randn(2, generator=gen, dtype=torch.float64)
    u = torch.randn(7, 4, 3, generator=gen, dtype=torch.float64)
    y = m(u)
    assert y.shape == (7, 4, 2)
    x = torch.zeros(4, 5, dtype=torch.float64)
    for t in range(7):  # eq. (1) written out
        x = torch.tanh(torch.cat([u[t], x, torch.ones(4, 1, dtype=torch.float64)], 1) @ m.W1.T)
        yt = torch.cat([x, torch.ones(4, 1, dtype=torch.float64)], 1) @ m.W2.T
        torch.testing.assert_close(y[t], yt)


def test_init_recurrent_block_orthogonal_biases_zero():
    m = RNN(4, 30, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    Wr = m.W1[:, 4:34].detach()
    torch.testing.assert_close(Wr @ Wr.T, torch.eye(30, dtype=torch.float64))
    assert torch.all(m.W1[:, -1] == 0) and torch.all(m.W2[:, -1] == 0)
    assert 0.05 < m.W1[:, :4].std() < 0.2  # small normal input weights (std 0.1)


@pytest.mark.parametrize("nonlinearity,impl", [("tanh", "fused"), ("relu", "fused"), ("tanh", "bptt")])
def test_fast_paths_equal_loop_including_hvp(nonlinearity, impl):
    gen = torch.Generator().manual_seed(2)
    a = RNN(2, 8, 1, nonlinearity=nonlinearity, impl=impl, dtype=torch.float64, generator=gen)
    b = RNN(2, 8, 1, nonlinearity=nonlinearity, impl="loop", dtype=torch.float64)
    b.load_state_dict(a.state_dict())
    u = torch.randn(12, 3, 2, generator=gen, dtype=torch.float64)
    v = [torch.randn_like(p) for p in a.parameters()]
    outs = []
    for m in (a, b):
        ps = list(m.parameters())
        y = m(u)
        g = torch.autograd.grad((y ** 2).sum(), ps, create_graph=True)
        h = torch.autograd.grad(g, ps, v)
        outs.append([y, *g, *h])
    for x, y in zip(*outs):
        torch.testing.assert_close(x, y)


def test_bptt_recurrence_gradcheck_and_gradgradcheck():
    from psgdlib.models.bptt import recurrence
    gen = torch.Generator().manual_seed(5)
    Z = torch.randn(6, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    Wr = (0.5 * torch.randn(4, 4, generator=gen, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(recurrence, (Z, Wr))
    assert torch.autograd.gradgradcheck(recurrence, (Z, Wr))


def test_default_impl():
    assert RNN(2, 3, 1).impl == "bptt" and RNN(2, 3, 1, nonlinearity="relu").impl == "fused"
    assert RNN(2, 3, 1, nonlinearity="sigmoid").impl == "loop"
    with pytest.raises(ValueError, match="bptt"):
        RNN(2, 3, 1, nonlinearity="relu", impl="bptt")


@pytest.mark.parametrize("impl", ["bptt", "fused", "loop"])
def test_float64_gradcheck(impl):
    m = RNN(2, 4, 2, dtype=torch.float64, impl=impl, generator=torch.Generator().manual_seed(3))
    u = torch.randn(5, 2, 2, dtype=torch.float64)
    W1, W2 = m.W1.detach().clone().requires_grad_(), m.W2.detach().clone().requires_grad_()

    def f(W1, W2):
        m.W1.data, m.W2.data = W1, W2
        return torch.func.functional_call(m, {"W1": W1, "W2": W2}, (u,))

    assert torch.autograd.gradcheck(f, (W1, W2))
    assert torch.autograd.gradgradcheck(f, (W1, W2))


def test_zero_sum_outputs():
    m = RNN(4, 6, 3, zero_sum_outputs=True, dtype=torch.float64)
    assert m.W2.shape == (2, 7)
    torch.testing.assert_close(m.output_matrix().sum(0), torch.zeros(7, dtype=torch.float64))
    y = m(torch.randn(5, 2, 4, dtype=torch.float64))
    torch.testing.assert_close(y.sum(-1), torch.zeros(5, 2, dtype=torch.float64))


def test_bad_input_raises():
    m = RNN(2, 4, 1)
    with pytest.raises(ValueError, match=r"time-major \(L, B, 2\)"):
        m(torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"time-major"):
        m(torch.zeros(5, 3, 4))
    with pytest.raises(ValueError, match="dtype"):
        m(torch.zeros(5, 3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(2, 4, 1, nonlinearity="gelu")
    with pytest.raises(ValueError, match="hidden_dim"):
        RNN(2, 0, 1)


@pytest.mark.parametrize("model", ["rnn", "lstm"])
def test_initial_weights_do_not_depend_on_dtype(model):
    """One seed gives the same starting weights in float32 and float64 (up to float32
    rounding), and float32 keeps the weights every stored run started from."""
    from psgdlib import tasks
    from psgdlib.train import build_model
    task = tasks.get("addition", 30)
    m32 = build_model(task, 50, seed=7, dtype=torch.float32, model=model)
    m64 = build_model(task, 50, seed=7, dtype=torch.float64, model=model)
    for a, b in zip(m32.parameters(), m64.parameters()):
        assert a.dtype == torch.float32 and b.dtype == torch.float64
        assert (a.detach().double() - b.detach()).abs().max().item() < 1e-6
    # float32 weights: an N(0, 0.1^2) draw of the seed's generator, unchanged by the fix
    w = torch.randn(m32.W1.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float32) * 0.1
    assert torch.equal(m32.W1.detach()[:, :2], w[:, :2])
