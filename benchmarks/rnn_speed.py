"""Speed of the RNN of eq. (1): our fused and loop paths against torch.nn.RNN, same process.

    python benchmarks/rnn_speed.py [--T 100] [--hidden 100] [--batch 100] [--threads 2]

Per iteration: "sgd" = forward + backward of the addition loss; "hvp" = forward,
gradient with create_graph and one Hessian-vector product; "fd" = the two
gradients of a finite-difference pair. Ratios are to torch.nn.RNN measured here.
A second table gives PSGD-Kron training iterations per second at several T.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from psgdlib import PSGD, tasks
from psgdlib.models import RNN


class TorchRNN(torch.nn.Module):
    """torch.nn.RNN + a linear read-out with the same shapes (the baseline)."""

    def __init__(self, nu, nx, ny):
        super().__init__()
        self.rnn = torch.nn.RNN(nu, nx, nonlinearity="tanh")
        self.out = torch.nn.Linear(nx, ny)

    def forward(self, u):
        return self.out(self.rnn(u)[0])


def _median_ms(fn, reps):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1000 * statistics.median(ts)


def _modes(model, task, batch):
    ps = [p for p in model.parameters()]
    loss = lambda: task.loss(model(batch.inputs), batch)

    def sgd():
        torch.autograd.grad(loss(), ps)

    def hvp():
        g = torch.autograd.grad(loss(), ps, create_graph=True)
        torch.autograd.grad(g, ps, [torch.ones_like(p) for p in ps])

    def fd():
        torch.autograd.grad(loss(), ps)
        torch.autograd.grad(loss(), ps)

    return {"sgd": sgd, "hvp": hvp, "fd": fd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reps", type=int, default=15)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    task = tasks.get("addition", a.T)
    batch = task.sample(a.batch, generator=torch.Generator().manual_seed(0))
    models = {"torch.nn.RNN": TorchRNN(task.input_dim, a.hidden, 1),
              "psgdlib bptt": RNN(task.input_dim, a.hidden, 1, impl="bptt"),
              "psgdlib fused": RNN(task.input_dim, a.hidden, 1, impl="fused"),
              "psgdlib loop": RNN(task.input_dim, a.hidden, 1, impl="loop")}
    res = {name: {k: _median_ms(f, a.reps) for k, f in _modes(m, task, batch).items()}
           for name, m in models.items()}
    base = res["torch.nn.RNN"]
    print(f"tanh RNN, hidden {a.hidden}, T~{a.T}, batch {a.batch}, float32, CPU, {a.threads} threads, "
          f"torch {torch.__version__}")
    print(f"{'model':16s}" + "".join(f"{k + ' ms':>10s}{'x base':>8s}" for k in base))
    for name, r in res.items():
        print(f"{name:16s}" + "".join(f"{r[k]:10.1f}{r[k] / base[k]:8.2f}" for k in base))

    print("\nPSGD-Kron training iterations per second (default impl, batch 100, hidden 100)")
    print(f"{'T':>5s} {'hvp it/s':>10s} {'fd it/s':>10s} {'sgd it/s':>10s}")
    for T in (30, 50, 100, 200):
        t = tasks.get("addition", T)
        b = t.sample(100, generator=torch.Generator().manual_seed(0))
        row = []
        for pairs in ("hvp", "finite_difference", None):
            m = RNN(t.input_dim, 100, 1)
            if pairs is None:
                opt = torch.optim.SGD(m.parameters(), lr=0.01)

                def step():
                    opt.zero_grad()
                    t.loss(m(b.inputs), b).backward()
                    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
                    opt.step()
            else:
                opt = PSGD(m.parameters(), pairs=pairs, seed=0)

                def step():
                    opt.step(lambda: t.loss(m(b.inputs), b))
            row.append(1000 / _median_ms(step, max(5, a.reps // 2)))
        print(f"{T:5d} {row[0]:10.1f} {row[1]:10.1f} {row[2]:10.1f}")


if __name__ == "__main__":
    main()
