"""Epoch-based training of a classifier through :func:`psgdlib.loop.run_periods` (Experiment 3):
one evaluation period per epoch of shuffled minibatches, the test set scored before the first
epoch and after each, and a checkpoint after every epoch (format version 1: the model, the
optimizer, every random generator, the history and the training log) from which a run resumes
bit-identically, or is extended by more epochs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import batches
from .loop import Checkpoint, LoopState, load_checkpoint, progress_bar, run_periods
from .utils import atomic_torch_save

__all__ = ["EpochState", "CHECKPOINT_VERSION", "save_checkpoint", "restore_checkpoint", "train_epochs"]

CHECKPOINT_VERSION = 1
Evaluate = Callable[[torch.nn.Module, Tensor, Tensor], "tuple[float, float]"]
Transform = Callable[[Tensor], Tensor]


@dataclass
class EpochState(LoopState):
    """A run's state besides model and optimizer (what the per-epoch checkpoint holds)."""
    epoch: int = 0
    diverged: bool = False
    history: dict[str, list] = field(default_factory=lambda: {k: [] for k in _HISTORY})
    train_log: dict[str, list] = field(default_factory=lambda: {"iteration": [], "loss": []})


_HISTORY = ("epoch", "iteration", "test_error", "test_loss", "train_loss", "epoch_time_s", "train_time_s",
            "eval_time_s")


def save_checkpoint(path: Path, config: dict, model, opt, data_gen: torch.Generator, st: EpochState, device,
                    aug_gen: torch.Generator | None = None) -> None:
    """The per-epoch checkpoint (format version 1, as for the stored runs; ``rng["aug"]``, the
    generator of the random shifts, only when there is one)."""
    rng = dict(data=data_gen.get_state(), torch=torch.get_rng_state(),
               cuda=torch.cuda.get_rng_state(device) if device.type == "cuda" else None)
    if aug_gen is not None:
        rng["aug"] = aug_gen.get_state()
    ck = dict(version=CHECKPOINT_VERSION, config=config, epoch=st.epoch, iteration=st.it,
              model=model.state_dict(), optimizer=opt.state_dict(), rng=rng,
              history=st.history, train_log=st.train_log, train_time_s=st.train_time, diverged=st.diverged)
    atomic_torch_save(ck, path)


def restore_checkpoint(path: Path, config: dict, model, opt, data_gen: torch.Generator, device,
                       aug_gen: torch.Generator | None = None, extendable: bool = True) -> EpochState:
    """Resume from the checkpoint of :func:`save_checkpoint`; another configuration is refused,
    naming the file (``epochs`` aside when ``extendable``: a larger one extends the run)."""
    ck = load_checkpoint(path, CHECKPOINT_VERSION, config, ignore=("epochs",) if extendable else (),
                         weights_only=True)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    data_gen.set_state(ck["rng"]["data"])
    if aug_gen is not None:
        if "aug" not in ck["rng"]:
            raise ValueError(f"{path}: the checkpoint holds no generator of the random shifts")
        aug_gen.set_state(ck["rng"]["aug"])
    torch.set_rng_state(ck["rng"]["torch"])
    if device.type == "cuda" and ck["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(ck["rng"]["cuda"], device)
    return EpochState(it=ck["iteration"], train_time=ck["train_time_s"], epoch=ck["epoch"], diverged=ck["diverged"],
                history=ck["history"], train_log=ck["train_log"])


def _record(st: EpochState, model, evaluate: Evaluate, xte: Tensor, yte: Tensor, train_loss: float | None,
            epoch_time: float, say) -> None:
    """Evaluate on the test images and append one entry to the history (epoch ``st.epoch``)."""
    t0 = time.perf_counter()
    err, loss = evaluate(model, xte, yte)
    for k, v in (("epoch", st.epoch), ("iteration", st.it), ("test_error", err), ("test_loss", loss),
                 ("train_loss", train_loss), ("epoch_time_s", epoch_time), ("train_time_s", st.train_time),
                 ("eval_time_s", time.perf_counter() - t0)):
        st.history[k].append(v)
    tl = "   -  " if train_loss is None else f"{train_loss:.4f}"
    say(f"epoch {st.epoch:3d}  train loss {tl}  test error {100 * err:6.2f}%  test loss {loss:.4f}  "
        f"({epoch_time:.1f} s train)")


def _epochs(model, xtr: Tensor, ytr: Tensor, batch_size: int, data_gen: torch.Generator, st: EpochState,
            epochs: int, transform: Transform | None, at_epoch_start: Callable[[int], None] | None) -> Iterator:
    """The loop's evaluation periods: one epoch of shuffled minibatches each (loss closures
    weighted by the minibatch size), until ``epochs`` or a divergence.  ``at_epoch_start(e)``
    runs before epoch ``e`` (1-based; e.g. sets the step size); ``transform`` maps each
    minibatch of images once (the closure, called twice for finite-difference pairs, reuses it)."""
    while st.epoch < epochs and not st.diverged:
        model.train()
        if at_epoch_start is not None:
            at_epoch_start(st.epoch + 1)
        yield (((lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb)), int(yb.shape[0]))
               for xb, yb in _mapped(batches(xtr, ytr, batch_size, generator=data_gen), transform))


def _mapped(it: Iterator[tuple[Tensor, Tensor]], transform: Transform | None) -> Iterator[tuple[Tensor, Tensor]]:
    for xb, yb in it:
        yield (xb if transform is None else transform(xb)), yb


def train_epochs(model, opt, clip: float | None, tensors: tuple[Tensor, Tensor, Tensor, Tensor], st: EpochState,
                 saver: Checkpoint | None, data_gen: torch.Generator, evaluate: Evaluate, o: dict[str, Any]) -> None:
    """Epochs ``st.epoch + 1 .. o["epochs"]`` of ``(train images, train labels)`` through the
    loop (``clip``: of ``g``, for a torch.optim optimizer), scoring ``evaluate(model, test
    images, test labels) -> (error, loss)`` after each (and before the first, unless resumed).
    ``o``: ``epochs``, ``batch_size``, ``log_every``, ``device``, ``progress``, ``name`` (the
    prefix of the per-epoch lines), ``verbose``, and optionally ``transform`` (of each training
    minibatch) and ``at_epoch_start`` (see :func:`_epochs`)."""
    xtr, ytr, xte, yte = tensors
    progress = o["progress"]

    def say(msg: str) -> None:
        if o["verbose"]:
            _write(f"[{o['name']}] {msg}", progress)

    def evaluation(s: EpochState, train_loss: float, finite: bool) -> None:
        s.epoch += 1
        s.diverged = not finite
        _record(s, model, evaluate, xte, yte, train_loss, s.train_time - s.history["train_time_s"][-1], say)
        # the step of the epoch just trained (None at epoch 0; absent from runs stored before it)
        s.history.setdefault("lr", [None] * (len(s.history["epoch"]) - 1)).append(opt.param_groups[0]["lr"])
        if s.diverged:
            say("the training loss is not finite: stopping (diverged)")

    def log(s: EpochState, mean: float) -> None:
        s.train_log["iteration"].append(s.it)
        s.train_log["loss"].append(mean)

    if not st.history["epoch"]:
        _record(st, model, evaluate, xte, yte, None, 0.0, say)
    bar = progress_bar(o["epochs"] * math.ceil(ytr.shape[0] / o["batch_size"]), st.it, f"{o['name']} MNIST",
                       progress)
    try:
        run_periods(opt, list(model.parameters()), clip,
                    _epochs(model, xtr, ytr, o["batch_size"], data_gen, st, o["epochs"], o.get("transform"),
                            o.get("at_epoch_start")), st, evaluation,
                    device=o["device"], bar=bar, checkpoint=saver, log_every=o["log_every"], on_log=log)
    finally:
        bar.close()


def _write(msg: str, progress: bool) -> None:
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415
        tqdm.write(msg)
    else:
        print(msg, flush=True)
