"""Seconds per MNIST epoch of the 2D RNN (Experiment 3): SGD vs PSGD, wavefront vs cell loop.

Each configuration trains on a slice of an epoch (``--batches`` minibatches of 100 real
MNIST images, after ``--warmup`` untimed ones), and the time is scaled to a full epoch of
60,000 images (600 minibatches). All configurations run in the same process, from the same
initial weights, on the same minibatches; the table gives ratios to SGD with the wavefront
forward pass (:meth:`RNN2D.forward`, 15 sequential steps per layer) measured here. The cell
loop is :meth:`RNN2D.forward_reference` (64 sequential steps per layer). The last row is
one evaluation of the 10,000 test images (forward only, batches of 1000).

    PSGD_DATA=/path/to/data python benchmarks/mnist_epoch.py [--batches 20] [--threads 1]

Without the MNIST files (``--synthetic``) random images of the same shape are used (the
timings do not depend on the pixel values).
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from psgdlib.mnist import DEFAULT_LR, evaluate, make_model, make_optimizer
from psgdlib.utils import configure_cpu, hardware, pick_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(optimizer: str, forward: str, xs: torch.Tensor, ys: torch.Tensor,
                  batch_size: int, warmup: int, n: int, device: torch.device,
                  pairs: str = "finite_difference") -> float:
    """Seconds per minibatch (mean over ``n`` timed minibatches)."""
    model = make_model(0, device=device)
    if forward == "cell loop":
        model.forward = model.forward_reference  # type: ignore[method-assign]
    opt = make_optimizer(optimizer, model.parameters(), DEFAULT_LR, pairs=pairs, seed=1)

    def one(i: int) -> None:
        s = (i * batch_size) % xs.shape[0]
        xb, yb = xs[s:s + batch_size], ys[s:s + batch_size]
        if optimizer == "psgd":
            opt.step(lambda: F.cross_entropy(model(xb), yb))
        else:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()

    for i in range(warmup):
        one(i)
    _sync(device)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + n):
        one(i)
    _sync(device)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=20, help="timed minibatches per configuration")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--synthetic", action="store_true", help="random images instead of MNIST")
    ap.add_argument("--no-cell-loop", action="store_true", help="skip the slow reference rows")
    args = ap.parse_args()

    device = pick_device(args.device)
    configure_cpu(args.threads)
    need = (args.warmup + args.batches) * args.batch_size
    if args.synthetic:
        g = torch.Generator().manual_seed(0)
        xs, ys = torch.rand(need, 1, 28, 28, generator=g), torch.randint(0, 10, (need,), generator=g)
        xte, yte = torch.rand(10_000, 1, 28, 28, generator=g), torch.randint(0, 10, (10_000,), generator=g)
    else:
        from psgdlib.data import load_mnist
        xs, ys = load_mnist(train=True, limit=need)
        xte, yte = load_mnist(train=False)
    xs, ys, xte, yte = xs.to(device), ys.to(device), xte.to(device), yte.to(device)
    per_epoch = math.ceil(60_000 / args.batch_size)

    configs = [("sgd", "wavefront", "-"), ("psgd", "wavefront", "finite_difference"),
               ("psgd", "wavefront", "hvp")]
    if not args.no_cell_loop:
        configs += [("sgd", "cell loop", "-"), ("psgd", "cell loop", "finite_difference"),
                    ("psgd", "cell loop", "hvp")]
    rows = []
    for opt, fwd, pairs in configs:
        t = time_training(opt, fwd, xs, ys, args.batch_size, args.warmup, args.batches, device,
                          pairs if pairs != "-" else "finite_difference")
        rows.append((opt, fwd, pairs, t))
    model = make_model(0, device=device)
    evaluate(model, xte[:1000], yte[:1000])
    _sync(device)
    t0 = time.perf_counter()
    evaluate(model, xte, yte)
    _sync(device)
    t_eval = time.perf_counter() - t0

    base = rows[0][3]
    print(f"MNIST 2D RNN, 39,706 parameters, minibatch {args.batch_size}, "
          f"{args.batches} timed minibatches per row; {hardware(device)}; torch {torch.__version__}")
    print(f"{'optimizer':9s} {'forward':10s} {'pairs':18s} {'ms/minibatch':>12s} "
          f"{'s/epoch (60k)':>14s} {'ratio':>6s}")
    for opt, fwd, pairs, t in rows:
        print(f"{opt:9s} {fwd:10s} {pairs:18s} {1000 * t:12.1f} {t * per_epoch:14.1f} "
              f"{t / base:6.2f}")
    print(f"{'test eval':9s} {'wavefront':10s} {'(10k images)':18s} {'':12s} {t_eval:14.2f} "
          f"{t_eval / (base * per_epoch):6.3f}")


if __name__ == "__main__":
    main()
