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
* **Seeds**: PSGD's own generator is seeded with ``seed + PSGD_SEED_OFFSET`` (``1``), the value
  of every stored run; the loop is :func:`psgdlib.epochs.train_epochs` on
  :func:`psgdlib.loop.run_periods`, shared with the synthetic problems.

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
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .recipe import SCHEDULES, check_recipe, step_size, to_canvas
from .data import load_mnist, subset
from .epochs import EpochState, restore_checkpoint, save_checkpoint, train_epochs
from .loop import Checkpoint, make_optimizer, prepare_device
from .models import RNN2D
from .utils import atomic_write_json, configure_cpu, get_profile, provenance

__all__ = ["PROFILES", "OPTIMIZERS", "DEFAULT_LR", "DEFAULT_PAIRS", "PAPER_TEST_ERROR",
           "PSGD_SEED_OFFSET", "SHIFT_SEED_OFFSET", "run_mnist", "make_model", "make_optimizer", "evaluate", "load_data",
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

#: PSGD's own generator (its perturbations ``v``) is seeded with ``seed + PSGD_SEED_OFFSET``:
#: the value every stored MNIST run used (the synthetic problems use offset 0; see
#: :func:`psgdlib.loop.make_optimizer`).  Changing it changes every PSGD run's numbers.
PSGD_SEED_OFFSET = 1

#: The random shifts of ``shift > 0`` come from their own generator, seeded ``seed +
#: SHIFT_SEED_OFFSET``: the minibatch order is the same with and without augmentation.
SHIFT_SEED_OFFSET = 2

# ----------------------------------------------------------------------------- helpers
def make_model(seed: int = 0, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32, directions: Any = None,
               n_classes: int = 10) -> RNN2D:
    """The paper's 2D RNN (sizes 16, 32, 48, 64, 80; 39,706 parameters), initialised from
    ``seed`` alone, so that every optimizer starts from the same weights."""
    gen = torch.Generator().manual_seed(int(seed))
    return RNN2D(directions=directions, n_classes=n_classes, dtype=dtype, device=device,
                 generator=gen)


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

def _tensors(data_args: tuple, model, device, dtype, recipe: dict[str, Any], seed: int):
    """Training and test tensors on ``device``, test images on the recipe's canvas; and the
    per-minibatch transform of the training images (None when they are prepared once)."""
    xtr, ytr, xte, yte = load_data(*data_args, n_classes=model.n_classes)
    pixels, shift = recipe["pixels"], recipe["shift"]
    if pixels != "unit" or shift:
        xte = to_canvas(xte, pixels)
        if not shift:
            xtr = to_canvas(xtr, pixels)
    xtr, ytr = xtr.to(device=device, dtype=dtype), ytr.to(device)
    xte, yte = xte.to(device=device, dtype=dtype), yte.to(device)
    gen = torch.Generator().manual_seed(int(seed) + SHIFT_SEED_OFFSET) if shift else None
    transform = (lambda xb: to_canvas(xb, pixels, shift, gen)) if shift else None
    return (xtr, ytr, xte, yte), transform, gen


# ------------------------------------------------------------------------------- run
def _checked(optimizer: str, profile: str | None, epochs: int | None, lr: float, batch_size: int,
             train_limit: int | None, test_limit: int | None, log_every: int,
             clip_norm: float | None, recipe: dict[str, Any]) -> tuple[str, int, int | None, int | None]:
    """Validate the arguments of :func:`run_mnist`; returns profile, epochs and the limits."""
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
    for name, v in (("batch_size", batch_size), ("train_limit", train_limit), ("test_limit", test_limit),
                    ("log_every", log_every)):
        _positive_int_or_none(name, v)
    if batch_size is None:
        raise ValueError("batch_size must be a positive integer")
    if log_every is None:
        raise ValueError("log_every must be a positive integer")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive or None, got {clip_norm!r}")
    check_recipe(**recipe)
    return profile, epochs, train_limit, test_limit


def run_mnist(
    optimizer: str = "psgd", profile: str | None = None, epochs: int | None = None, lr: float = DEFAULT_LR,
    batch_size: int = 100, seed: int = 0, device: torch.device | str | None = None,
    root: str | os.PathLike | None = None, checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True, train_limit: int | None = None, test_limit: int | None = None,
    pairs: str = DEFAULT_PAIRS, precond_lr: float = 0.01, preconditioner: str = "kron",
    clip_norm: float | None = None, directions: Any = None, dataset: str = "mnist",
    data: Sequence[Tensor] | None = None, log_every: int = 50, dtype: torch.dtype = torch.float32,
    verbose: bool = True, return_model: bool = False, schedule: str = "constant",
    lr_final: float | None = None, pixels: str = "unit", shift: int = 0, update_every: int = 1,
) -> dict[str, Any]:
    """Train the 2D RNN on MNIST with ``optimizer`` ``"sgd"`` or ``"psgd"`` through
    :func:`psgdlib.epochs.train_epochs` (the loop, one period per epoch); returns the curves.

    ``profile`` (default ``$PSGD_PROFILE``, else ``cpu``) sets ``epochs``, ``train_limit`` and
    ``test_limit`` (a fixed random subset; at least the set's size: all of it) unless given.
    ``lr``, ``batch_size`` (paper: 100) are shared by both optimizers; ``seed`` gives the initial
    weights, the minibatch order and PSGD's generator (``seed + PSGD_SEED_OFFSET``).  PSGD:
    ``pairs``, ``precond_lr``, ``preconditioner`` (``kron``: eq. (5)).  ``clip_norm`` clips ``g``
    (SGD) or ``P g`` (PSGD).  ``directions``: the sweeps (None: top-left; ``"alternate"``).
    ``data``: ``(train_images, train_labels, test_images, test_labels)``, images ``(N, 1, 28,
    28)`` in [0, 1], instead of ``dataset`` from ``root``/``$PSGD_DATA``.  ``checkpoint_dir``:
    save after every epoch, resume from there.  ``log_every``: minibatches per running mean of
    the training loss; a non-finite one (or epoch mean) ends the run as ``diverged``.

    The recipe beyond the paper (defaults: the paper's): ``schedule``/``lr_final``
    (:func:`step_size`, both optimizers), ``pixels`` and ``shift`` (:mod:`psgdlib.canvas`:
    [-1, 1] pixels, random shifts of the training images), ``update_every`` (PSGD fits its
    preconditioner on every k-th minibatch only; 1 = the paper's every minibatch).

    Returns ``config``, ``history`` (per evaluation, epoch 0 = initial weights: ``epoch``,
    ``iteration``, ``test_error``, ``test_loss``, ``train_loss`` (None at epoch 0),
    ``epoch_time_s``, ``train_time_s``, ``eval_time_s``), ``train_log``, ``final_test_error``,
    ``best_test_error``, ``diverged``, ``num_parameters``, ``initial_weights_sha256``,
    ``final_weights_sha256``, ``resumed_from_epoch``, ``paper_test_error``, ``provenance``
    (and ``model`` when ``return_model``).
    """
    recipe = dict(schedule=schedule, lr_final=lr_final, pixels=pixels, shift=shift, update_every=update_every)
    profile, epochs, train_limit, test_limit = _checked(optimizer, profile, epochs, lr, batch_size, train_limit,
                                                        test_limit, log_every, clip_norm, recipe)
    device = prepare_device(device)
    config = dict(optimizer=optimizer, profile=profile, epochs=epochs, lr=float(lr), batch_size=batch_size,
                  seed=seed, train_limit=train_limit, test_limit=test_limit,
                  dataset=dataset if data is None else "tensors", clip_norm=clip_norm, directions=directions,
                  dtype=str(dtype).replace("torch.", ""), device=str(device), schedule=schedule,
                  lr_final=lr_final, pixels=pixels, shift=shift)
    psgd = optimizer == "psgd"
    config.update(dict(pairs=pairs, precond_lr=precond_lr, preconditioner=preconditioner,
                       update_every=update_every) if psgd else {})
    model = make_model(seed, device=device, dtype=dtype, directions=directions)
    opt = make_optimizer(optimizer, model.parameters(), lr, precond_lr, pairs, clip_norm if psgd else None,
                         seed=seed + PSGD_SEED_OFFSET, preconditioner=preconditioner if psgd else None,
                         update_every=update_every)
    init_digest = weights_digest(model)
    tensors, transform, shift_gen = _tensors((dataset, root, train_limit, test_limit, data), model, device,
                                             dtype, recipe, seed)
    config.update(n_train=int(tensors[1].shape[0]), n_test=int(tensors[3].shape[0]))
    data_gen = torch.Generator().manual_seed(int(seed))
    st, saver = _checkpointing(checkpoint_dir, config, model, opt, (data_gen, shift_gen), device)
    resumed_from = st.epoch if st.history["epoch"] else None

    def at_epoch_start(e: int) -> None:
        for g in opt.param_groups:
            g["lr"] = step_size(lr, e, epochs, schedule, lr_final)

    train_epochs(model, opt, None if psgd else clip_norm, tensors, st, saver, data_gen, evaluate,
                 dict(epochs=epochs, batch_size=batch_size, log_every=log_every, device=device, progress=progress,
                      name=optimizer, verbose=verbose, transform=transform, at_epoch_start=at_epoch_start))
    h = st.history
    return dict(config=config, history=h, train_log=st.train_log, final_test_error=h["test_error"][-1],
                best_test_error=min(h["test_error"]), diverged=st.diverged, num_parameters=model.num_parameters(),
                initial_weights_sha256=init_digest, final_weights_sha256=weights_digest(model),
                resumed_from_epoch=resumed_from, paper_test_error=PAPER_TEST_ERROR[optimizer],
                provenance=provenance(device), **({"model": model} if return_model else {}))


def _checkpointing(checkpoint_dir: str | os.PathLike | None, config: dict, model, opt,
                   gens: tuple[torch.Generator, torch.Generator | None],
                   device: torch.device) -> tuple[EpochState, Checkpoint | None]:
    """The run's state (restored from ``<checkpoint_dir>/mnist-<dataset>-<optimizer>-seed<seed>.pt``
    when that exists) and its per-epoch checkpoint (None without ``checkpoint_dir``).  ``gens``:
    the minibatch-order and the shift generators.  A larger ``epochs`` extends a run only under
    the constant schedule (a geometric one depends on the number of epochs)."""
    if checkpoint_dir is None:
        return EpochState(), None
    path = Path(checkpoint_dir) / f"mnist-{config['dataset']}-{config['optimizer']}-seed{config['seed']}.pt"
    data_gen, shift_gen = gens
    st = (restore_checkpoint(path, config, model, opt, data_gen, device, shift_gen,
                             extendable=config["schedule"] == "constant") if path.is_file() else EpochState())
    return st, Checkpoint(path, lambda: save_checkpoint(path, config, model, opt, data_gen, st, device, shift_gen),
                          at_stop=True)


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
    ap.add_argument("--schedule", choices=SCHEDULES, default="constant")
    ap.add_argument("--lr-final", type=float, default=None, help="last epoch's step (geometric schedule)")
    ap.add_argument("--pixels", choices=("unit", "signed"), default="unit",
                    help="unit: [0, 1] (paper); signed: [-1, 1], background -1 (Li's demos)")
    ap.add_argument("--shift", type=int, default=0,
                    help="random shift of training images, pixels from the centre (Li's demos: 2)")
    ap.add_argument("--update-every", type=int, default=1, help="PSGD: fit P on every k-th minibatch")
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
        clip_norm=args.clip_norm, directions=args.directions, dataset=args.dataset, schedule=args.schedule,
        lr_final=args.lr_final, pixels=args.pixels, shift=args.shift, update_every=args.update_every)
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