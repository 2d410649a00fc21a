"""Synthetic problems (Experiments 1 and 2): the run config, the model, and how a run is scored.

A fresh minibatch every iteration (from a generator seeded by :func:`data_seed`), a test-set
evaluation every ``eval_every`` iterations (:func:`evaluate_test_set`), stop when solved
(< 1% of the test sequences wrong, :data:`SOLVED`); the first evaluation with < 0.1% wrong
(:data:`SOLVED_STRICT`) is recorded too.  The iterations themselves (step, clipping,
checkpoints, pauses, non-finite losses, progress) are :func:`psgdlib.loop.run_periods`'s; the
result is a :class:`psgdlib.results.RunResult`.  PSGD's own generator is seeded with the run's
``seed`` (see :func:`psgdlib.loop.make_optimizer`).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from . import tasks as _tasks
from .loop import (Checkpoint, LoopState, NonFiniteLossError, RunPaused, load_checkpoint,
                   make_optimizer, prepare_device, progress_bar, run_periods)
from .models import LSTM, RNN
from .results import SCREEN_ERROR, SCREEN_N, RunResult, infer_n_test
from .utils import atomic_torch_save

__all__ = ["OPTIMIZERS", "MODELS", "TrainConfig", "NonFiniteLossError", "build_model", "make_optimizer",
           "train", "SOLVED", "SOLVED_STRICT", "RunPaused", "data_seed", "evaluate_test_set",
           "CHECKPOINT_VERSION"]

OPTIMIZERS = ("psgd_kron", "psgd_dense", "psgd_diag", "sgd", "adam")
MODELS = ("rnn", "lstm")   # the RNN of eq. (1) (the paper's model); an LSTM baseline
SOLVED = 0.01          # solved: fewer than 1% of the test sequences wrong
SOLVED_STRICT = 0.001  # also recorded: the first evaluation below 0.1%
CHECKPOINT_VERSION = 1


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
    #: True: stop at the first evaluation with < 1% wrong.  False (Fig. 1): go on after that,
    #: and stop at the first evaluation with < 0.1% wrong or at the budget.
    stop_when_solved: bool = True
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


def data_seed(seed: int) -> int:
    """Seed of the minibatch generator of run ``seed``: ``1,000,003 (seed + 1)`` (so the runs
    of every optimizer with one seed see the same minibatches, and seed 0 is not 0)."""
    return 1_000_003 * (seed + 1)


@dataclass
class History:
    """The learning curve: one entry per evaluation."""
    iteration: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)   # mean over the last eval_every iterations
    test_error: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    wall_time: list[float] = field(default_factory=list)    # seconds since the start, evaluations excluded
    n_test: list[int] = field(default_factory=list)         # test sequences scored


def evaluate_test_set(task: _tasks.Task, model: RNN, n_test: int, device, dtype) -> tuple[float, float, int]:
    """Test error, loss and the number of sequences scored.  Screens on the first chunk
    (:data:`~psgdlib.results.SCREEN_N` = 1000 sequences, the prefix of the test set): when that
    chunk alone already has >= 5% wrong, the run cannot be solved and the chunk's numbers are
    returned; otherwise the full test set is evaluated (the solved decision is always made on
    the full set)."""
    model.eval()
    chunk = min(SCREEN_N, n_test)
    res = task.evaluate(model, n=chunk, chunk=chunk, device=device, dtype=dtype)
    if res.error_rate < SCREEN_ERROR and n_test > chunk:
        res = task.evaluate(model, n=n_test, chunk=chunk, device=device, dtype=dtype)
    model.train()
    return res.error_rate, res.loss, res.n


@dataclass
class _State(LoopState):
    """Everything a run carries from one iteration to the next besides model and optimizer."""
    solved_at: int | None = None
    strict_at: int | None = None
    hist: History = field(default_factory=History)


def _save_checkpoint(path: Path, c: TrainConfig, model, opt, data_gen: torch.Generator, st: _State) -> None:
    """Write the run's whole state (taken at an evaluation, so no partial loss sums) atomically."""
    obj = {"version": CHECKPOINT_VERSION, "config": asdict(c), "model": model.state_dict(),
           "optimizer": opt.state_dict(), "data_rng": data_gen.get_state(),
           "torch_rng": torch.get_rng_state(), "state": asdict(st)}
    atomic_torch_save(obj, path)


def _load_checkpoint(path: Path, c: TrainConfig, model, opt, data_gen: torch.Generator) -> _State:
    """Restore a run from ``path`` (see :func:`_save_checkpoint`); refuses another config.  A
    checkpoint written before the curve recorded ``n_test`` gets it inferred
    (:func:`psgdlib.results.infer_n_test`)."""
    ck = load_checkpoint(path, CHECKPOINT_VERSION, asdict(c))
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    data_gen.set_state(ck["data_rng"])
    torch.set_rng_state(ck["torch_rng"])
    st = dict(ck["state"])
    hist = dict(st["hist"])
    hist.setdefault("n_test", infer_n_test(hist["test_error"], c.n_test))
    st["hist"] = History(**hist)
    return _State(**st)


def _minibatches(c: TrainConfig, task, model, data_gen, n: int, device, dtype) -> Iterator:
    """``n`` iterations' loss closures on fresh minibatches (drawn when the loop asks)."""
    for _ in range(n):
        batch = task.sample(c.batch_size, generator=data_gen, device=device, dtype=dtype)
        yield (lambda b=batch: task.loss(model(b.inputs), b)), None


def _periods(c: TrainConfig, task, model, data_gen, st: _State, device, dtype) -> Iterator:
    """Evaluation periods: up to the next multiple of ``eval_every`` or the budget."""
    while st.it < c.iterations:
        n = min(c.eval_every - st.it % c.eval_every, c.iterations - st.it)
        yield _minibatches(c, task, model, data_gen, n, device, dtype)


def _evaluation(c: TrainConfig, task, model, st: _State, mean_loss: float, device, dtype, bar,
                max_seconds: float | None) -> str | None:
    """Record one point of the curve; returns the reason to stop, or None to go on."""
    err, tl, n = evaluate_test_set(task, model, c.n_test, device, dtype)
    for name, v in (("iteration", st.it), ("train_loss", mean_loss), ("test_error", err),
                    ("test_loss", tl), ("wall_time", st.train_time), ("n_test", n)):
        getattr(st.hist, name).append(v)
    bar.set_postfix(loss=f"{mean_loss:.3g}", err=f"{err:.3f}")
    if err < SOLVED_STRICT and st.strict_at is None:
        st.strict_at = st.it
    if err < SOLVED and st.solved_at is None:
        st.solved_at = st.it
        if c.stop_when_solved:
            return "solved"
    if not c.stop_when_solved and st.strict_at is not None:
        return "solved_0.1pct"
    if max_seconds is not None and st.train_time > max_seconds:
        return "time_limit"
    return "budget" if st.it >= c.iterations else None


def train(config: TrainConfig, device: torch.device | str | None = None, progress: bool = True,
          max_seconds: float | None = None, model: RNN | None = None,
          checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 2000,
          pause_after: float | None = None) -> dict[str, Any]:
    """Train one run; returns its :class:`~psgdlib.results.RunResult` as a JSON-ready dict.

    Stops when solved (see :attr:`TrainConfig.stop_when_solved`), at the iteration budget, or
    after ``max_seconds`` of training (then ``stopped`` says so and the effective budget is
    ``iterations_run``).  Raises :class:`NonFiniteLossError` (its ``partial`` is the run so
    far) when the mean training loss of an evaluation period becomes NaN/inf.

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
    device = prepare_device(device)
    dtype = getattr(torch, c.dtype)
    task = _tasks.get(c.problem, c.T)
    if model is None:
        model = build_model(task, c.hidden, c.seed, dtype, device, c.init_std, c.zero_sum_outputs, c.model)
    params = [p for p in model.parameters() if p.requires_grad]
    psgd = c.optimizer.startswith("psgd")
    opt = make_optimizer(c.optimizer, params, c.lr, c.precond_lr, c.pairs, c.clip if psgd else None, seed=c.seed)
    data_gen = torch.Generator().manual_seed(data_seed(c.seed))
    ckpt = Path(checkpoint) if checkpoint is not None else None
    st = _load_checkpoint(ckpt, c, model, opt, data_gen) if ckpt is not None and ckpt.exists() else _State()
    saver = None if ckpt is None else Checkpoint(
        ckpt, lambda: _save_checkpoint(ckpt, c, model, opt, data_gen, st), every=checkpoint_every)
    bar = progress_bar(c.iterations, st.it, f"{c.problem} T={c.T} {c.optimizer} s{c.seed}", progress)
    try:
        stopped = run_periods(
            opt, params, None if psgd else c.clip, _periods(c, task, model, data_gen, st, device, dtype), st,
            lambda s, loss, finite: _evaluation(c, task, model, st, loss, device, dtype, bar, max_seconds)
            if finite else None, device=device, bar=bar, checkpoint=saver, pause_after=pause_after)
    finally:
        bar.close()
    if stopped == "non_finite":
        msg = (f"{c.problem} T={c.T} {c.optimizer} seed {c.seed}: the training "
               f"loss became non-finite before iteration {st.it}")
        partial = _result(c, st, "non_finite")
        partial.update(final_test_error=None, error=msg)
        raise NonFiniteLossError(msg, partial)
    return _result(c, st, stopped)


def _result(c: TrainConfig, st: _State, stopped: str) -> dict[str, Any]:
    """The JSON-ready outcome of a run (what :func:`train` returns)."""
    h = st.hist
    return RunResult(
        config=asdict(c), solved=st.solved_at is not None, iterations_to_solve=st.solved_at,
        iterations_to_strict=st.strict_at, iterations_run=st.it, stopped=stopped,
        final_test_error=h.test_error[-1] if h.test_error else None, wall_time=st.train_time,
        seconds_per_iteration=st.train_time / max(st.it, 1), curve=asdict(h)).to_dict()
