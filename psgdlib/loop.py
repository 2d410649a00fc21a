"""The one training loop of every experiment (synthetic problems, Fig. 1, MNIST).

A run is a sequence of *evaluation periods*; a period is the minibatch closures to train on
(``closure() -> loss``, a 0-d tensor; the closure does not call ``backward``), after which the
experiment evaluates the model.  The loop does the rest, the same way for every experiment:

* **step**: update (4) through :class:`~psgdlib.PSGD` (``opt.step(closure)``; PSGD clips
  ``P g`` itself), or ``zero_grad``, ``backward``, clip ``g`` at norm ``clip``, ``step`` for a
  ``torch.optim`` optimizer (:func:`step`);
* **training loss**: the weighted mean over the period (float64 on the device, no host sync
  per iteration), and optionally the running mean of every ``log_every`` iterations;
* **non-finite losses**: one rule.  When the mean of a log window or of a period is NaN or
  infinite, the period ends there, the experiment's ``evaluate`` is told so
  (``finite=False``) and the run stops with reason ``"non_finite"``;
* **time**: ``state.train_time`` sums the seconds of the iterations (evaluations excluded,
  CUDA synchronized);
* **checkpoints**: after an evaluation, every ``Checkpoint.every`` iterations, atomically
  (:func:`psgdlib.utils.atomic_torch_save`); :func:`load_checkpoint` checks version and config
  and names the file; ``pause_after`` seconds save one and raise :class:`RunPaused`;
* **progress**: one tqdm bar over the run's iterations (:func:`progress_bar`).

``make_optimizer`` is the one factory of the optimizers.  PSGD's own random generator (the
perturbations ``v`` of its pairs) is seeded with ``seed``, which each experiment's config
states: the synthetic problems pass the run's seed, MNIST passes ``seed + 1``
(:data:`psgdlib.mnist.PSGD_SEED_OFFSET`).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from .optim import PSGD
from .utils import atomic_torch_save, configure_cpu, pick_device

__all__ = ["OPTIMIZERS", "make_optimizer", "step", "LoopState", "Checkpoint", "RunPaused",
           "NonFiniteLossError", "load_checkpoint", "prepare_device", "progress_bar", "run_periods", "sync"]

#: Optimizer names: PSGD with a Kronecker (eq. (5)), dense or diagonal preconditioner, ``psgd``
#: (its ``preconditioner`` argument, Kronecker by default), SGD and Adam (torch.optim).
OPTIMIZERS = ("psgd_kron", "psgd_dense", "psgd_diag", "psgd", "sgd", "adam")

Closure = Callable[[], Tensor]


def make_optimizer(name: str, params: Iterable[Tensor], lr: float, precond_lr: float = 0.01,
                   pairs: str = "hvp", clip: float | None = None, seed: int = 0, *,
                   preconditioner: str | None = None, update_every: int = 1) -> torch.optim.Optimizer:
    """``psgd_kron``/``psgd_dense``/``psgd_diag``/``psgd`` (:class:`~psgdlib.PSGD`, update (4),
    ``clip`` bounds ``||P g||`` and ``seed`` seeds its generator), ``sgd`` or ``adam``
    (torch.optim; their ``clip`` is applied to ``g`` by :func:`step`, not here).  PSGD fits its
    preconditioner on every ``update_every``-th step (1: every step, the paper's)."""
    if name.startswith("psgd"):
        kind = name[5:] if name != "psgd" else (preconditioner or "kron")
        if name != "psgd" and preconditioner not in (None, kind):
            raise ValueError(f"optimizer {name!r} and preconditioner={preconditioner!r} disagree")
        if kind not in ("kron", "dense", "diag"):
            raise ValueError(f"unknown optimizer {name!r} or preconditioner {kind!r}; choose one of "
                             f"{OPTIMIZERS} and a preconditioner 'kron', 'dense' or 'diag'")
        return PSGD(params, lr=lr, precond_lr=precond_lr, preconditioner=kind, pairs=pairs,
                    clip_norm=None if clip is None else float(clip), seed=seed, update_every=update_every)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def step(opt: torch.optim.Optimizer, params: Sequence[Tensor], closure: Closure,
         clip: float | None = None) -> Tensor:
    """One iteration; returns the minibatch loss (detached 0-d tensor).  PSGD: update (4)
    from the closure's loss; otherwise back-propagate, clip ``||g||`` at ``clip``, step."""
    if isinstance(opt, PSGD):
        return opt.step(closure).detach()
    opt.zero_grad(set_to_none=True)
    loss = closure()
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return loss.detach()


def prepare_device(device: torch.device | str | None) -> torch.device:
    """``device`` (default CUDA when available, else CPU); on a CPU, denormals are flushed
    (:func:`psgdlib.utils.configure_cpu`)."""
    device = pick_device(device)
    if device.type == "cpu":
        configure_cpu()
    return device


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (so that timings cover it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class LoopState:
    """What the loop itself carries: iterations done and training seconds (evaluations
    excluded).  Experiments extend it with their curves and counters."""
    it: int = 0
    train_time: float = 0.0


class RunPaused(Exception):
    """Raised when ``pause_after`` seconds have passed: the run's state is in its checkpoint,
    and starting the run again with the same checkpoint continues it."""

    def __init__(self, checkpoint: Path, iteration: int):
        super().__init__(f"paused at iteration {iteration}; state saved in {checkpoint}")
        self.checkpoint, self.iteration = checkpoint, iteration


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite.

    ``partial`` is what the run did before it diverged, in the form
    :func:`psgdlib.train.train` returns (``stopped="non_finite"``, ``iterations_run``,
    ``wall_time`` and the curve of every finite evaluation; ``final_test_error`` is None: the
    weights are no longer finite), or None."""

    def __init__(self, message: str, partial: dict[str, Any] | None = None):
        super().__init__(message)
        self.partial = partial


@dataclass
class Checkpoint:
    """Where and how often a run saves its state: ``save()`` writes it to ``path`` (taken
    after an evaluation, so no partial sums), at the first evaluation ``every`` iterations
    after the last save; ``at_stop`` also saves when the run stops (MNIST extends finished
    runs from it)."""
    path: Path
    save: Callable[[], None]
    every: int = 1
    at_stop: bool = False


def load_checkpoint(path: str | os.PathLike, version: int, config: Mapping[str, Any],
                    ignore: Sequence[str] = (), weights_only: bool = False) -> dict[str, Any]:
    """The checkpoint dict stored at ``path``; ``ValueError`` naming the file when it cannot
    be read, has another ``version``, or belongs to another run (its ``config`` differs from
    ``config`` in a key outside ``ignore``)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:   # truncated or foreign file: say which one
        raise ValueError(f"{path}: not a readable training checkpoint ({e}); delete it to restart "
                         "the run") from e
    if not isinstance(ck, dict) or ck.get("version") != version:
        found = ck.get("version") if isinstance(ck, dict) else type(ck).__name__
        raise ValueError(f"{path}: checkpoint version {found}, expected {version}")
    old = {k: v for k, v in ck["config"].items() if k not in ignore}
    new = {k: v for k, v in config.items() if k not in ignore}
    if old != new:
        diff = {k: (old.get(k), new.get(k)) for k in {**old, **new} if old.get(k) != new.get(k)}
        raise ValueError(f"{path} belongs to another run, written with another configuration "
                         f"(checkpoint vs now: {diff}); delete it or use another folder")
    return ck


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
    """A tqdm bar over a run's iterations (inert when not ``enabled``)."""
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not enabled, leave=False, desc=desc,
                dynamic_ncols=True)


class _LossMeter:
    """Weighted sum of minibatch losses on the device (float64), read once per period."""

    def __init__(self, device: torch.device):
        self.sum = torch.zeros((), dtype=torch.float64, device=device)
        self.weight = 0

    def add(self, loss: Tensor, weight: int | None) -> None:
        self.sum += loss if weight is None else loss * weight
        self.weight += 1 if weight is None else weight

    def mean(self) -> float:
        return float(self.sum.item()) / max(self.weight, 1)


Period = Iterable[tuple[Closure, "int | None"]]
Evaluate = Callable[[LoopState, float, bool], "str | None"]


def _train_period(opt, params, clip, batches: Period, st: LoopState, device, bar,
                  log_every: int | None, on_log: Callable[[LoopState, float], None] | None) -> tuple[float, bool]:
    """The iterations of one period; returns the mean training loss and whether every log
    window's mean was finite (the period ends at the first non-finite one)."""
    meter, window = _LossMeter(device), _LossMeter(device)
    batches = iter(batches)
    while True:
        t0 = time.perf_counter()
        item = next(batches, None)
        if item is None:
            break
        closure, weight = item
        loss = step(opt, params, closure, clip)
        meter.add(loss, weight)
        st.it += 1
        sync(device)
        st.train_time += time.perf_counter() - t0
        if log_every is not None:
            window.add(loss, None)
            if window.weight == log_every:
                mean = window.mean()
                if on_log is not None:
                    on_log(st, mean)
                bar.set_postfix(loss=f"{mean:.4g}")
                window = _LossMeter(device)
                if not math.isfinite(mean):
                    return meter.mean(), False
        bar.update(1)
    mean = meter.mean()
    return mean, math.isfinite(mean)


def run_periods(opt: torch.optim.Optimizer, params: Sequence[Tensor], clip: float | None,
                periods: Iterable[Period], st: LoopState, evaluate: Evaluate, *,
                device: torch.device, bar, checkpoint: Checkpoint | None = None,
                pause_after: float | None = None, log_every: int | None = None,
                on_log: Callable[[LoopState, float], None] | None = None) -> str:
    """Train ``periods`` (each an iterable of ``(closure, weight)``; ``weight`` is the
    minibatch size the period's mean loss weighs the loss by, or None for 1), calling
    ``evaluate(state, mean_train_loss, finite)`` after each; returns why the run stopped:
    what ``evaluate`` returned (e.g. ``"solved"``, ``"budget"``), ``"non_finite"``, or
    ``"budget"`` when the periods run out.  See the module docstring for the rest."""
    started = time.perf_counter()
    last_save = st.it
    for batches in periods:
        mean, finite = _train_period(opt, params, clip, batches, st, device, bar, log_every, on_log)
        stopped = evaluate(st, mean, finite)
        if not finite:
            stopped = "non_finite"
        if stopped is not None:
            if checkpoint is not None and checkpoint.at_stop:
                checkpoint.save()
            return stopped
        pause = pause_after is not None and time.perf_counter() - started > pause_after
        if checkpoint is not None and (st.it - last_save >= checkpoint.every or pause):
            checkpoint.save()
            last_save = st.it
        if pause:
            if checkpoint is None:
                raise ValueError("pause_after needs a checkpoint path to save the run's state in")
            raise RunPaused(checkpoint.path, st.it)
    return "budget"
