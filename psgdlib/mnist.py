"""Experiment 3 of Li (2016): the two-dimensional RNN on MNIST, SGD vs PSGD (Fig. 3).

Protocol (paper, Sec. III.C)
----------------------------
Both optimizers start from **the same random initial weights** (the model is built from
``seed`` alone: :class:`~psgdlib.models.RNN2D` with ``torch.Generator().manual_seed(seed)``),
see **the same minibatches in the same order** (the shuffling generator is seeded from
``seed`` too, independently of the optimizer) and use **the same step size** ``lr`` and
minibatch size (100). PSGD uses the layer-wise Kronecker preconditioner
(``PSGD(model.parameters(), preconditioner="kron")``): every parameter of
:class:`~psgdlib.models.RNN2D` is one weight matrix with its bias folded in as the last
column, so each gets one ``Kron`` factor pair, as in eq. (5). No preprocessing (pixels/255),
no pretraining, no distortions. The metric is the test error rate, the fraction of
misclassified test images, recorded after every epoch (and before the first one).

Design choices (measured on this repository's 2-core CPU, 1 torch thread, float32)
---------------------------------------------------------------------------------
* **Step size** ``lr = DEFAULT_LR = 0.1`` for both optimizers. The paper's 0.01 is too small
  for this model over a few epochs: a sweep of lr in {0.01, 0.03, 0.05, 0.1, 0.2, 0.3}
  (10,000 training images, 3 epochs, a fixed 2,000-image test subset, seed 0) is stored in
  ``results/mnist_checks/`` (one file per run, with its command; the book's results page
  tabulates it). 0.1 lies in SGD's best range and next to PSGD's best there.
* **SGD** is plain minibatch SGD **without gradient clipping**: MNIST needs no long-term
  memory (back-propagation spans at most 8 grid steps along either dimension) and no SGD
  run of the sweep diverged (each file records ``diverged``). ``clip_norm`` is available for
  both optimizers (``None`` = off).
* **Pairs** ``DEFAULT_PAIRS = "finite_difference"`` (the paper's ``dtheta``/``dg`` pairs,
  float32 perturbation scale ``2^-14``): about as accurate as exact Hessian-vector products
  for this model and cheaper per minibatch (``benchmarks/mnist_epoch.py`` times both).
* **Profiles**: :data:`PROFILES` (one table; the run times are listed there).

Checkpoints
-----------
With ``checkpoint_dir`` the run saves, after every finished epoch, the model, the optimizer
``state_dict`` (PSGD's holds its preconditioners and its own random generator), the history
and every random state (the shuffling generator, torch's global CPU/CUDA generators) to
``<checkpoint_dir>/<tag>.pt`` (``torch.save`` to a temporary file, then ``os.replace``).
Calling :func:`run_mnist` again with the same directory and configuration resumes after the
last finished epoch; the result is bit-for-bit the same as that of an uninterrupted run
(``tests/test_mnist.py`` checks it). A larger ``epochs`` extends a finished run.

Command line::

    python -m psgdlib.mnist --optimizer psgd --profile cpu --out results/mnist/psgd_cpu.json \\
        --checkpoint-dir checkpoints/mnist
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import batches, load_mnist, subset
from .models import RNN2D
from .optim import PSGD
from .utils import (atomic_torch_save, atomic_write_json, configure_cpu, get_profile, pick_device,
                    provenance)

__all__ = ["PROFILES", "OPTIMIZERS", "DEFAULT_LR", "DEFAULT_PAIRS", "PAPER_TEST_ERROR",
           "run_mnist", "make_model", "make_optimizer", "evaluate", "load_data",
           "weights_digest", "main"]

OPTIMIZERS = ("sgd", "psgd")

#: Test error rates reported in the paper (Sec. III.C, Fig. 3).
PAPER_TEST_ERROR = {"sgd": 0.009, "psgd": 0.006}

#: The step size shared by SGD and PSGD (the paper's protocol: the same for both); chosen
#: by the sweep in the module docstring.
DEFAULT_LR = 0.1

#: PSGD's pair source: the paper's finite differences (as good as ``"hvp"`` here, and
#: cheaper; see the module docstring).
DEFAULT_PAIRS = "finite_difference"

#: The run profiles -- the one place where they are defined. ``train_limit``/``test_limit``:
#: number of images (``None``: all of them; otherwise a fixed random subset, the same for
#: every seed and optimizer); ``epochs``: passes over the training images.
#: ``minutes_cpu``: wall time of one run, SGD / PSGD, test evaluations included, on this
#: repository's 2-core AMD EPYC CPU with 1 torch thread, from measured seconds per
#: minibatch (26.5 ms SGD, 58 ms PSGD, ``benchmarks/mnist_epoch.py``) and per 10k-image
#: evaluation (1.3 s) on an otherwise idle core; the ``smoke`` and ``cpu`` runs were also
#: timed end to end (cpu: 0.55 / 1.0 min with a 2,000-image test subset on a quiet
#: machine; 1.2 / 2.2 min, full test set, with other jobs loading both cores).
#: ``minutes_gpu``: an *estimate* (not measured; kernel-launch bound, about
#: 10 ms per SGD and 25 ms per PSGD minibatch assumed).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(train_limit=3_000, test_limit=500, epochs=2,
                  minutes_cpu="0.05 / 0.08", minutes_gpu="0.05 / 0.05 (estimate)"),
    "cpu": dict(train_limit=20_000, test_limit=None, epochs=5,
                minutes_cpu="0.6 / 1.1", minutes_gpu="0.3 / 0.5 (estimate)"),
    "paper": dict(train_limit=None, test_limit=None, epochs=50,
                  minutes_cpu="14 / 30", minutes_gpu="5 / 13 (estimate)"),
}

_SUBSET_SEED = 20160101  # fixed: the subsets do not depend on the run's seed
_EVAL_BATCH = 1000
_CKPT_VERSION = 1


# ----------------------------------------------------------------------------- helpers
def make_model(seed: int = 0, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32, directions: Any = None,
               n_classes: int = 10) -> RNN2D:
    """The paper's 2D RNN (sizes 16, 32, 48, 64, 80; 39,706 parameters), initialised from
    ``seed`` alone, so that every optimizer starts from the same weights."""
    gen = torch.Generator().manual_seed(int(seed))
    return RNN2D(directions=directions, n_classes=n_classes, dtype=dtype, device=device,
                 generator=gen)


def make_optimizer(optimizer: str, params: Sequence[Tensor] | Any, lr: float, *,
                   pairs: str = DEFAULT_PAIRS, precond_lr: float = 0.01,
                   preconditioner: str = "kron", seed: int = 0) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` or :class:`~psgdlib.PSGD` (Kronecker preconditioner by default)."""
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if optimizer == "psgd":
        return PSGD(params, lr=lr, precond_lr=precond_lr, preconditioner=preconditioner,
                    pairs=pairs, seed=seed)
    raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the parameters' bytes (equal digests = bit-identical weights)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: Tensor, labels: Tensor,
             batch_size: int = _EVAL_BATCH) -> tuple[float, float]:
    """``(error rate, mean cross-entropy)`` of ``model`` on ``(images, labels)``.

    The error rate is the number of misclassified images (argmax of the logits differs
    from the label) divided by the number of images.
    """
    n = labels.shape[0]
    if n == 0:
        raise ValueError("cannot evaluate on an empty set")
    wrong, loss = 0, 0.0
    for s in range(0, n, batch_size):
        logits = model(images[s:s + batch_size])
        y = labels[s:s + batch_size]
        wrong += int((logits.argmax(dim=1) != y).sum().item())
        loss += float(F.cross_entropy(logits.float(), y, reduction="sum").item())
    return wrong / n, loss / n


def _check_data(data: Sequence[Tensor], n_classes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if not (isinstance(data, (tuple, list)) and len(data) == 4
            and all(isinstance(t, Tensor) for t in data)):
        raise ValueError("data must be a tuple of four tensors (train_images, train_labels, "
                         "test_images, test_labels)")
    xtr, ytr, xte, yte = data
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if not x.is_floating_point():
            raise ValueError(f"{name} images must be floating point (pixels / 255), got {x.dtype}")
        if y.dim() != 1 or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"{name} labels must be a 1-d integer tensor, got {tuple(y.shape)} "
                             f"{y.dtype}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: {x.shape[0]} images but {y.shape[0]} labels")
        if y.numel() == 0:
            raise ValueError(f"{name} set is empty")
        if int(y.min()) < 0 or int(y.max()) >= n_classes:
            raise ValueError(f"{name} labels must lie in 0..{n_classes - 1}")
    return xtr, ytr.long(), xte, yte.long()


def load_data(dataset: str = "mnist", root: str | os.PathLike | None = None,
              train_limit: int | None = None, test_limit: int | None = None,
              data: Sequence[Tensor] | None = None,
              n_classes: int = 10) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training and test tensors: ``data`` if given, else :func:`~psgdlib.data.load_mnist`
    (``root`` or ``$PSGD_DATA``). A limit keeps a fixed random subset (same for every run)."""
    if data is None:
        xtr, ytr = load_mnist(root, train=True, dataset=dataset)
        xte, yte = load_mnist(root, train=False, dataset=dataset)
        data = (xtr, ytr, xte, yte)
    xtr, ytr, xte, yte = _check_data(data, n_classes)
    if train_limit is not None and train_limit < ytr.shape[0]:
        xtr, ytr = subset(xtr, ytr, train_limit, mode="random",
                          generator=torch.Generator().manual_seed(_SUBSET_SEED))
    if test_limit is not None and test_limit < yte.shape[0]:
        xte, yte = subset(xte, yte, test_limit, mode="random",
                          generator=torch.Generator().manual_seed(_SUBSET_SEED + 1))
    return xtr, ytr, xte, yte


def _positive_int_or_none(name: str, v: Any) -> None:
    if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        raise ValueError(f"{name} must be a positive integer or None, got {v!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------- run
def run_mnist(
    optimizer: str = "psgd",
    profile: str | None = None,
    epochs: int | None = None,
    lr: float = DEFAULT_LR,
    batch_size: int = 100,
    seed: int = 0,
    device: torch.device | str | None = None,
    root: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    train_limit: int | None = None,
    test_limit: int | None = None,
    pairs: str = DEFAULT_PAIRS,
    precond_lr: float = 0.01,
    preconditioner: str = "kron",
    clip_norm: float | None = None,
    directions: Any = None,
    dataset: str = "mnist",
    data: Sequence[Tensor] | None = None,
    log_every: int = 50,
    dtype: torch.dtype = torch.float32,
    verbose: bool = True,
    return_model: bool = False,
) -> dict[str, Any]:
    """Train the 2D RNN on MNIST with SGD or PSGD; returns the learning curves.

    Args:
        optimizer: ``"sgd"`` or ``"psgd"``.
        profile: ``"smoke"``, ``"cpu"`` or ``"paper"`` (default ``$PSGD_PROFILE``, else
            ``"cpu"``); sets ``epochs``, ``train_limit`` and ``test_limit`` from
            :data:`PROFILES` unless they are given.
        epochs: passes over the training images.
        lr: step size, the same for both optimizers (paper's protocol).
        batch_size: minibatch size (paper: 100).
        seed: initial weights, minibatch order (and PSGD's own generator) come from it.
        device: default CUDA when available, else CPU.
        root: data root for :func:`~psgdlib.data.load_mnist` (default ``$PSGD_DATA``).
        checkpoint_dir: save a checkpoint after every epoch there and resume from it.
        progress: tqdm progress bar over the minibatches.
        train_limit, test_limit: use a fixed random subset of that many images (``None``:
            the profile's value; a number at least the set's size: all of it, e.g.
            ``test_limit=10_000`` for the whole MNIST test set in the ``smoke`` profile).
        pairs: PSGD's pair source (``"finite_difference"``, ``"hvp"``, ``"whitening"``).
        precond_lr: PSGD's preconditioner step (paper: 0.01).
        preconditioner: ``"kron"`` (paper), ``"diag"`` or ``"dense"``.
        clip_norm: clip the (preconditioned) gradient norm; ``None`` = no clipping.
        directions: sweep directions of the 2D RNN (``None``: all top-left; ``"alternate"``).
        dataset: ``"mnist"`` or ``"fashion_mnist"``.
        data: ``(train_images, train_labels, test_images, test_labels)`` tensors to use
            instead of loading ``dataset`` (images ``(N, 1, 28, 28)`` in [0, 1]).
        log_every: record the mean training loss every ``log_every`` minibatches.
        dtype: parameter dtype (float32).
        verbose: print one line per epoch.
        return_model: also return the trained model under ``"model"`` (not JSON-able).

    Returns:
        a dict with ``config``, ``history`` (per evaluation, epoch 0 = initial weights:
        ``epoch``, ``iteration``, ``test_error``, ``test_loss``, ``train_loss`` (mean over
        the epoch; ``None`` at epoch 0), ``epoch_time_s`` (training time of the epoch), ``train_time_s``
        (cumulative), ``eval_time_s``), ``train_log`` (``iteration``, ``loss``: running
        means every ``log_every`` minibatches), ``final_test_error``, ``diverged``,
        ``initial_weights_sha256``, ``final_weights_sha256``, ``num_parameters``,
        ``resumed_from_epoch`` and ``provenance``.
    """
    # ------------------------------------------------------------ argument checks
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    profile = get_profile() if profile is None else profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {tuple(PROFILES)}")
    prof = PROFILES[profile]
    epochs = prof["epochs"] if epochs is None else epochs
    train_limit = prof["train_limit"] if train_limit is None else train_limit
    test_limit = prof["test_limit"] if test_limit is None else test_limit
    if not (isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 0):
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    _positive_int_or_none("batch_size", batch_size)
    if batch_size is None:
        raise ValueError("batch_size must be a positive integer")
    _positive_int_or_none("train_limit", train_limit)
    _positive_int_or_none("test_limit", test_limit)
    _positive_int_or_none("log_every", log_every)
    if log_every is None:
        raise ValueError("log_every must be a positive integer")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive or None, got {clip_norm!r}")
    device = pick_device(device)
    if device.type == "cpu":
        configure_cpu()

    config = dict(optimizer=optimizer, profile=profile, epochs=epochs, lr=float(lr),
                  batch_size=batch_size, seed=seed, train_limit=train_limit,
                  test_limit=test_limit, dataset=dataset if data is None else "tensors",
                  clip_norm=clip_norm, directions=directions, dtype=str(dtype).replace("torch.", ""),
                  device=str(device))
    if optimizer == "psgd":
        config.update(pairs=pairs, precond_lr=precond_lr, preconditioner=preconditioner)

    # ------------------------------------------------------------------ set-up
    model = make_model(seed, device=device, dtype=dtype, directions=directions)
    opt = make_optimizer(optimizer, model.parameters(), lr, pairs=pairs, precond_lr=precond_lr,
                         preconditioner=preconditioner, seed=seed + 1)
    if optimizer == "psgd" and clip_norm is not None:
        for g in opt.param_groups:
            g["clip_norm"] = float(clip_norm)
    init_digest = weights_digest(model)
    xtr, ytr, xte, yte = load_data(dataset, root, train_limit, test_limit, data,
                                   n_classes=model.n_classes)
    xtr, ytr = xtr.to(device=device, dtype=dtype), ytr.to(device)
    xte, yte = xte.to(device=device, dtype=dtype), yte.to(device)
    config.update(n_train=int(ytr.shape[0]), n_test=int(yte.shape[0]))
    data_gen = torch.Generator().manual_seed(int(seed))

    history: dict[str, list] = {k: [] for k in ("epoch", "iteration", "test_error", "test_loss",
                                                "train_loss", "epoch_time_s", "train_time_s",
                                                "eval_time_s")}
    train_log: dict[str, list] = {"iteration": [], "loss": []}
    start_epoch, iteration, train_time, diverged = 0, 0, 0.0, False
    resumed_from = None

    ckpt_path = None
    if checkpoint_dir is not None:
        tag = f"mnist-{config['dataset']}-{optimizer}-seed{seed}"
        ckpt_path = Path(checkpoint_dir) / f"{tag}.pt"
        if ckpt_path.is_file():
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            if ck.get("version") != _CKPT_VERSION:
                raise ValueError(f"{ckpt_path}: unknown checkpoint version {ck.get('version')}")
            old = {k: v for k, v in ck["config"].items() if k != "epochs"}
            new = {k: v for k, v in config.items() if k != "epochs"}
            if old != new:
                diff = {k: (old.get(k), new.get(k)) for k in set(old) | set(new)
                        if old.get(k) != new.get(k)}
                raise ValueError(f"{ckpt_path} was written by a run with another configuration "
                                 f"(checkpoint vs now: {diff}); use another checkpoint_dir")
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            data_gen.set_state(ck["rng"]["data"])
            torch.set_rng_state(ck["rng"]["torch"])
            if device.type == "cuda" and ck["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(ck["rng"]["cuda"], device)
            history, train_log = ck["history"], ck["train_log"]
            start_epoch, iteration = ck["epoch"], ck["iteration"]
            train_time, diverged = ck["train_time_s"], ck["diverged"]
            resumed_from = start_epoch

    def record(epoch: int, train_loss: float | None, epoch_time: float) -> None:
        t0 = time.perf_counter()
        err, loss = evaluate(model, xte, yte)
        history["epoch"].append(epoch)
        history["iteration"].append(iteration)
        history["test_error"].append(err)
        history["test_loss"].append(loss)
        history["train_loss"].append(train_loss)
        history["epoch_time_s"].append(epoch_time)
        history["train_time_s"].append(train_time)
        history["eval_time_s"].append(time.perf_counter() - t0)
        if verbose:
            tl = "   -  " if train_loss is None else f"{train_loss:.4f}"
            _write(f"[{optimizer}] epoch {epoch:3d}  train loss {tl}  "
                   f"test error {100 * err:6.2f}%  test loss {loss:.4f}  "
                   f"({epoch_time:.1f} s train)", progress)

    if not history["epoch"]:
        record(0, None, 0.0)

    def closure_for(xb: Tensor, yb: Tensor):
        def closure() -> Tensor:
            return F.cross_entropy(model(xb), yb)
        return closure

    # ------------------------------------------------------------------ train
    n_batches = math.ceil(ytr.shape[0] / batch_size)
    for epoch in range(start_epoch + 1, epochs + 1):
        if diverged:
            break
        model.train()
        _sync(device)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        win_sum = torch.zeros((), dtype=torch.float64, device=device)
        win_n, n_seen = 0, 0
        bar = _bar(n_batches, f"{optimizer} epoch {epoch}/{epochs}", progress)
        for xb, yb in batches(xtr, ytr, batch_size, generator=data_gen):
            if optimizer == "psgd":
                loss = opt.step(closure_for(xb, yb))
            else:
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                if clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
                opt.step()
                loss = loss.detach()
            iteration += 1
            loss_sum += loss * yb.shape[0]
            n_seen += yb.shape[0]
            win_sum += loss
            win_n += 1
            if win_n == log_every:
                mean = float(win_sum.item()) / win_n
                train_log["iteration"].append(iteration)
                train_log["loss"].append(mean)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean:.4f}")
                win_sum.zero_()
                win_n = 0
                if not math.isfinite(mean):
                    diverged = True
                    break
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        _sync(device)
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        train_loss = float(loss_sum.item()) / max(n_seen, 1)
        if not math.isfinite(train_loss):
            diverged = True
        record(epoch, train_loss, epoch_time)
        if ckpt_path is not None:
            ck = dict(version=_CKPT_VERSION, config=config, epoch=epoch, iteration=iteration,
                      model=model.state_dict(), optimizer=opt.state_dict(),
                      rng=dict(data=data_gen.get_state(), torch=torch.get_rng_state(),
                               cuda=torch.cuda.get_rng_state(device) if device.type == "cuda"
                               else None),
                      history=history, train_log=train_log, train_time_s=train_time,
                      diverged=diverged)
            atomic_torch_save(ck, ckpt_path)
        if diverged and verbose:
            _write(f"[{optimizer}] the training loss is not finite: stopping (diverged)", progress)

    result: dict[str, Any] = dict(
        config=config,
        history=history,
        train_log=train_log,
        final_test_error=history["test_error"][-1],
        best_test_error=min(history["test_error"]),
        diverged=diverged,
        num_parameters=model.num_parameters(),
        initial_weights_sha256=init_digest,
        final_weights_sha256=weights_digest(model),
        resumed_from_epoch=resumed_from,
        paper_test_error=PAPER_TEST_ERROR[optimizer],
        provenance=provenance(device),
    )
    if return_model:
        result["model"] = model
    return result


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm  # noqa: PLC0415
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _write(msg: str, progress: bool) -> None:
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415
        tqdm.write(msg)
    else:
        print(msg, flush=True)


# ------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m psgdlib.mnist``: one run, result JSON written atomically."""
    ap = argparse.ArgumentParser(prog="python -m psgdlib.mnist", description=__doc__.split("\n")[0])
    ap.add_argument("--optimizer", choices=OPTIMIZERS, default="psgd")
    ap.add_argument("--profile", choices=tuple(PROFILES), default=None,
                    help="default: $PSGD_PROFILE, else cpu")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=DEFAULT_LR)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--root", default=None, help="data root (default $PSGD_DATA)")
    ap.add_argument("--dataset", choices=("mnist", "fashion_mnist"), default="mnist")
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--pairs", choices=("finite_difference", "hvp", "whitening"),
                    default=DEFAULT_PAIRS)
    ap.add_argument("--precond-lr", type=float, default=0.01)
    ap.add_argument("--preconditioner", choices=("kron", "diag", "dense"), default="kron")
    ap.add_argument("--clip-norm", type=float, default=None)
    ap.add_argument("--directions", default=None, help="None (top-left sweeps) or 'alternate'")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--out", default=None, help="result JSON (written atomically)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.threads is not None:
        configure_cpu(args.threads)
    result = run_mnist(
        optimizer=args.optimizer, profile=args.profile, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, seed=args.seed, device=args.device, root=args.root,
        checkpoint_dir=args.checkpoint_dir, progress=not args.no_progress,
        train_limit=args.train_limit, test_limit=args.test_limit, pairs=args.pairs,
        precond_lr=args.precond_lr, preconditioner=args.preconditioner,
        clip_norm=args.clip_norm, directions=args.directions, dataset=args.dataset)
    result["provenance"]["command"] = "python -m psgdlib.mnist " + " ".join(
        sys.argv[1:] if argv is None else argv)
    if args.out:
        atomic_write_json(args.out, result)
        print(f"wrote {args.out}")
    print(f"final test error: {100 * result['final_test_error']:.2f}% "
          f"(paper: {100 * PAPER_TEST_ERROR[args.optimizer]:.1f}%)")
    return result


if __name__ == "__main__":  # pragma: no cover
    main()
