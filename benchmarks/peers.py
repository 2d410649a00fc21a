"""psgdlib's PSGD against the public PSGD implementations, per iteration (issue 24).

    python benchmarks/peers.py [--T 30,100,200] [--iters 100] [--threads 1] [--before REV|DIR]
    python benchmarks/peers.py --quick          # tiny sizes, seconds (what the test runs)

One process, one device, one thread by default.  Every optimizer trains its own copy of
the same model (the RNN of eq. (1), psgdlib's hand-written BPTT; the same initial weights)
on the same minibatches of the addition problem:

* ``sgd (clip 1)``: SGD with the gradient norm clipped at 1, the baseline of every ratio;
* ``psgdlib fd`` / ``psgdlib hvp``: :class:`psgdlib.PSGD` with one :class:`psgdlib.Kron`
  per weight matrix (eq. (5)), finite-difference or exact Hessian-vector pairs;
* ``psgd_torch fd`` / ``psgd_torch hvp``: Li's ``psgd_torch.Kron`` (0.6.1), Newton type,
  ``preconditioner_max_skew=inf`` and ``preconditioner_max_size=inf`` (two triangular
  factors per matrix, eq. (5)), ``exact_hessian_vector_product`` False/True, the
  gradient-normalized preconditioner step (``step_normalizer="1st"``) of size 0.01;
* ``kron_torch``: ``kron_torch.Kron`` (0.3.3; gradient whitening, its ``torch.compile``d
  update), preconditioner updated at every step;
* with ``--before REV`` (a git revision, or a folder holding a ``psgdlib`` package): the
  PSGD of that revision too, as ``psgdlib@REV fd/hvp``, for before/after figures.

A peer that is not installed (``pip install -e .[bench]``) is skipped with a message.
The floors (``floor fd``: two gradients; ``floor hvp``: a gradient and a Hessian-vector
product, no preconditioner) are the gradient work every Newton-type iteration does.

Timing: on the CPU the clock is this process's CPU time (``--clock wall`` for elapsed
time), so that other processes on a shared machine do not enter the figures, and glibc's
malloc keeps freed memory (no page faults in the timings; ``--default-malloc``); on CUDA
the elapsed time with a synchronisation after each iteration.  After warm-up, round by
round, each optimizer runs one iteration (those of one pair type back to back; the
orders rotate every round).  Printed: the median ms per iteration, its ratio to SGD's,
the optimizer's own cost (``above floor``: median over rounds of the time minus the
floor's), and ``vs psgd_torch``: the median over rounds of psgdlib's time divided by
psgd_torch's in the same round (same pair type), with its quartiles.  On a loaded
machine a single iteration's time varies by +-5%: the medians need about a hundred
rounds to resolve a 2% difference.  ``--json FILE`` stores every iteration's time.
Memory: the peak of tensor memory allocated during one iteration above what was
allocated before it (CPU: the profiler's allocation events; CUDA:
``torch.cuda.max_memory_allocated``), a multiple of SGD's.  Never compare absolute
times across machines.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import importlib.util
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("KINETO_LOG_LEVEL", "6")        # silence the profiler's start/stop lines
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # ... and its note on blocks freed in a step
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from psgdlib import PSGD, tasks  # noqa: E402
from psgdlib.models import RNN  # noqa: E402

Step = Callable[[tasks.Batch], None]


@dataclass
class Variant:
    """One optimizer: ``make(model, task)`` returns the function doing one iteration on a batch."""
    name: str
    make: Callable[[torch.nn.Module, tasks.Task], Step]
    pairs: str | None = None          # "fd"/"hvp": compared with psgd_torch of the same pairs
    family: str = ""                  # "psgdlib", "before", "psgd_torch", "kron_torch", "sgd"
    times: list[float] = field(default_factory=list)
    peak: float | None = None


# ----------------------------------------------------------------- optimizers
def _sgd(model: torch.nn.Module, task: tasks.Task) -> Step:
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.01)

    def step(b: tasks.Batch) -> None:
        opt.zero_grad()
        task.loss(model(b.inputs), b).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return step


def _psgdlib(pairs: str, cls: type = PSGD) -> Callable[[torch.nn.Module, tasks.Task], Step]:
    def make(model: torch.nn.Module, task: tasks.Task) -> Step:
        opt = cls(list(model.parameters()), lr=0.01, precond_lr=0.01, preconditioner="kron",
                  pairs=pairs, seed=0)
        return lambda b: opt.step(lambda: task.loss(model(b.inputs), b))
    return make


def _psgd_torch(pairs: str) -> Callable[[torch.nn.Module, tasks.Task], Step]:
    def make(model: torch.nn.Module, task: tasks.Task) -> Step:
        import psgd_torch
        opt = psgd_torch.Kron(list(model.parameters()), preconditioner_max_size=math.inf,
                              preconditioner_max_skew=math.inf, preconditioner_init_scale=1.0,
                              lr_params=0.01, lr_preconditioner=0.01, step_normalizer="1st",
                              exact_hessian_vector_product=pairs == "hvp", preconditioner_type="Newton")
        return lambda b: opt.step(lambda: task.loss(model(b.inputs), b))
    return make


def _kron_torch(model: torch.nn.Module, task: tasks.Task) -> Step:
    import kron_torch
    opt = kron_torch.Kron(model.parameters(), lr=3e-4, preconditioner_update_probability=1.0)

    def step(b: tasks.Batch) -> None:
        opt.zero_grad()
        task.loss(model(b.inputs), b).backward()
        opt.step()
    return step


def _floor(pairs: str) -> Callable[[torch.nn.Module, tasks.Task], Step]:
    """The gradient work every Newton-type PSGD iteration does, with no preconditioner:
    two gradients (fd; ``theta`` restored by subtraction) or a gradient and a Hessian-vector
    product (hvp).  Time above it is optimizer overhead."""
    def make(model: torch.nn.Module, task: tasks.Task) -> Step:
        params = list(model.parameters())
        gen = torch.Generator(device=params[0].device).manual_seed(0)
        vs = [torch.randn(p.shape, generator=gen, dtype=p.dtype, device=p.device) for p in params]
        if pairs == "fd":
            vs = [2.0 ** -14 * v for v in vs]

        def step(b: tasks.Batch) -> None:
            with torch.enable_grad():
                g = torch.autograd.grad(task.loss(model(b.inputs), b), params, create_graph=pairs == "hvp")
                if pairs == "hvp":
                    torch.autograd.grad(g, params, vs)
                    return
                with torch.no_grad():
                    torch._foreach_add_(params, vs)
                torch.autograd.grad(task.loss(model(b.inputs), b), params)
                with torch.no_grad():
                    torch._foreach_sub_(params, vs)
        return step
    return make


def _available(module: str) -> str | None:
    """None if ``module`` imports, else the reason it does not."""
    try:
        with warnings.catch_warnings():       # psgd_torch: torch.jit.script is deprecated
            warnings.simplefilter("ignore", FutureWarning)
            importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - a broken install is a missing peer too
        return f"{type(e).__name__}: {e}"
    return None


def _load_before(rev: str) -> tuple[type, str]:
    """PSGD of another revision: ``rev`` is a folder holding ``psgdlib/`` or a git revision
    (its ``psgdlib/`` is extracted with ``git archive`` to a temporary folder)."""
    path = Path(rev)
    label = path.name
    if not (path / "psgdlib" / "__init__.py").is_file():
        label = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.strip()
        path = Path(tempfile.mkdtemp(prefix=f"psgdlib-{label}-"))
        archive = subprocess.run(["git", "archive", rev, "psgdlib"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(path)], input=archive, check=True)
    name = "psgdlib_before"
    spec = importlib.util.spec_from_file_location(name, path / "psgdlib" / "__init__.py",
                                                  submodule_search_locations=[str(path / "psgdlib")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod.PSGD, label


def variants(before: str | None = None, log: Callable[[str], None] = print) -> list[Variant]:
    """The optimizers to compare; a missing peer is left out with a message."""
    out = [Variant("sgd (clip 1)", _sgd, family="sgd")]
    out += [Variant(f"floor {p}: {what}", _floor(p), p, "floor")
            for p, what in (("fd", "2 gradients"), ("hvp", "gradient + Hv"))]
    if before:
        cls, label = _load_before(before)
        out += [Variant(f"psgdlib@{label} {p}", _psgdlib(full, cls), p, "before")
                for p, full in (("fd", "finite_difference"), ("hvp", "hvp"))]
    out += [Variant(f"psgdlib {p}", _psgdlib(full), p, "psgdlib")
            for p, full in (("fd", "finite_difference"), ("hvp", "hvp"))]
    why = _available("psgd_torch")
    if why is None:
        out += [Variant(f"psgd_torch {p}", _psgd_torch(p), p, "psgd_torch") for p in ("fd", "hvp")]
    else:
        log(f"skipped psgd_torch (pip install psgd-torch==0.6.1, or pip install -e .[bench]): {why}")
    why = _available("kron_torch")
    if why is None:
        out.append(Variant("kron_torch (whitening)", _kron_torch, family="kron_torch"))
    else:
        log(f"skipped kron_torch (pip install kron-torch==0.3.3, or pip install -e .[bench]): {why}")
    return out


# -------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(step: Step, batch: tasks.Batch, device: torch.device) -> float:
    """Peak tensor memory allocated during ``step(batch)`` above what was allocated before it."""
    if device.type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(batch)
        _sync(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(batch)
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = top = 0
    for e in events:
        live += e.nbytes()
        top = max(top, live)
    return float(top)


def measure(vs: list[Variant], T: int, hidden: int, batch: int, iters: int, warmup: int,
            device: torch.device, clock: Callable[[], float] = time.perf_counter,
            dtype: torch.dtype = torch.float32) -> None:
    """Fill ``times`` (seconds of ``clock``) and ``peak`` of every variant for the addition
    problem at length T."""
    task = tasks.get("addition", T)
    gen = torch.Generator().manual_seed(0)
    batches = [task.sample(batch, generator=gen, dtype=dtype, device=device) for _ in range(8)]
    steps = []
    for v in vs:
        model = RNN(task.input_dim, hidden, task.output_dim, dtype=dtype,
                    generator=torch.Generator().manual_seed(0)).to(device)
        steps.append(v.make(model, task))
        v.times, v.peak = [], None
    with contextlib.redirect_stdout(io.StringIO()):     # kron_torch prints its state sizes
        for i in range(warmup):
            for s in steps:
                s(batches[i % len(batches)])
    for v, s in zip(vs, steps):
        v.peak = peak_bytes(s, batches[0], device)
    groups = schedule_groups(vs)
    step_of = {id(v): s for v, s in zip(vs, steps)}
    for i in range(iters):
        b = batches[i % len(batches)]
        for group in _rotated(groups, i):
            for v in _rotated(group, i):
                s = step_of[id(v)]
                _sync(device)
                t0 = clock()
                s(b)
                _sync(device)
                v.times.append(clock() - t0)


def schedule_groups(vs: list[Variant]) -> list[list[Variant]]:
    """The variants of one pair type (floor, psgdlib, psgd_torch, psgdlib@before) as one group,
    each other variant alone: a round runs a group's iterations back to back, so that the
    ratios taken within a round compare iterations run within a fraction of a second."""
    groups: dict[object, list[Variant]] = {}
    for v in vs:
        groups.setdefault(v.pairs if v.pairs else id(v), []).append(v)
    return list(groups.values())


def _rotated(xs: list, k: int) -> list:
    """``xs`` rotated by ``k`` (round k starts with its k-th element): no fixed order."""
    k %= len(xs)
    return xs[k:] + xs[:k]


def paired_ratio(a: Variant, b: Variant) -> float:
    """Median over rounds of ``a``'s iteration time over ``b``'s in the same round."""
    return statistics.median(x / y for x, y in zip(a.times, b.times))


def table(vs: list[Variant], T: int) -> tuple[list[str], dict[str, float]]:
    """Printed lines for one T, and ``{pairs: psgdlib / psgd_torch}`` (paired medians).

    ``above floor``: median over rounds of the iteration's time minus the floor's of the same
    pair type in that round (the optimizer's own cost)."""
    base = vs[0]
    bt, bm = statistics.median(base.times), max(base.peak or 0.0, 1.0)
    peers = {v.pairs: v for v in vs if v.family == "psgd_torch"}
    floors = {v.pairs: v for v in vs if v.family == "floor"}
    lines = [f"{'T=' + str(T):28s} {'ms/iter':>8s} {'x SGD':>6s} {'above floor ms':>14s} {'peak MB':>8s} "
             f"{'x SGD':>6s} {'vs psgd_torch [quartiles]':>25s}"]
    verdict = {}
    for v in vs:
        t = statistics.median(v.times)
        rel = above = ""
        if v.family in ("psgdlib", "before", "psgd_torch") and v.pairs in floors:
            above = f"{1000 * statistics.median(x - y for x, y in zip(v.times, floors[v.pairs].times)):14.2f}"
        if v.family in ("psgdlib", "before") and v.pairs in peers:
            r = paired_ratio(v, peers[v.pairs])
            q = statistics.quantiles([x / y for x, y in zip(v.times, peers[v.pairs].times)], n=4) \
                if len(v.times) > 1 else [r, r, r]
            rel = f"{r:.3f} [{q[0]:.3f}, {q[2]:.3f}]"
            if v.family == "psgdlib":
                verdict[v.pairs] = r
        lines.append(f"{v.name:28s} {1000 * t:8.2f} {t / bt:6.2f} {above:>14s} {v.peak / 2 ** 20:8.2f} "
                     f"{v.peak / bm:6.2f} {rel:>25s}".rstrip())
    return lines, verdict


# what the timed code is made of (a change elsewhere in the tree does not make the figures stale)
_TIMED_FILES = ("psgdlib/optim.py", "psgdlib/preconditioners.py", "psgdlib/pairs.py", "psgdlib/models",
                "psgdlib/tasks*.py", "benchmarks/peers.py")


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *_TIMED_FILES], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return out + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> str:
    out = [f"torch {torch.__version__}"]
    for dist in ("psgd-torch", "kron-torch"):
        try:
            from importlib.metadata import version
            out.append(f"{dist} {version(dist)}")
        except Exception:  # noqa: BLE001
            pass
    return ", ".join(out)


def quiet_malloc() -> str:
    """glibc: never trim the heap nor ``mmap`` a block below 1 GiB, so that the tensors an
    iteration frees are reused by the next without page faults (they cost ~7% of an RNN
    iteration here, in kernel time that varies with the machine's load).  Same for every
    optimizer; returns what was done, for the header."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-1, 2 ** 31 - 1) == 1 and libc.mallopt(-3, 2 ** 30) == 1   # M_TRIM/MMAP_THRESHOLD
    except (OSError, AttributeError):
        ok = False
    return "glibc malloc: no trim, no mmap below 1 GiB" if ok else "default malloc"


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    """Run the comparison and print it; returns ``{T: {pairs: psgdlib / psgd_torch}}``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", default="30,100,200", help="sequence lengths, comma-separated")
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--iters", type=int, default=100, help="timed rounds per T")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clock", choices=("cpu", "wall"), default=None,
                    help="cpu: this process's CPU time (default on the CPU: what the iteration "
                         "computes, not the time other processes take the core); wall: elapsed "
                         "time (default, and the only sensible one, on CUDA)")
    ap.add_argument("--before", default=None, help="also time the PSGD of this git revision (or folder)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's malloc as it is (default: see quiet_malloc)")
    ap.add_argument("--json", default=None, help="write every iteration's time (seconds) to this file")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes (T=10, hidden 8, batch 4, 3 rounds; kron_torch's torch.compile off)")
    a = ap.parse_args(argv)
    if a.quick:
        a.T, a.hidden, a.batch, a.iters, a.warmup = "10", 8, 4, 3, 1
        # kron_torch eager: no compile in a test
        importlib.import_module("torch._dynamo").config.disable = True
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    malloc = "default malloc" if a.default_malloc else quiet_malloc()
    device = torch.device(a.device)
    clock_name = a.clock or ("cpu" if device.type == "cpu" else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    vs = variants(a.before)
    Ts = [int(t) for t in a.T.split(",")]
    where = f"{device.type}, {a.threads} thread(s)" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"addition, RNN of eq. (1) (hidden {a.hidden}), batch {a.batch}, float32, {where}; {_versions()}")
    print(f"commit {_commit()}; {_cpu_name()}; {datetime.date.today().isoformat()}; "
          f"median of {a.iters} interleaved iterations after {a.warmup} warm-up; {clock_name} clock; {malloc}")
    verdicts, raw = {}, {}
    for T in Ts:
        measure(vs, T, a.hidden, a.batch, a.iters, a.warmup, device, clock)
        lines, verdicts[T] = table(vs, T)
        print("\n".join(lines), flush=True)
        raw[T] = {v.name: {"times_s": v.times, "peak_bytes": v.peak} for v in vs}
    if a.json:
        Path(a.json).write_text(json.dumps({"argv": sys.argv, "commit": _commit(), "clock": clock_name,
                                            "versions": _versions(), "runs": raw}, indent=1))
    for pairs in ("fd", "hvp"):
        rs = [verdicts[T][pairs] for T in Ts if pairs in verdicts[T]]
        if rs:
            ok = all(r <= 1.0 for r in rs)
            print(f"psgdlib {pairs} at or below psgd_torch {pairs} at every T: {'yes' if ok else 'no'} "
                  f"(paired ratios {', '.join(f'{r:.3f}' for r in rs)})")
    return verdicts


if __name__ == "__main__":
    main()
