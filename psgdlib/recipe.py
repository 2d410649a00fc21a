"""Experiment 3's training recipe beyond the paper: the step-size schedule, and the 32x32 canvas
(where a 28x28 digit is placed, how its pixels are scaled).

The paper's protocol (and the default here) is the plain one: pixels / 255 in [0, 1], the digit
centred on a zero background, no distortion (the 2D RNN pads 28x28 images that way itself).
Li's later public MNIST demos use a different recipe, offered as options:

* ``pixels="signed"``: pixels scaled to [-1, 1], with -1 as the background (also the padding);
* ``schedule="geometric"``: the step annealed geometrically over the epochs (:func:`step_size`);
* ``shift=d``: each *training* image is placed at a random offset of up to ``d`` pixels from the
  centre, independently along rows and columns (``d = 2``: offsets 0..4 on the canvas, Li's
  demos); test images stay centred.  This is data augmentation, which the paper did not use.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SIDE", "DIGIT", "PIXELS", "MAX_SHIFT", "SCHEDULES", "step_size", "check_canvas", "check_recipe",
           "to_canvas"]

SIDE = 32      #: side of the canvas (the 2D RNN's 8x8 grid of 4x4 patches)
DIGIT = 28     #: side of an MNIST digit
PIXELS = ("unit", "signed")
MAX_SHIFT = (SIDE - DIGIT) // 2   #: 2: the digit still fits on the canvas


#: Step-size schedules (:func:`step_size`), the same for both optimizers.
SCHEDULES = ("constant", "geometric")


def step_size(lr: float, epoch: int, epochs: int, schedule: str = "constant",
              lr_final: float | None = None) -> float:
    """The step of epoch ``epoch`` (1-based) of ``epochs``: ``lr`` (constant), or geometric
    annealing ``lr (lr_final / lr)^((epoch - 1) / (epochs - 1))`` from ``lr`` in the first epoch
    to ``lr_final`` in the last (Li's MNIST demos anneal, e.g. 0.1 to 0.001)."""
    if schedule == "constant":
        return lr
    if schedule != "geometric" or lr_final is None:
        raise ValueError(f"schedule must be one of {SCHEDULES} (geometric needs lr_final), got {schedule!r}")
    return lr * (lr_final / lr) ** ((epoch - 1) / max(epochs - 1, 1))


def check_recipe(schedule: str, lr_final: float | None, pixels: str, shift: int,
                 update_every: int) -> None:
    """Raise a ValueError naming the option if a recipe option of :func:`psgdlib.mnist.run_mnist` is invalid."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "geometric" and not (isinstance(lr_final, (int, float)) and math.isfinite(lr_final)
                                        and 0 < lr_final):
        raise ValueError(f"schedule='geometric' needs a positive lr_final, got {lr_final!r}")
    if schedule == "constant" and lr_final is not None:
        raise ValueError("lr_final is for schedule='geometric'; the constant schedule keeps lr")
    check_canvas(pixels, shift)
    if not (isinstance(update_every, int) and not isinstance(update_every, bool) and update_every >= 1):
        raise ValueError(f"update_every must be a positive integer, got {update_every!r}")


def check_canvas(pixels: str, shift: int) -> None:
    """Raise a ValueError naming the option if ``pixels`` or ``shift`` is invalid."""
    if pixels not in PIXELS:
        raise ValueError(f"pixels must be one of {PIXELS}, got {pixels!r}")
    if not (isinstance(shift, int) and not isinstance(shift, bool) and 0 <= shift <= MAX_SHIFT):
        raise ValueError(f"shift must be an integer in 0..{MAX_SHIFT} (pixels from the centre of the "
                         f"{SIDE}x{SIDE} canvas), got {shift!r}")


def to_canvas(x: Tensor, pixels: str = "unit", shift: int = 0,
              generator: torch.Generator | None = None) -> Tensor:
    """Place digits on the canvas.

    Args:
        x: ``(B, 1, 28, 28)`` images with pixels in [0, 1].
        pixels: ``"unit"`` (keep [0, 1], background 0) or ``"signed"`` (``2 x - 1``, background -1).
        shift: largest displacement from the centre, per axis; 0 = centred.
        generator: CPU generator of the offsets (needed when ``shift > 0``).

    Returns:
        ``(B, 1, 32, 32)`` images; with ``shift = 0`` and ``pixels="unit"`` exactly the zero
        padding the 2D RNN applies to a 28x28 input.
    """
    check_canvas(pixels, shift)
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, DIGIT, DIGIT):
        raise ValueError(f"expected images of shape (B, 1, {DIGIT}, {DIGIT}), got {tuple(x.shape)}")
    if shift > 0 and generator is None:
        raise ValueError("shift > 0 needs a generator for the random offsets")
    background = -1.0 if pixels == "signed" else 0.0
    digits = 2 * x - 1 if pixels == "signed" else x
    b = x.shape[0]
    out = torch.full((b, 1, SIDE, SIDE), background, dtype=x.dtype, device=x.device)
    if shift == 0:
        out[:, :, MAX_SHIFT:MAX_SHIFT + DIGIT, MAX_SHIFT:MAX_SHIFT + DIGIT] = digits
        return out
    offsets = torch.randint(MAX_SHIFT - shift, MAX_SHIFT + shift + 1, (2, b), generator=generator)
    flat = (offsets[0] * SIDE + offsets[1]).tolist()   # one group of images per (row, column) offset
    keys = torch.tensor(flat)
    for key in sorted(set(flat)):
        idx = (keys == key).nonzero().squeeze(1).to(x.device)
        r, c = divmod(key, SIDE)
        out[idx, :, r:r + DIGIT, c:c + DIGIT] = digits[idx]
    return out
