"""The LSTM baseline: the gate equations by hand, init, exact second derivatives, and that
the training loop, the optimizers and the runner accept it."""
import pytest
import torch

from psgdlib import PSGD
from psgdlib import experiments as ex
from psgdlib.models import LSTM
from psgdlib.train import TrainConfig, build_model, train
from psgdlib import tasks


def _by_hand(m: LSTM, u: torch.Tensor) -> torch.Tensor:
    """The module docstring's equations written out, one step at a time."""
    L, B, _ = u.shape
    x = u.new_zeros(B, m.hidden_dim)
    c = u.new_zeros(B, m.hidden_dim)
    ys = []
    for t in range(L):
        z = torch.cat([u[t], x, u.new_ones(B, 1)], 1) @ m.W1.T
        i, f, g, o = z.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        x = torch.sigmoid(o) * torch.tanh(c)
        ys.append(torch.cat([x, u.new_ones(B, 1)], 1) @ m.output_matrix().T)
    return torch.stack(ys)


@pytest.mark.parametrize("zero_sum", [False, True])
def test_lstm_equals_the_gate_equations(zero_sum):
    gen = torch.Generator().manual_seed(0)
    m = LSTM(3, 5, 4, zero_sum_outputs=zero_sum, dtype=torch.float64, generator=gen)
    assert m.W1.shape == (4 * 5, 3 + 5 + 1)
    assert m.W2.shape == ((3 if zero_sum else 4), 5 + 1)
    with torch.no_grad():
        m.W1.add_(0.3 * torch.randn(m.W1.shape, generator=gen, dtype=torch.float64))
    u = torch.randn(7, 2, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(m(u), _by_hand(m, u))


def test_lstm_init_orthogonal_gate_blocks_and_forget_bias():
    m = LSTM(2, 16, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    W = m.W1.detach()
    for k in range(4):
        Wr = W[16 * k:16 * (k + 1), 2:18]
        torch.testing.assert_close(Wr @ Wr.T, torch.eye(16, dtype=torch.float64))
    bias = W[:, -1]
    assert torch.all(bias[16:32] == 1) and torch.all(bias[:16] == 0) and torch.all(bias[32:] == 0)
    assert not torch.equal(W[:16, 2:18], W[16:32, 2:18])  # each gate its own rotation


def test_lstm_second_derivatives_are_exact():
    """gradgradcheck: Hessian-vector products (``pairs="hvp"``) are exact."""
    gen = torch.Generator().manual_seed(2)
    m = LSTM(2, 3, 2, dtype=torch.float64, generator=gen)
    u = torch.randn(4, 2, 2, generator=gen, dtype=torch.float64)
    params = (m.W1.detach().clone().requires_grad_(), m.W2.detach().clone().requires_grad_())

    def f(W1, W2):
        return torch.func.functional_call(m, {"W1": W1, "W2": W2}, (u,))
    assert torch.autograd.gradgradcheck(f, params)


def test_lstm_rejects_bad_inputs():
    m = LSTM(2, 4, 1)
    with pytest.raises(ValueError, match="time-major"):
        m(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="hidden_dim"):
        LSTM(2, 0, 1)
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(problem="xor", T=30, model="gru").resolved()
    with pytest.raises(ValueError, match="unknown model"):
        build_model(tasks.get("xor", 30), 4, 0, model="gru")


def test_psgd_kron_trains_the_lstm_with_hvp_pairs():
    """Kron (eq. (5)) on W1 (4Nx, Nu+Nx+1), W2 (Ny, Nx+1): lowers the addition loss."""
    torch.manual_seed(0)
    task = tasks.get("addition", 10)
    m = build_model(task, 8, seed=0, dtype=torch.float64, model="lstm")
    opt = PSGD(m.parameters(), lr=0.02, preconditioner="kron", pairs="hvp", seed=0)
    gen = torch.Generator().manual_seed(0)
    test = task.sample(500, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    with torch.no_grad():
        before = float(task.loss(m(test.inputs), test))
    for _ in range(150):
        batch = task.sample(50, generator=gen, dtype=torch.float64)
        opt.step(lambda: task.loss(m(batch.inputs), batch))
    with torch.no_grad():
        after = float(task.loss(m(test.inputs), test))
    assert after < 0.5 * before


def test_runner_names_and_tables_keep_lstm_runs_apart(tmp_path):
    cfgs = ex.grid(["addition"], [10], ["adam"], [0], hidden=6, iterations=60, eval_every=30,
                   n_test=200, model="lstm")
    rnn = ex.grid(["addition"], [10], ["adam"], [0], hidden=6, iterations=60, eval_every=30, n_test=200)
    assert ex.run_name(cfgs[0]) != ex.run_name(rnn[0]) and "_lstm_" in ex.run_name(cfgs[0])
    assert "_lstm" not in ex.run_name(rnn[0])
    ex.run_grid(cfgs + rnn, tmp_path, progress=False, command="test")
    df = ex.load_results(tmp_path)
    assert sorted(df["model"]) == ["lstm", "rnn"]
    assert ex.table1(df, optimizer="adam", model="lstm").loc["addition", "T=10"].startswith("1/1")
    assert ex.table1(df, optimizer="adam").loc["addition", "T=10"].startswith("1/1")
    r = train(TrainConfig(problem="addition", T=10, optimizer="sgd", hidden=6, iterations=20,
                          eval_every=10, n_test=100, model="lstm"), progress=False)
    assert r["config"]["model"] == "lstm" and r["iterations_run"] == 20
