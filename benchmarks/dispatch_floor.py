"""How much of a PSGD iteration is arithmetic and how much is per-op overhead (CPU, one process).

    python benchmarks/dispatch_floor.py [--T 100] [--iters 20] [--threads 1]

A Table I iteration (PSGD Kron, finite-difference pairs, hidden 100, batch 100) is timed
next to the same iteration at a size where the arithmetic vanishes (hidden 2, batch 1, same
T): that run costs only the per-op overhead (Python, autograd, the dispatcher), the floor
that an eager-mode GPU run pays too, on top of one kernel launch per op.  The number of
tensor ops per iteration is counted with a dispatch mode.  Printed: ops per iteration,
the two times and their ratio, and, for a GPU (never measured in this project: no GPU was
lent), the *model* ``computing ops x launch latency`` for the latencies given by ``--launch-us``.
"""
from __future__ import annotations

import argparse

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from psgdlib import PSGD, tasks
from psgdlib.train import build_model
from rnn_speed import _median_ms  # benchmarks/ is this script's folder


class _CountOps(TorchDispatchMode):
    """Counts tensor ops: ``n`` all, ``kernels`` those that compute (not views, which a GPU
    runs without a kernel launch)."""

    def __init__(self):
        super().__init__()
        self.n = self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        self.kernels += not func.is_view
        return func(*args, **(kwargs or {}))


def _setup(T: int, hidden: int, batch: int, problem: str = "addition"):
    """One PSGD Kron iteration (finite-difference pairs) on a fixed minibatch, as a function."""
    task = tasks.get(problem, T)
    model = build_model(task, hidden, seed=0)
    opt = PSGD(list(model.parameters()), preconditioner="kron", pairs="finite_difference", seed=0)
    b = task.sample(batch, generator=torch.Generator().manual_seed(0))
    return lambda: opt.step(lambda: task.loss(model(b.inputs), b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--launch-us", default="5,10", help="assumed GPU cost per op (microseconds), for the model")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    full, tiny = _setup(a.T, 100, 100), _setup(a.T, 2, 1)
    full()
    with _CountOps() as c:
        full()
    ms_full, ms_tiny = _median_ms(full, a.iters), _median_ms(tiny, a.iters)
    print(f"PSGD Kron, finite-difference pairs, addition T={a.T}, {a.threads} thread(s), CPU")
    print(f"tensor ops per iteration:                  {c.n} ({c.kernels} that compute, the rest views)")
    print(f"ms / iteration, hidden 100, batch 100:     {ms_full:.2f}  ({1000 / ms_full:.1f} it/s)")
    print(f"ms / iteration, hidden 2, batch 1 (floor): {ms_tiny:.2f}  ({1000 / ms_tiny:.1f} it/s)")
    print(f"floor / full:                              {ms_tiny / ms_full:.2f}")
    print(f"overhead per op on this CPU:               {1000 * ms_tiny / c.n:.1f} us")
    for us in (float(x) for x in a.launch_us.split(",")):
        ms = c.kernels * us / 1000
        print(f"model, GPU at {us:g} us per op: {ms:.1f} ms / iteration ({1000 / ms:.0f} it/s), "
              f"{ms_full / ms:.1f}x this CPU")


if __name__ == "__main__":
    main()
