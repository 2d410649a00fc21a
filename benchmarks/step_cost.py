"""Time per iteration and peak memory of SGD (clipped), Adam and PSGD variants on a tanh RNN.

    python benchmarks/step_cost.py [--T 100] [--hidden 100] [--batch 100] [--iters 30]

Everything runs in this one process, on the CPU, and is printed as ratios to SGD
measured here (never compare absolute times across machines). Peak memory is
the peak resident-set growth of a child process per optimizer (Linux), relative
to SGD's.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time

import torch

from psgdlib import PSGD, tasks
from psgdlib.train import build_model

VARIANTS = [("sgd (clip 1)", None, None), ("adam", None, None)] + [
    (f"psgd {pre} {pairs}", pre, pairs)
    for pre in ("kron", "dense", "diag") for pairs in ("hvp", "finite_difference", "whitening")]


def _time_variant(name, pre, pairs, T, hidden, batch, iters, threads, q=None):
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    task = tasks.get("addition", T)
    model = build_model(task, hidden, seed=0)
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(0)
    if pre is None:
        opt = torch.optim.SGD(params, lr=0.01) if name.startswith("sgd") else torch.optim.Adam(params, 1e-3)
    else:
        if pre == "dense" and sum(p.numel() for p in params) > 12_000:
            return name, None, None
        opt = PSGD(params, preconditioner=pre, pairs=pairs, seed=0)
    batches = [task.sample(batch, generator=gen) for _ in range(4)]
    times = []
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(iters + 3):
        b = batches[i % 4]
        t0 = time.perf_counter()
        if pre is None:
            opt.zero_grad()
            loss = task.loss(model(b.inputs), b)
            loss.backward()
            if name.startswith("sgd"):
                torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        else:
            opt.step(lambda: task.loss(model(b.inputs), b))
        times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    out = (name, statistics.median(times[3:]), rss)
    if q is not None:
        q.put(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--only", default="", help="comma-separated substrings: run SGD plus matching variants")
    a = ap.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    keys = [k for k in a.only.split(",") if k]
    variants = [v for i, v in enumerate(VARIANTS) if i == 0 or not keys or any(k in v[0] for k in keys)]
    for name, pre, pairs in variants:
        q = ctx.Queue()
        p = ctx.Process(target=_time_variant, args=(name, pre, pairs, a.T, a.hidden, a.batch, a.iters,
                                                    a.threads, q))
        p.start()
        rows.append(q.get())
        p.join()
    base_t, base_m = rows[0][1], max(rows[0][2], 1)
    print(f"tanh RNN, hidden {a.hidden}, T={a.T}, batch {a.batch}, float32, CPU, {a.threads} threads; "
          f"{torch.__version__}")
    print(f"{'optimizer':32s} {'ms/iter':>8s} {'x SGD':>7s} {'peak RSS growth MB':>19s} {'x SGD':>7s}")
    for name, t, m in rows:
        if t is None:
            print(f"{name:32s} {'skipped (dense P too large)':>40s}")
            continue
        print(f"{name:32s} {1000 * t:8.1f} {t / base_t:7.2f} {m / 1024:19.1f} {m / base_m:7.2f}")


if __name__ == "__main__":
    main()
