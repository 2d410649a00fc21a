"""One training loop for every optimizer on the synthetic problems (Experiments 1 and 2).

Fresh minibatch every iteration, test-set evaluation every ``eval_every``
iterations, stop when solved (< 1% of the test set wrong); the first
iteration with < 0.1% wrong is recorded too (spec, "Common conventions").
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import tasks as _tasks
from .models import LSTM, RNN
from .optim import PSGD
from .utils import atomic_torch_save, configure_cpu, pick_device

__all__ = ["OPTIMIZERS", "MODELS", "TrainConfig", "NonFiniteLossError", "build_model", "make_optimizer", "train",
           "SOLVED", "SOLVED_STRICT", "RunPaused"]

OPTIMIZERS = ("psgd_kron", "psgd_dense", "psgd_diag", "sgd", "adam")
MODELS = ("rnn", "lstm")   # the RNN of eq. (1) (the paper's model); an LSTM baseline
SOLVED = 0.01          # solved: fewer than 1% of the test sequences wrong
SOLVED_STRICT = 0.001  # also recorded: the first evaluation below 0.1%


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite.

    ``partial`` is what the run did before it diverged, in the form :func:`train` returns
    (``stopped="non_finite"``, ``iterations_run``, ``wall_time`` and the curve of every finite
    evaluation; ``final_test_error`` is None: the weights are no longer finite), or None."""

    def __init__(self, message: str, partial: dict[str, Any] | None = None):
        super().__init__(message)
        self.partial = partial


@dataclass
class TrainConfig:
    """Everything that defines one run (stored verbatim in result files)."""
    problem: str
    T: int
    optimizer: str = "psgd_kron"
    seed: int = 0
    hidden: int = 100
    iterations: int = 100_000          # the budget (paper: 10^5)
    batch_size: int | None = None      # None: the task's default (100; 32 for 5-bit memorization)
    lr: float | None = None            # None: 0.01 (paper) for PSGD and SGD, 0.001 for Adam
    precond_lr: float = 0.01
    pairs: str = "finite_difference"  # the paper's pairs; 2x cheaper than hvp per iteration
    clip: float | None = None          # None: 1.0 for SGD (paper), off for PSGD and Adam
    eval_every: int = 100
    n_test: int = 10_000
    dtype: str = "float32"
    init_std: float = 0.1
    zero_sum_outputs: bool | None = None  # None: on for 5-bit memorization only (paper)
    stop_when_solved: bool = True      # False: go on after < 1% wrong, until < 0.1% or the budget (Fig. 1)
    model: str = "rnn"                 # "rnn": eq. (1); "lstm": the LSTM baseline

    def resolved(self) -> "TrainConfig":
        """A copy with every ``None`` default filled in."""
        c = TrainConfig(**asdict(self))
        task = _tasks.get(c.problem, c.T)
        if c.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {c.optimizer!r}; choose one of {OPTIMIZERS}")
        if c.model not in MODELS:
            raise ValueError(f"unknown model {c.model!r}; choose one of {MODELS}")
        if c.iterations < 1 or c.eval_every < 1 or c.hidden < 1 or c.n_test < 1:
            raise ValueError("iterations, eval_every, hidden and n_test must be >= 1")
        if c.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {c.dtype!r}")
        c.batch_size = c.batch_size or task.default_batch_size
        if c.lr is None:
            c.lr = 0.001 if c.optimizer == "adam" else 0.01
        if c.clip is None and c.optimizer == "sgd":
            c.clip = 1.0
        if c.zero_sum_outputs is None:
            c.zero_sum_outputs = c.problem == "memorization_5bit"
        return c


def build_model(task: _tasks.Task, hidden: int, seed: int, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None, init_std: float = 0.1,
                zero_sum_outputs: bool = False, model: str = "rnn") -> RNN:
    """The RNN of eq. (1) (``model="rnn"``) or the LSTM baseline (``"lstm"``) for ``task``;
    the initial weights depend on ``seed`` only."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {MODELS}")
    gen = torch.Generator().manual_seed(seed)
    cls = RNN if model == "rnn" else LSTM
    return cls(task.input_dim, hidden, task.output_dim, init_std=init_std,
               zero_sum_outputs=zero_sum_outputs, dtype=dtype, generator=gen).to(device)


def make_optimizer(name: str, params, lr: float, precond_lr: float = 0.01, pairs: str = "hvp",
                   clip: float | None = None, seed: int = 0) -> torch.optim.Optimizer:
    """``psgd_kron``/``psgd_dense``/``psgd_diag`` (update (4)), ``sgd`` or ``adam`` (torch.optim)."""
    if name.startswith("psgd_"):
        return PSGD(params, lr=lr, precond_lr=precond_lr, preconditioner=name[5:], pairs=pairs,
                    clip_norm=clip, seed=seed)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


@dataclass
class History:
    iteration: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)   # mean over the last eval_every iterations
    test_error: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    wall_time: list[float] = field(default_factory=list)    # seconds since the start, evaluations excluded


def _evaluate(task: _tasks.Task, model: RNN, n_test: int, device, dtype) -> tuple[float, float]:
    """Test error and loss.  Screens on the first chunk (1000 sequences, the prefix of the
    test set): when that chunk alone already has >= 5% wrong, the run cannot be solved and
    the chunk's numbers are returned; otherwise the full test set is evaluated (the solved
    decision is always made on the full set)."""
    model.eval()
    chunk = min(1000, n_test)
    res = task.evaluate(model, n=chunk, chunk=chunk, device=device, dtype=dtype)
    if res.error_rate < 0.05 and n_test > chunk:
        res = task.evaluate(model, n=n_test, chunk=chunk, device=device, dtype=dtype)
    model.train()
    return res.error_rate, res.loss


CHECKPOINT_VERSION = 1


@dataclass
class _State:
    """Everything a run carries from one iteration to the next besides model and optimizer."""
    it: int = 0
    train_time: float = 0.0
    solved_at: int | None = None
    strict_at: int | None = None
    hist: History = field(default_factory=History)


def _save_checkpoint(path: Path, c: TrainConfig, model, opt, data_gen: torch.Generator, st: _State) -> None:
    """Write the run's whole state (taken at an evaluation, so no partial loss sums) atomically:
    ``torch.save`` to a temporary file in the same folder, then ``os.replace``."""
    obj = {"version": CHECKPOINT_VERSION, "config": asdict(c), "model": model.state_dict(),
           "optimizer": opt.state_dict(), "data_rng": data_gen.get_state(),
           "torch_rng": torch.get_rng_state(), "state": asdict(st)}
    atomic_torch_save(obj, path)


def _load_checkpoint(path: Path, c: TrainConfig, model, opt, data_gen: torch.Generator) -> _State:
    """Restore a run from ``path`` (see :func:`_save_checkpoint`); refuses another config."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:   # truncated or foreign file: say which one
        raise ValueError(f"{path}: not a readable training checkpoint ({e}); delete it to restart the run") from e
    if ck.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {ck.get('version')}, expected {CHECKPOINT_VERSION}")
    if ck["config"] != asdict(c):
        diff = {k: (ck["config"].get(k), v) for k, v in asdict(c).items() if ck["config"].get(k) != v}
        raise ValueError(f"{path} belongs to another run (checkpoint vs now: {diff})")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    data_gen.set_state(ck["data_rng"])
    torch.set_rng_state(ck["torch_rng"])
    st = dict(ck["state"])
    st["hist"] = History(**st["hist"])
    return _State(**st)


class RunPaused(Exception):
    """Raised by :func:`train` when ``pause_after`` seconds have passed: the run's state is in
    its checkpoint, and calling :func:`train` again with the same checkpoint continues it."""

    def __init__(self, checkpoint: Path, iteration: int):
        super().__init__(f"paused at iteration {iteration}; state saved in {checkpoint}")
        self.checkpoint, self.iteration = checkpoint, iteration


def train(config: TrainConfig, device: torch.device | str | None = None, progress: bool = True,
          max_seconds: float | None = None, model: RNN | None = None,
          checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 2000,
          pause_after: float | None = None) -> dict[str, Any]:
    """Train one run; returns a JSON-ready dict (config, outcome, curve, wall time).

    Stops when solved, at the iteration budget, or after ``max_seconds`` of training
    (then ``stopped`` says so and the effective budget is ``iterations_run``).
    Raises :class:`NonFiniteLossError` when the loss becomes NaN/inf.

    With ``checkpoint`` (a file path) the whole state (model, optimizer with its random
    generators, the minibatch generator, torch's global generator, the curve and counters) is
    saved there atomically at the first evaluation after every ``checkpoint_every`` iterations,
    and a run finds it and continues from it: an interrupted and resumed run gives results
    bit-identical to an uninterrupted one.  ``pause_after`` (seconds of wall time in this call)
    saves a checkpoint at the next evaluation and raises :class:`RunPaused`.
    """
    c = config.resolved()
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    device = pick_device(device)
    if device.type == "cpu":
        configure_cpu()
    dtype = getattr(torch, c.dtype)
    task = _tasks.get(c.problem, c.T)
    if model is None:
        model = build_model(task, c.hidden, c.seed, dtype, device, c.init_std, c.zero_sum_outputs, c.model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(c.optimizer, params, c.lr, c.precond_lr, c.pairs,
                         c.clip if c.optimizer.startswith("psgd") else None, seed=c.seed)
    data_gen = torch.Generator().manual_seed(1_000_003 * (c.seed + 1))
    ckpt = Path(checkpoint) if checkpoint is not None else None
    st = _load_checkpoint(ckpt, c, model, opt, data_gen) if ckpt is not None and ckpt.exists() else _State()
    bar = tqdm(total=c.iterations, initial=st.it, disable=not progress, leave=False,
               desc=f"{c.problem} T={c.T} {c.optimizer} s{c.seed}")
    try:
        stopped = _loop(c, task, model, opt, params, data_gen, st, device, dtype, bar, max_seconds,
                        ckpt, checkpoint_every, pause_after)
    finally:
        bar.close()
    return _result(c, st.hist, st.solved_at, st.strict_at, st.it, stopped, st.train_time)


def _loop(c: TrainConfig, task, model, opt, params, data_gen, st: _State, device, dtype, bar,
          max_seconds, ckpt: Path | None, checkpoint_every: int, pause_after: float | None) -> str:
    """The iterations of :func:`train` from ``st.it`` on; returns why it stopped."""
    is_psgd = isinstance(opt, PSGD)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    loss_count = 0
    last_ckpt = st.it
    started = time.perf_counter()
    while st.it < c.iterations:
        t0 = time.perf_counter()
        batch = task.sample(c.batch_size, generator=data_gen, device=device, dtype=dtype)

        def closure():
            return task.loss(model(batch.inputs), batch)

        if is_psgd:
            loss = opt.step(closure)
        else:
            opt.zero_grad(set_to_none=True)
            loss = closure()
            loss.backward()
            if c.clip is not None:
                torch.nn.utils.clip_grad_norm_(params, c.clip)
            opt.step()
        loss_sum += loss.detach()
        loss_count += 1
        st.it += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        st.train_time += time.perf_counter() - t0
        bar.update(1)
        if st.it % c.eval_every and st.it != c.iterations:
            continue
        stopped = _evaluation(c, task, model, st, float(loss_sum) / loss_count, device, dtype, bar)
        loss_sum.zero_()
        loss_count = 0
        if stopped is None and max_seconds is not None and st.train_time > max_seconds:
            stopped = "time_limit"
        if stopped is not None:
            return stopped
        if st.it >= c.iterations:
            break
        pause = pause_after is not None and time.perf_counter() - started > pause_after
        if ckpt is not None and (st.it - last_ckpt >= checkpoint_every or pause):
            _save_checkpoint(ckpt, c, model, opt, data_gen, st)
            last_ckpt = st.it
        if pause:
            if ckpt is None:
                raise ValueError("pause_after needs a checkpoint path to save the run's state in")
            raise RunPaused(ckpt, st.it)
    return "budget"


def _evaluation(c: TrainConfig, task, model, st: _State, mean_loss: float, device, dtype, bar) -> str | None:
    """Record one point of the curve; returns the reason to stop, or None to go on.
    Raises :class:`NonFiniteLossError` (with the run so far) on a non-finite training loss."""
    if not math.isfinite(mean_loss):
        msg = (f"{c.problem} T={c.T} {c.optimizer} seed {c.seed}: the training "
               f"loss became non-finite before iteration {st.it}")
        partial = _result(c, st.hist, st.solved_at, st.strict_at, st.it, "non_finite", st.train_time)
        partial.update(final_test_error=None, error=msg)
        raise NonFiniteLossError(msg, partial)
    err, tl = _evaluate(task, model, c.n_test, device, dtype)
    h = st.hist
    h.iteration.append(st.it)
    h.train_loss.append(mean_loss)
    h.test_error.append(err)
    h.test_loss.append(tl)
    h.wall_time.append(st.train_time)
    bar.set_postfix(loss=f"{mean_loss:.3g}", err=f"{err:.3f}")
    if err < SOLVED_STRICT and st.strict_at is None:
        st.strict_at = st.it
    if err < SOLVED and st.solved_at is None:
        st.solved_at = st.it
        if c.stop_when_solved:
            return "solved"
    if not c.stop_when_solved and st.strict_at is not None:
        return "solved_0.1pct"
    return None


def _result(c: TrainConfig, hist: History, solved_at: int | None, strict_at: int | None, it: int,
            stopped: str, train_time: float) -> dict[str, Any]:
    """The JSON-ready outcome of a run (what :func:`train` returns)."""
    return {
        "config": asdict(c),
        "solved": solved_at is not None,
        "iterations_to_solve": solved_at,
        "iterations_to_0.1pct": strict_at,
        "iterations_run": it,
        "stopped": stopped,
        "final_test_error": hist.test_error[-1] if hist.test_error else None,
        "wall_time": train_time,
        "seconds_per_iteration": train_time / max(it, 1),
        "curve": asdict(hist),
    }
