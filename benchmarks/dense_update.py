"""Cost of one dense-preconditioner update (criterion (3), Sec. II.B.1) at Experiment 1's size.

    python benchmarks/dense_update.py [--n 2651] [--iters 10] [--threads 1]

n = 2651 is the RNN of eq. (1) with hidden size 50 on the addition problem (Fig. 1).
Three ways of doing the same update are timed in this one process and printed as ratios
to the first, the straightforward formulation kept here as the baseline:

* ``explicit``: G = triu(a a^T - b b^T) formed, max|G| over it, Q_new = Q - step G Q
  evaluated by whole-matrix reverse cumulative sums, finiteness checked on Q_new, Q
  overwritten (the library's first version);
* ``Dense.update, row-major Q``: the library's update with Q stored row by row;
* ``Dense.update`` (default): the library's update with Q stored column by column.

All three give the same Q (checked here, float32 tolerance).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from psgdlib.preconditioners import Dense


def _rev_cumsum_product(a: torch.Tensor, b: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """triu(a a^T - b b^T) @ Q by whole-matrix reverse cumulative sums (the first version)."""
    def rc(x):
        return (x[None, :] * Q.T).contiguous().flip(1).cumsum(1).flip(1)
    return (a[None, :] * rc(a) - b[None, :] * rc(b)).T


def explicit_update(Q: torch.Tensor, v: torch.Tensor, h: torch.Tensor, lr: float) -> None:
    a = Q @ h
    b = torch.linalg.solve_triangular(Q.T, v[:, None], upper=False)[:, 0]
    G = torch.triu(torch.outer(a, a) - torch.outer(b, b))
    gmax = G.abs().max()
    Qnew = Q - lr / (gmax + 1e-30) * _rev_cumsum_product(a, b, Q)
    ok = torch.isfinite(gmax) & torch.isfinite(Qnew).all()
    Q.copy_(torch.where(ok, Qnew, Q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2651)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    n = a.n
    Q0 = torch.eye(n) + 0.01 * torch.triu(torch.randn(n, n, generator=gen))
    pairs = [(torch.randn(n, generator=gen), torch.randn(n, generator=gen)) for _ in range(a.iters + 1)]

    col = Dense(n)
    col.Q.copy_(Q0)
    row = Dense(n)
    row.Q = Q0.clone()
    base = Q0.clone()
    variants = [("explicit (baseline)", lambda v, h: explicit_update(base, v, h, 0.01)),
                ("Dense.update, row-major Q", lambda v, h: row.update(v, h, 0.01)),
                ("Dense.update (column-major Q)", lambda v, h: col.update(v, h, 0.01))]
    times = {}
    for name, f in variants:
        f(*pairs[0])  # warm-up
        ts = []
        for v, h in pairs[1:]:
            t0 = time.perf_counter()
            f(v, h)
            ts.append(time.perf_counter() - t0)
        times[name] = statistics.median(ts)
    torch.testing.assert_close(row.Q, base, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(col.Q, base, rtol=1e-4, atol=1e-5)
    ref = times[variants[0][0]]
    print(f"dense update, n = {n}, {a.threads} thread(s), median of {a.iters}")
    for name, t in times.items():
        print(f"  {name:32s} {1000 * t:8.1f} ms   {t / ref:5.2f}x")


if __name__ == "__main__":
    main()
