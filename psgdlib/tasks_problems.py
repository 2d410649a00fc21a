"""The problems of :mod:`psgdlib.tasks` (§1-8 of its docstring, and Experiment 1's variant)."""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .tasks_base import (Batch, Task, _ceil_tenth, _floor_frac, _min_valid_T, _validate_ranges,
                         test_seed)

__all__ = ["MarkerTask", "TemporalOrderTask", "RandomPermutationTask", "MemorizationTask"]


# §1-3: addition, multiplication, XOR (and Experiment 1's variable-length variant)
def _marker_ranges(L: int) -> List[Tuple[str, int, int]]:
    """§1: ``I ~ U{0..floor(0.1L)-1}``, ``J ~ U{floor(0.1L)..floor(0.5L)-1}``."""
    a, b = _floor_frac(1, L), _floor_frac(5, L)
    return [("I", 0, a - 1), ("J", a, b - 1)]


def _marker_ok(L: int) -> bool:
    return all(lo <= hi for _, lo, hi in _marker_ranges(L))


def _mult_chance_wrong() -> float:
    # P(|XY - 1/4| >= 0.04) for X, Y ~ U[0,1]; the CDF of XY is z - z ln z.
    def cdf(z: float) -> float:
        return z - z * math.log(z)

    return 1.0 - (cdf(0.29) - cdf(0.21))


class MarkerTask(Task):
    """Addition, multiplication, XOR (§1-3) and Experiment 1's ``addition_variable``.

    * Input dim 2: value channel ``v(t)`` (``U[0,1]``, or fair bits for XOR) and a marker
      channel in {0, 1} with ones at ``I`` and ``J``.
    * One length per minibatch: ``L ~ U{T .. T+ceil(0.1T)-1}``; for ``addition_variable``
      ``L ~ U{ceil(T/2) .. T}`` (``U{50..100}`` at the paper's T=100) and the test set is
      the ``addition`` test set at the same T (lengths ``U{T .. T+ceil(0.1T)-1}``).
    * ``targets``: ``(B,)`` — ``(v(I)+v(J))/2``, ``v(I)*v(J)``, or ``v(I) XOR v(J)`` (as 0./1.).
    * ``positions``: ``(B, 2)`` long, columns ``I, J``.
    * Loss at the last step only: mean squared error (addition, multiplication; no 1/2
      factor) or binary cross-entropy with logits (XOR). Wrong: ``|y - target| >= 0.04``,
      or for XOR ``(sigmoid(y) >= 0.5) != target``.
    * Chance (constant 0.5 / 0.25 / logit 0): addition MSE 1/24, 84.64% wrong;
      multiplication MSE 7/144, ~88.9% wrong; XOR BCE ln 2, 50% wrong.
    """

    input_dim = 2
    output_dim = 1
    loss_steps = "last"
    tolerance = 0.04

    def __init__(self, name: str, T: int) -> None:
        super().__init__(name, T)
        base = "addition" if name == "addition_variable" else name
        if base not in ("addition", "multiplication", "xor"):
            raise ValueError(f"MarkerTask does not implement {name!r}")
        self.base = base
        self.test_lengths = (T, T + _ceil_tenth(T) - 1)
        if name == "addition_variable":
            self.lengths = (-(-T // 2), T)
        else:
            self.lengths = self.test_lengths
        all_L = range(min(self.lengths[0], self.test_lengths[0]), self.test_lengths[1] + 1)
        min_ok = _min_valid_T(lambda t: _marker_ok(-(-t // 2) if name == "addition_variable" else t))
        _validate_ranges(name, T, _marker_ranges, all_L, min_ok)
        self.loss_kind = "bce" if base == "xor" else "mse"
        if base == "addition":
            self.chance_loss, self.chance_wrong = 1.0 / 24.0, 0.8464
        elif base == "multiplication":
            self.chance_loss, self.chance_wrong = 7.0 / 144.0, _mult_chance_wrong()
        else:
            self.chance_loss, self.chance_wrong = math.log(2.0), 0.5

    @property
    def test_seed(self) -> int:
        # addition_variable is evaluated on the addition test set (Experiment 1).
        return test_seed(self.base, self.T)

    def _generate_L(self, B: int, L: int, g: Optional[torch.Generator], dev: torch.device,
                    dtype: torch.dtype) -> Batch:
        if self.base == "xor":
            v = torch.randint(0, 2, (L, B), generator=g, device=dev).to(dtype)
        else:
            v = torch.rand(L, B, generator=g, device=dev, dtype=torch.float64).to(dtype)
        a, b = _floor_frac(1, L), _floor_frac(5, L)
        I = torch.randint(0, a, (B,), generator=g, device=dev)
        J = torch.randint(a, b, (B,), generator=g, device=dev)
        cols = torch.arange(B, device=dev)
        marker = torch.zeros(L, B, device=dev, dtype=dtype)
        marker[I, cols] = 1.0
        marker[J, cols] = 1.0
        vi, vj = v[I, cols], v[J, cols]
        if self.base == "addition":
            target = (vi + vj) / 2
        elif self.base == "multiplication":
            target = vi * vj
        else:
            target = (vi != vj).to(dtype)
        return Batch(torch.stack([v, marker], dim=-1), target, torch.stack([I, J], dim=1))

    def _draw_L(self, lo: int, hi: int, g: Optional[torch.Generator], dev: torch.device) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=g, device=dev).item())

    def _generate(self, B, g, dev, dtype):
        L = self._draw_L(*self.lengths, g, dev)
        return self._generate_L(B, L, g, dev, dtype)

    def _generate_test_chunk(self, B, g, dtype):
        cpu = torch.device("cpu")
        return self._generate_L(B, self._draw_L(*self.test_lengths, g, cpu), g, cpu, dtype)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        self._check_outputs(outputs, batch)
        y = outputs[-1, :, 0]
        if self.loss_kind == "bce":
            return F.binary_cross_entropy_with_logits(y, batch.targets.to(y.dtype))
        return torch.mean((y - batch.targets.to(y.dtype)) ** 2)

    def wrong(self, outputs: Tensor, batch: Batch) -> Tensor:
        self._check_outputs(outputs, batch)
        y = outputs[-1, :, 0]
        if self.loss_kind == "bce":
            # sigmoid(y) >= 0.5  <=>  y >= 0
            return (y >= 0) != (batch.targets > 0.5)
        return (y - batch.targets.to(y.dtype)).abs() >= self.tolerance


# ---------------------------------------------------------------------------------
# §4-5: temporal order
# ---------------------------------------------------------------------------------

_TEMPORAL_RANGES = {2: ((1, 2), (5, 6)), 3: ((1, 2), (3, 4), (6, 7))}


class TemporalOrderTask(Task):
    """2-bit and 3-bit temporal order (§4-5).

    * Fixed length ``L = T``; one-hot input over 6 symbols: specials A=0, B=1,
      distractors 2..5 (uniform at every non-special step).
    * Special positions ``p_k ~ U{floor(a_k T) .. floor(b_k T)-1}`` with
      ``[a, b) = [0.1, 0.2), [0.5, 0.6)`` (2-bit) or ``[0.1, 0.2), [0.3, 0.4), [0.6, 0.7)``
      (3-bit); ``positions`` is ``(B, bits)`` long.
    * ``targets``: ``(B,)`` long class ``s0 + 2 s1 (+ 4 s2)``; softmax cross-entropy and
      argmax "wrong" at the last step only. Chance: ln 4 / ln 8, 75% / 87.5% wrong.
    """

    input_dim = 6
    loss_kind = "ce"
    loss_steps = "last"

    def __init__(self, name: str, T: int, bits: int) -> None:
        super().__init__(name, T)
        self.bits = bits
        self.output_dim = 2**bits
        self.lengths = (T, T)
        self.chance_loss = math.log(self.output_dim)
        self.chance_wrong = 1.0 - 1.0 / self.output_dim
        min_ok = _min_valid_T(lambda t: all(lo <= hi for _, lo, hi in self._ranges(t)))
        _validate_ranges(name, T, self._ranges, [T], min_ok)

    def _ranges(self, T: int) -> List[Tuple[str, int, int]]:
        return [
            (f"p{k}", _floor_frac(a, T), _floor_frac(b, T) - 1)
            for k, (a, b) in enumerate(_TEMPORAL_RANGES[self.bits])
        ]

    def _generate(self, B, g, dev, dtype):
        T = self.T
        ids = torch.randint(2, 6, (T, B), generator=g, device=dev)
        cols = torch.arange(B, device=dev)
        target = torch.zeros(B, dtype=torch.long, device=dev)
        positions = []
        for k, (_, lo, hi) in enumerate(self._ranges(T)):
            p = torch.randint(lo, hi + 1, (B,), generator=g, device=dev)
            s = torch.randint(0, 2, (B,), generator=g, device=dev)
            ids[p, cols] = s
            target += s << k
            positions.append(p)
        inputs = F.one_hot(ids, 6).to(dtype)
        return Batch(inputs, target, torch.stack(positions, dim=1))

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        self._check_outputs(outputs, batch)
        return F.cross_entropy(outputs[-1], batch.targets)

    def wrong(self, outputs: Tensor, batch: Batch) -> Tensor:
        self._check_outputs(outputs, batch)
        return outputs[-1].argmax(dim=-1) != batch.targets


# ---------------------------------------------------------------------------------
# §6: random permutation
# ---------------------------------------------------------------------------------


class RandomPermutationTask(Task):
    """Random permutation (§6).

    * Length ``T``; one-hot input/output over 100 symbols. ``x(0) ∈ {0, 1}``;
      ``x(1..T-1)`` uniform over 2..99.
    * ``targets``: ``(L, B)`` long: ``x(t+1)`` for ``t < T-1`` and ``x(0)`` at the last step.
    * Loss: softmax cross-entropy at every step, mean over steps and batch. Wrong: argmax
      at the last step only. Chance (no memory: uniform over 2..99, then over {0, 1}):
      loss ``((T-1) ln 98 + ln 2) / T``, 50% wrong.
    """

    input_dim = 100
    output_dim = 100
    loss_kind = "ce"
    loss_steps = "all"
    chance_wrong = 0.5

    def __init__(self, name: str, T: int) -> None:
        super().__init__(name, T)
        if T < 2:
            raise ValueError(f"{name}: T={T} is too short (every T >= 2 is valid)")
        self.lengths = (T, T)
        self.chance_loss = ((T - 1) * math.log(98.0) + math.log(2.0)) / T

    def _generate(self, B, g, dev, dtype):
        first = torch.randint(0, 2, (1, B), generator=g, device=dev)
        rest = torch.randint(2, 100, (self.T - 1, B), generator=g, device=dev)
        ids = torch.cat([first, rest], dim=0)
        targets = torch.cat([ids[1:], ids[:1]], dim=0)
        return Batch(F.one_hot(ids, 100).to(dtype), targets)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        self._check_outputs(outputs, batch)
        return F.cross_entropy(outputs.reshape(-1, self.output_dim), batch.targets.reshape(-1))

    def wrong(self, outputs: Tensor, batch: Batch) -> Tensor:
        self._check_outputs(outputs, batch)
        return outputs[-1].argmax(dim=-1) != batch.targets[-1]


# ---------------------------------------------------------------------------------
# §7-8: noiseless memorization
# ---------------------------------------------------------------------------------


class MemorizationTask(Task):
    """Noiseless memorization, 5-bit (``n=5`` symbols of 2 values) and "20-bit"
    (``n=10`` of 5 values), §7-8.

    * Input one-hot over ``{values 0..k-1, blank=k, trigger=k+1}`` (dim ``k+2``); output
      classes ``{values, blank}`` (dim ``k+1``). Total length ``L = T + 2n``.
    * Steps ``0..n-1`` hold the data, ``n..T+n-1`` blank, step ``T+n`` the trigger, the
      remaining ``n-1`` steps blank.
    * ``targets``: ``(L, B)`` long: blank, except the last ``n`` steps (``T+n..T+2n-1``)
      whose targets are the data in order.
    * Loss: softmax cross-entropy at every step (mean over steps and batch). Wrong: the
      argmax is wrong at *any* step (the rule of §7-8; blank steps count too).
    * If ``batch_size`` is a multiple of ``n_distinct = k**n`` (32 for 5-bit),
      :meth:`sample` enumerates every distinct sequence equally often in random order.
    * Chance (no memory: blanks right, uniform over the values on the last ``n`` steps,
      argmax a fixed value): loss ``n ln k / L``, wrong ``1 - k**-n``.
    """

    loss_kind = "ce"
    loss_steps = "all"

    def __init__(self, name: str, T: int, n: int, k: int, batch_size: int) -> None:
        super().__init__(name, T)
        self.n, self.k = n, k
        self.input_dim = k + 2
        self.output_dim = k + 1
        self.default_batch_size = batch_size
        self.n_distinct = k**n
        self.lengths = (T + 2 * n, T + 2 * n)
        self.chance_loss = n * math.log(k) / (T + 2 * n)
        self.chance_wrong = 1.0 - float(k) ** (-n)

    def _generate(self, B, g, dev, dtype):
        n, k, T = self.n, self.k, self.T
        if B % self.n_distinct == 0:
            # Every distinct sequence B / k**n times, shuffled: data[i, s] = digit i of s.
            code = torch.arange(self.n_distinct, device=dev).repeat(B // self.n_distinct)
            code = code[torch.randperm(B, generator=g, device=dev)]
            powers = k ** torch.arange(n, device=dev)
            data = (code[None, :] // powers[:, None]) % k
        else:
            data = torch.randint(0, k, (n, B), generator=g, device=dev)
        L = T + 2 * n
        ids = torch.full((L, B), k, dtype=torch.long, device=dev)
        ids[:n] = data
        ids[T + n] = k + 1
        targets = torch.full((L, B), k, dtype=torch.long, device=dev)
        targets[T + n:] = data
        return Batch(F.one_hot(ids, k + 2).to(dtype), targets)

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        self._check_outputs(outputs, batch)
        return F.cross_entropy(outputs.reshape(-1, self.output_dim), batch.targets.reshape(-1))

    def wrong(self, outputs: Tensor, batch: Batch) -> Tensor:
        self._check_outputs(outputs, batch)
        return (outputs.argmax(dim=-1) != batch.targets).any(dim=0)


# ---------------------------------------------------------------------------------
