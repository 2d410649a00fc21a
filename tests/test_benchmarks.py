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
