"""The benchmark scripts run, and what dispatch_floor counts is a property of the code:
the hand-written BPTT costs the same number of tensor ops per time step at every T."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import dispatch_floor  # noqa: E402


def _count(T: int) -> tuple[int, int]:
    step = dispatch_floor._setup(T, hidden=4, batch=2, problem="temporal_order_2bit")  # length exactly T
    step()
    with dispatch_floor._CountOps() as c:
        step()
    return c.n, c.kernels


def test_ops_per_iteration_grow_linearly_in_T():
    (n20, k20), (n40, k40), (n60, k60) = _count(20), _count(40), _count(60)
    assert 0 < k20 < n20 and 0 < k40 < n40           # views are counted but launch no kernel
    assert k40 - k20 == k60 - k40 > 0                 # a fixed number of kernels per time step
    assert n40 - n20 == n60 - n40
    # bptt.recurrence: two kernels per step forward (addmm, tanh) and two in BPTT (addmm, mul),
    # for each of the two gradients of a finite-difference pair
    assert (k40 - k20) / 20 == 8


def test_dispatch_floor_main_prints_the_model(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["dispatch_floor.py", "--T", "20", "--iters", "1", "--launch-us", "5"])
    dispatch_floor.main()
    out = capsys.readouterr().out
    assert "tensor ops per iteration" in out and "model, GPU at 5 us per op" in out


# ------------------------------------------------------------------ peers.py (issue 24)
import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import peers  # noqa: E402

_PSGDLIB_ROWS = ("sgd (clip 1)", "floor fd: 2 gradients", "floor hvp: gradient + Hv", "psgdlib fd", "psgdlib hvp")


def _rows(out: str) -> dict[str, list[str]]:
    return {line[:28].strip(): line[28:].split() for line in out.splitlines()
            if line[:28].strip() and not line.startswith(("T=", "addition", "commit", "psgdlib fd at",
                                                           "psgdlib hvp at", "skipped"))}


def test_peers_quick_without_the_peers_skips_them_with_a_message(capsys, monkeypatch):
    """A missing optional peer is left out with the install command; psgdlib still runs."""
    monkeypatch.setitem(sys.modules, "psgd_torch", None)      # import raises ImportError
    monkeypatch.setitem(sys.modules, "kron_torch", None)
    verdicts = peers.main(["--quick", "--default-malloc"])
    out = capsys.readouterr().out
    assert "skipped psgd_torch (pip install psgd-torch==0.6.1" in out
    assert "skipped kron_torch (pip install kron-torch==0.3.3" in out
    rows = _rows(out)
    assert set(rows) == set(_PSGDLIB_ROWS)
    for name, cols in rows.items():
        ms, x_sgd = float(cols[0]), float(cols[1])
        assert ms > 0 and math.isfinite(x_sgd)
    assert float(rows["sgd (clip 1)"][1]) == 1.0
    assert verdicts == {10: {}} and "at or below" not in out


def test_peers_quick_against_the_installed_peers(capsys):
    pytest.importorskip("psgd_torch")
    pytest.importorskip("kron_torch")
    verdicts = peers.main(["--quick", "--default-malloc"])
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == set(_PSGDLIB_ROWS) | {"psgd_torch fd", "psgd_torch hvp", "kron_torch (whitening)"}
    for pairs in ("fd", "hvp"):
        r = verdicts[10][pairs]
        assert 0 < r < math.inf
        cols = rows[f"psgdlib {pairs}"]       # ms, x SGD, above floor, MB, x SGD, ratio [q1, q3]
        assert float(cols[5]) == pytest.approx(r, abs=5e-4)
        q1, q3 = float(cols[6].strip("[,")), float(cols[7].strip("]"))
        assert q1 <= r <= q3
        assert f"psgdlib {pairs} at or below psgd_torch {pairs} at every T: " in out
    # peak memory: hvp keeps the double-backward graph, so it needs more than SGD
    assert float(rows["psgdlib hvp"][4]) > 1.0 and float(rows["psgd_torch hvp"][4]) > 1.0


def _peer_optimizer(step):
    """The psgd_torch.Kron object a benchmark step function closes over."""
    import psgd_torch
    return next(c.cell_contents for c in step.__closure__ if isinstance(c.cell_contents, psgd_torch.Kron))


def test_peer_psgd_torch_is_configured_as_eq5():
    """psgd_torch.Kron as the benchmark builds it: Newton type with the asked pair source, a
    0.01 step, and two triangular factors for each weight matrix of eq. (1), of the sizes of
    psgdlib's Kron (eq. (5)); a size-1 dimension (the output row of W2) is a scalar factor
    in psgd_torch, a 1x1 triangular one in psgdlib (the same preconditioner)."""
    pytest.importorskip("psgd_torch")
    task = peers.tasks.get("addition", 10)
    model = peers.RNN(task.input_dim, 8, task.output_dim, generator=torch.Generator().manual_seed(0))
    b = task.sample(4, generator=torch.Generator().manual_seed(0))
    for pairs in ("fd", "hvp"):
        step = peers._psgd_torch(pairs)(model, task)
        opt = _peer_optimizer(step)
        assert opt.exact_hessian_vector_product == (pairs == "hvp") and opt._preconditioner_type == "Newton"
        assert opt.lr_params == 0.01 and opt.lr_preconditioner == 0.01 and opt.step_normalizer == "1st"
        for _ in range(3):
            step(b)
        (Q1, Q2), _ = opt._Qs_exprs[0]                 # W1: (8, 2 + 8 + 1)
        assert [tuple(q.shape) for q in (Q1, Q2)] == [(8, 8), (11, 11)]
        for q in (Q1, Q2):                             # triangular, and not diagonal
            assert torch.equal(q, torch.triu(q)) and not torch.equal(q, torch.diag(q.diagonal()))
        (q1, q2), _ = opt._Qs_exprs[1]                 # W2: (1, 8 + 1)
        assert tuple(q1.shape) == (1,) and tuple(q2.shape) == (9, 9)


def test_peers_before_loads_another_copy_of_psgdlib(capsys, monkeypatch):
    """``--before DIR`` times the PSGD of a folder holding a psgdlib package (here this one)."""
    monkeypatch.setitem(sys.modules, "psgd_torch", None)
    monkeypatch.setitem(sys.modules, "kron_torch", None)
    monkeypatch.delitem(sys.modules, "psgdlib_before", raising=False)
    peers.main(["--quick", "--default-malloc", "--before", str(ROOT)])
    rows = _rows(capsys.readouterr().out)
    label = ROOT.name
    assert {f"psgdlib@{label} fd", f"psgdlib@{label} hvp"} <= set(rows)
    before = sys.modules["psgdlib_before"]
    assert before.PSGD is not peers.PSGD and Path(before.__file__).parent == ROOT / "psgdlib"


# ------------------------------------------------------------------- gpu_check.py
import gpu_check  # noqa: E402


def test_gpu_check_without_cuda_exits_0_and_says_why(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main() == 0
    out = capsys.readouterr().out
    assert "no CUDA device here" in out and "nothing to check" in out


def test_gpu_check_sync_cases_run(capsys, monkeypatch):
    """The no-sync check's 15 cases (3 preconditioners x 5 pair/closure styles) run and pass,
    here on the CPU with the CUDA calls stubbed (the sync detection itself needs a GPU)."""
    modes = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    assert gpu_check.check_no_sync(torch.device("cpu"))
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("PSGD ")]
    assert len(lines) == 15 and all(x.endswith("no host sync in step: True") for x in lines)
    assert modes[:2] == ["error", 0] and len(modes) == 4 * 15   # model probe + step, each on and off
