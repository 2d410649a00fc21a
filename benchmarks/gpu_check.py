"""One short check of the GPU path (run it where CUDA is available; CI has no GPU).

    python benchmarks/gpu_check.py

Checks, each against the CPU in the same process: task batches are identical on
CUDA; the RNN of eq. (1) (bptt, fused and loop) and the 2D RNN give the same outputs,
gradients and Hessian-vector products in float64; ``PSGD.step`` issues no host
synchronisation (``torch.cuda.set_sync_debug_mode("error")``) for the Kron, Dense and Diag
preconditioners with every pair source and both closure styles, a non-finite step
included; then it times float32 iterations (SGD, PSGD-Kron hvp / finite_difference) on
CUDA vs CPU.  Exits 2 on a mismatch or a sync.  Without CUDA it says so and exits 0 (there
is nothing to check; ``tests/test_no_sync.py`` guards the step on the CPU).
"""
from __future__ import annotations

import sys
import time
import warnings

import torch

from psgdlib import PSGD, tasks
from psgdlib.models import RNN, RNN2D

PRECONDITIONERS = ("kron", "dense", "diag")
PAIRS = (("hvp", "psgd"), ("finite_difference", "psgd"), ("finite_difference", "torch"),
         ("whitening", "psgd"), ("whitening", "torch"))


def _close(a, b, tol=1e-9):
    return all(torch.allclose(x.cpu(), y.cpu(), rtol=tol, atol=tol) for x, y in zip(a, b))


def _grads_hvp(model, loss_fn):
    ps = list(model.parameters())
    g = torch.autograd.grad(loss_fn(), ps, create_graph=True)
    h = torch.autograd.grad(g, ps, [torch.ones_like(p) for p in ps])
    return [x.detach() for x in g] + list(h)


def _time(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / reps


def _syncs(fn) -> str | None:
    """None if ``fn()`` runs with no host synchronisation on CUDA, else the error it raised."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    except RuntimeError as e:
        return str(e).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return None


def check_no_sync(dev: torch.device) -> bool:
    """PSGD.step on CUDA under ``set_sync_debug_mode("error")``: every preconditioner and pair
    source, PSGD's and torch's closure style, momentum and clipping on, one non-finite step."""
    t = tasks.get("addition", 30)
    b = t.sample(16, generator=torch.Generator().manual_seed(0), device=dev)
    ok = True
    for pre in PRECONDITIONERS:
        for pairs, style in PAIRS:
            m = RNN(2, 16, 1, generator=torch.Generator().manual_seed(0)).to(dev)
            opt = PSGD(m.parameters(), preconditioner=pre, pairs=pairs, momentum=0.5, clip_norm=1.0, seed=0)

            def loss(scale: float = 1.0):
                out = t.loss(m(b.inputs), b) * scale
                if style == "torch":
                    opt.zero_grad()
                    out.backward()
                return out
            opt.step(loss)                                   # builds the state
            model_sync = _syncs(lambda: torch.autograd.grad(t.loss(m(b.inputs), b), list(m.parameters())))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # the non-finite step's warning
                err = _syncs(lambda: [opt.step(loss), opt.step(lambda: loss(float("nan"))), opt.step(loss)])
            counted = opt.nonfinite_steps == 1
            good = err is None and counted
            ok &= good
            note = ("" if good else f"  <- {err or 'non-finite step not counted'}"
                    + (f" (the model's own loss/gradient syncs too: {model_sync})" if model_sync else ""))
            print(f"PSGD {pre:5s} {pairs:17s} {style:5s} closure: no host sync in step: {good}{note}")
    return ok


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False), so there is "
              "nothing to check; run it on a machine with a GPU (e.g. Colab). On the CPU, "
              "tests/test_no_sync.py checks that PSGD.step reads nothing back.")
        return 0
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(dev), torch.__version__)
    ok = True
    for name in tasks.ALL_NAMES:
        t = tasks.get(name, 100 if name == "addition_variable" else 30)
        a = t.sample(16, generator=torch.Generator().manual_seed(0))
        b = t.sample(16, generator=torch.Generator().manual_seed(0), device=dev)
        same = torch.equal(a.inputs, b.inputs.cpu()) and torch.equal(a.targets, b.targets.cpu())
        ok &= same
        print(f"task {name:22s} CUDA batch == CPU batch: {same}")
    t = tasks.get("addition", 30)
    batch = t.sample(20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for impl in ("bptt", "fused", "loop"):
        m = RNN(2, 16, 1, impl=impl, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        mc = RNN(2, 16, 1, impl=impl, dtype=torch.float64).to(dev)
        mc.load_state_dict(m.state_dict())
        bc = batch.to(dev)
        same = _close(_grads_hvp(m, lambda: t.loss(m(batch.inputs), batch)),
                      _grads_hvp(mc, lambda: t.loss(mc(bc.inputs), bc)))
        ok &= same
        print(f"RNN {impl}: float64 grads and HVP CUDA == CPU: {same}")
    m2 = RNN2D(sizes=(4, 6), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    m2c = RNN2D(sizes=(4, 6), dtype=torch.float64).to(dev)
    m2c.load_state_dict(m2.state_dict())
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64)
    y = torch.arange(5)
    ce = torch.nn.functional.cross_entropy
    same = _close(_grads_hvp(m2, lambda: ce(m2(x), y)), _grads_hvp(m2c, lambda: ce(m2c(x.to(dev)), y.to(dev))))
    ok &= same
    print(f"RNN2D: float64 grads and HVP CUDA == CPU: {same}")
    ok &= check_no_sync(dev)
    # timings, float32, hidden 100, T=100, batch 100
    t = tasks.get("addition", 100)
    print("\nfloat32, hidden 100, T~100, batch 100: ms per iteration")
    for label, d in (("cuda", dev), ("cpu", torch.device("cpu"))):
        bb = t.sample(100, generator=torch.Generator().manual_seed(0), device=d)
        row = []
        for pairs in (None, "hvp", "finite_difference"):
            m = RNN(2, 100, 1).to(d)
            if pairs is None:
                o = torch.optim.SGD(m.parameters(), lr=0.01)

                def step():
                    o.zero_grad()
                    t.loss(m(bb.inputs), bb).backward()
                    o.step()
            else:
                o = PSGD(m.parameters(), pairs=pairs, seed=0)

                def step():
                    o.step(lambda: t.loss(m(bb.inputs), bb))
            row.append(_time(step, 10 if label == "cpu" else 30) if d.type == "cuda" else
                       _cpu_time(step))
        print(f"{label:5s} sgd {row[0]:7.1f}  psgd-kron hvp {row[1]:7.1f}  psgd-kron fd {row[2]:7.1f}")
    print("ALL OK" if ok else "MISMATCH")
    return 0 if ok else 2


def _cpu_time(fn, reps=5):
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return 1000 * (time.perf_counter() - t) / reps


if __name__ == "__main__":
    sys.exit(main())
