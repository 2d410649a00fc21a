"""The synthetic RNN problems of Li (2016), Experiments 1 and 2.

Every definition follows ``specs/tasks.md`` (referred to below as "spec §k").
Indices are 0-based; ``U{a..b}`` is a uniform integer, inclusive.

Usage::

    task = get("addition", T=100)
    g = torch.Generator().manual_seed(0)
    batch = task.sample(task.default_batch_size, generator=g)   # Batch
    outputs = model(batch.inputs)                                # (L, B, output_dim)
    task.loss(outputs, batch).backward()
    err = task.evaluate(model).error_rate                       # fixed test set

Design choices (spec "Common conventions" and §1-8):

* **Time-major tensors.** ``Batch.inputs`` is ``(L, B, input_dim)``; the model output
  passed to :meth:`Task.loss` / :meth:`Task.wrong` is ``(L, B, output_dim)``, one output
  per step (a regression value for addition/multiplication, one logit for XOR, class
  logits otherwise).
* **Variable lengths (addition, multiplication, XOR).** One length
  ``L ~ U{T .. T + ceil(0.1 T) - 1}`` is drawn *per minibatch*: all sequences in a
  ``Batch`` share it, there is no padding, and the target is scored at the last step.
  The marker positions are drawn per sequence from that ``L``.
* **Test set.** 10,000 sequences per (problem, T), a list of ``Batch`` chunks (1,000
  sequences each by default; for the variable-length problems each chunk has its own
  ``L``). The chunks come from one ``torch.Generator`` seeded with
  ``10**12 + sha256("psgdlib-test:<name>:<T>")[:6 bytes]``, far above any training
  seed a user would pick (and independent of ``PYTHONHASHSEED``). It is cached per task
  instance, device and dtype.
* **5-bit memorization.** Only 32 distinct sequences exist (spec §7). When ``batch_size``
  is a multiple of the number of distinct sequences (``n_distinct``), :meth:`Task.sample`
  returns every distinct sequence equally often, in a random order: the paper's exact
  (non-stochastic) gradient with its minibatch of 32. Other sizes are drawn i.i.d.
  The test set is 10,000 i.i.d. sequences, as for every problem.
* **Sizes.** ``T`` is at most :data:`MAX_T` (100,000; the paper's largest is 200), and a
  minibatch, test chunk or test set that would need more than :data:`MAX_BATCH_BYTES`
  (16 GiB) is refused with a ValueError before anything is allocated.
* **Generation** is vectorized, happens on the generator's device (CPU by default; the
  global RNG when ``generator`` is None) in float64, and is then cast to ``dtype`` and
  moved to ``device``, so a seed gives the same batch on CPU and CUDA.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Batch",
    "EvalResult",
    "Task",
    "MarkerTask",
    "TemporalOrderTask",
    "RandomPermutationTask",
    "MemorizationTask",
    "NAMES",
    "ALL_NAMES",
    "get",
    "test_seed",
    "MAX_T",
    "MAX_BATCH_BYTES",
]

Device = Union[str, torch.device, None]

#: The eight problems of Experiment 2, in the order of the paper's Table I.
NAMES: Tuple[str, ...] = (
    "addition",
    "multiplication",
    "xor",
    "temporal_order_2bit",
    "temporal_order_3bit",
    "random_permutation",
    "memorization_5bit",
    "memorization_20bit",
)
#: Every name accepted by :func:`get` (the eight problems plus Experiment 1's variant).
ALL_NAMES: Tuple[str, ...] = NAMES + ("addition_variable",)

_TEST_SEED_OFFSET = 10**12

#: Largest nominal length ``T`` accepted: 500 times the paper's largest (200).  Above it a
#: test set would not fit in memory, and checking the marker ranges alone would take minutes.
MAX_T = 100_000
#: Largest memory (bytes) one minibatch, test chunk or test set may need while generated.
MAX_BATCH_BYTES = 2**34


def _check_T(T: int) -> None:
    """Raise ValueError unless ``1 <= T <= MAX_T`` is an integer."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive integer, got {T!r}")
    if T > MAX_T:
        raise ValueError(f"T={T} is above the limit psgdlib.tasks.MAX_T={MAX_T} (the paper uses "
                         f"T <= 200; a test set of 10,000 sequences of length {T} would need "
                         f"{T * 10**4 * 4 / 2**30:.3g} GiB per input channel in float32)")


def test_seed(name: str, T: int) -> int:
    """Seed of the fixed test set of ``(name, T)`` (spec "Common conventions").

    ``10**12`` plus the first 6 bytes of ``sha256("psgdlib-test:<name>:<T>")``; stable
    across processes, distinct per (name, T) and far from small training seeds.
    """
    digest = hashlib.sha256(f"psgdlib-test:{name}:{T}".encode()).digest()
    return _TEST_SEED_OFFSET + int.from_bytes(digest[:6], "big")


test_seed.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _floor_frac(k: int, x: int) -> int:
    """``floor(k/10 * x)`` in exact integer arithmetic."""
    return (k * x) // 10


def _ceil_tenth(x: int) -> int:
    """``ceil(0.1 x)`` in exact integer arithmetic."""
    return -((-x) // 10)


@dataclass
class Batch:
    """One minibatch of a problem.

    Attributes:
        inputs: ``(L, B, input_dim)`` float tensor, time-major.
        targets: per problem (see the task's docstring):
            addition/multiplication ``(B,)`` float, XOR ``(B,)`` float in {0, 1},
            temporal order ``(B,)`` long class, random permutation and memorization
            ``(L, B)`` long class per step.
        positions: ``(B, k)`` long marker positions (addition/multiplication/XOR: ``I, J``;
            temporal order: ``p0, p1[, p2]``), ``None`` for the other problems.
    """

    inputs: Tensor
    targets: Tensor
    positions: Optional[Tensor] = None

    @property
    def length(self) -> int:
        """Sequence length ``L`` (shared by the whole batch)."""
        return int(self.inputs.shape[0])

    @property
    def batch_size(self) -> int:
        """Number of sequences ``B``."""
        return int(self.inputs.shape[1])

    def to(self, device: Device = None, dtype: Optional[torch.dtype] = None) -> "Batch":
        """Copy to ``device``; ``dtype`` (if given) casts the float tensors only."""
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if t is None:
                out[f.name] = None
                continue
            if dtype is not None and t.is_floating_point():
                out[f.name] = t.to(device=device, dtype=dtype)
            else:
                out[f.name] = t.to(device=device)
        return Batch(**out)


class EvalResult(NamedTuple):
    """Result of :meth:`Task.evaluate`: fraction wrong, mean loss, number of sequences."""

    error_rate: float
    loss: float
    n: int


class Task:
    """Base class of the problems; use :func:`get` to build one.

    Attributes:
        name, T: problem name and nominal length.
        input_dim, output_dim: sizes of ``u(t)`` and ``y(t)``.
        loss_kind: ``"mse"``, ``"bce"`` (with logits) or ``"ce"`` (softmax cross-entropy).
        loss_steps: ``"last"`` (only the last step is scored) or ``"all"``.
        lengths: inclusive range ``(L_min, L_max)`` of the sequence lengths sampled.
        default_batch_size: 100 (32 for 5-bit memorization), spec "Common conventions".
        n_distinct: number of distinct input sequences if finite (memorization), else None.
        chance_wrong: fraction wrong of the spec's no-memory predictor (see subclasses).
        chance_loss: expected loss of that predictor.
    """

    name: str
    T: int
    input_dim: int
    output_dim: int
    loss_kind: str
    loss_steps: str
    lengths: Tuple[int, int]
    default_batch_size: int = 100
    n_distinct: Optional[int] = None
    chance_wrong: float
    chance_loss: float

    def __init__(self, name: str, T: int) -> None:
        _check_T(T)
        self.name = name
        self.T = T
        self._test_cache: Dict[tuple, List[Batch]] = {}

    def _check_memory(self, B: int, itemsize: int, what: str) -> None:
        """Refuse ``B`` sequences whose inputs ``(L_max, B, input_dim)`` of ``itemsize``-byte
        entries exceed :data:`MAX_BATCH_BYTES`, before anything is allocated."""
        L = max(self.lengths[1], getattr(self, "test_lengths", self.lengths)[1])
        need = B * L * self.input_dim * itemsize
        if need > MAX_BATCH_BYTES:
            raise ValueError(
                f"{self.name} at T={self.T}: {what} of {B} sequences of length up to {L} needs about "
                f"{need / 2**30:.3g} GiB, above psgdlib.tasks.MAX_BATCH_BYTES = "
                f"{MAX_BATCH_BYTES / 2**30:.3g} GiB; use fewer sequences or a smaller T")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, T={self.T})"

    # ----------------------------------------------------------------- sampling
    def sample(
        self,
        batch_size: int,
        generator: Optional[torch.Generator] = None,
        device: Device = None,
        dtype: torch.dtype = torch.float32,
    ) -> Batch:
        """Draw a fresh minibatch of ``batch_size`` sequences (see class docstring).

        Randomness comes only from ``generator`` (the global RNG if None), so a seed
        fixes the batch. Generated on the generator's device, then moved to ``device``.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point dtype, got {dtype}")
        self._check_memory(batch_size, 8, "a minibatch")   # generated as int64 / float64
        gen_device = generator.device if generator is not None else torch.device("cpu")
        batch = self._generate(batch_size, generator, gen_device, dtype)
        if device is not None and torch.device(device) != gen_device:
            batch = batch.to(device)
        return batch

    def _generate(
        self, B: int, g: Optional[torch.Generator], dev: torch.device, dtype: torch.dtype
    ) -> Batch:
        raise NotImplementedError

    # ----------------------------------------------------------------- test set
    @property
    def test_seed(self) -> int:
        """Seed of this task's fixed test set."""
        return test_seed(self.name, self.T)

    def test_batches(
        self,
        n: int = 10000,
        chunk: int = 1000,
        device: Device = None,
        dtype: torch.dtype = torch.float32,
        cache: bool = True,
    ) -> List[Batch]:
        """The fixed test set: ``n`` sequences as a list of Batches of ``chunk`` sequences.

        Spec "Common conventions": generated once from :attr:`test_seed` (on CPU, then
        moved to ``device``). Cached per (n, chunk, device, dtype) unless ``cache`` is
        False (e.g. random permutation at T=200 is ~800 MB of one-hot float32 inputs).
        """
        for label, v in (("n", n), ("chunk", chunk)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{label} must be a positive integer, got {v!r}")
        self._check_memory(min(chunk, n), 8, "a test chunk")
        self._check_memory(n, dtype.itemsize, "the test set")
        dev = torch.device(device) if device is not None else torch.device("cpu")
        key = (n, chunk, str(dev), dtype)
        if cache and key in self._test_cache:
            return self._test_cache[key]
        g = torch.Generator().manual_seed(self.test_seed)
        batches = []
        for start in range(0, n, chunk):
            b = self._generate_test_chunk(min(chunk, n - start), g, dtype)
            batches.append(b.to(dev) if dev.type != "cpu" else b)
        if cache:
            self._test_cache[key] = batches
        return batches

    def _generate_test_chunk(self, B: int, g: torch.Generator, dtype: torch.dtype) -> Batch:
        return self._generate(B, g, torch.device("cpu"), dtype)

    def test_set(
        self, n: int = 10000, device: Device = None, dtype: torch.dtype = torch.float32
    ) -> List[Batch]:
        """Same as :meth:`test_batches` with the default chunk of 1,000 sequences."""
        return self.test_batches(n=n, device=device, dtype=dtype)

    @torch.no_grad()
    def evaluate(
        self,
        model_fn: Callable[[Tensor], Tensor],
        n: int = 10000,
        chunk: int = 1000,
        device: Device = None,
        dtype: torch.dtype = torch.float32,
    ) -> EvalResult:
        """Run ``model_fn(inputs) -> outputs`` on the test set; fraction wrong and mean loss.

        The loss is averaged over sequences (chunks weighted by their size).
        """
        wrong = 0
        loss = 0.0
        total = 0
        for b in self.test_batches(n=n, chunk=chunk, device=device, dtype=dtype):
            out = model_fn(b.inputs)
            wrong += int(self.wrong(out, b).sum().item())
            loss += float(self.loss(out, b).item()) * b.batch_size
            total += b.batch_size
        return EvalResult(wrong / total, loss / total, total)

    # ----------------------------------------------------------- loss and wrong
    def _check_outputs(self, outputs: Tensor, batch: Batch) -> None:
        expected = (batch.length, batch.batch_size, self.output_dim)
        if not isinstance(outputs, Tensor) or tuple(outputs.shape) != expected:
            got = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
            raise ValueError(
                f"{self.name}: outputs must have shape (L, B, output_dim) = {expected}, got {got}"
            )

    def loss(self, outputs: Tensor, batch: Batch) -> Tensor:
        """Scalar training loss of ``outputs`` ``(L, B, output_dim)`` on ``batch``."""
        raise NotImplementedError

    def wrong(self, outputs: Tensor, batch: Batch) -> Tensor:
        """``(B,)`` bool: which sequences ``outputs`` gets wrong (per-problem rule)."""
        raise NotImplementedError


def _validate_ranges(name: str, T: int, ranges_of: Callable[[int], Sequence[Tuple[str, int, int]]],
                     lengths: Sequence[int], min_ok: int) -> None:
    """Raise if any marker range ``lo..hi`` is empty for a length in ``lengths``."""
    for L in lengths:
        for label, lo, hi in ranges_of(L):
            if lo > hi:
                raise ValueError(
                    f"{name}: T={T} is too short: the marker range {label} = U{{{lo}..{hi}}} "
                    f"at length {L} is empty (every T >= {min_ok} is valid)"
                )


def _min_valid_T(ok: Callable[[int], bool], upto: int = 1000) -> int:
    """Smallest T0 such that ``ok(T)`` holds for every T0 <= T <= upto."""
    T0 = upto
    while T0 > 1 and ok(T0 - 1):
        T0 -= 1
    return T0


# ---------------------------------------------------------------------------------
# Spec §1-3: addition, multiplication, XOR (and Experiment 1's variable-length variant)
# ---------------------------------------------------------------------------------


def _marker_ranges(L: int) -> List[Tuple[str, int, int]]:
    """Spec §1: ``I ~ U{0..floor(0.1L)-1}``, ``J ~ U{floor(0.1L)..floor(0.5L)-1}``."""
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
    """Addition, multiplication, XOR (spec §1-3) and Experiment 1's ``addition_variable``.

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
        # addition_variable is evaluated on the addition test set (spec, Experiment 1).
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
# Spec §4-5: temporal order
# ---------------------------------------------------------------------------------

_TEMPORAL_RANGES = {2: ((1, 2), (5, 6)), 3: ((1, 2), (3, 4), (6, 7))}


class TemporalOrderTask(Task):
    """2-bit and 3-bit temporal order (spec §4-5).

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
# Spec §6: random permutation
# ---------------------------------------------------------------------------------


class RandomPermutationTask(Task):
    """Random permutation (spec §6).

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
# Spec §7-8: noiseless memorization
# ---------------------------------------------------------------------------------


class MemorizationTask(Task):
    """Noiseless memorization, 5-bit (``n=5`` symbols of 2 values) and "20-bit"
    (``n=10`` of 5 values), spec §7-8.

    * Input one-hot over ``{values 0..k-1, blank=k, trigger=k+1}`` (dim ``k+2``); output
      classes ``{values, blank}`` (dim ``k+1``). Total length ``L = T + 2n``.
    * Steps ``0..n-1`` hold the data, ``n..T+n-1`` blank, step ``T+n`` the trigger, the
      remaining ``n-1`` steps blank.
    * ``targets``: ``(L, B)`` long: blank, except the last ``n`` steps (``T+n..T+2n-1``)
      whose targets are the data in order.
    * Loss: softmax cross-entropy at every step (mean over steps and batch). Wrong: the
      argmax is wrong at *any* step (exactly the spec's rule; blank steps count too).
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


def get(name: str, T: int) -> Task:
    """Build problem ``name`` at nominal length ``T`` (spec §1-8 and Experiment 1).

    ``name`` is one of :data:`ALL_NAMES`. ``addition_variable`` (Experiment 1) trains on
    lengths ``U{ceil(T/2) .. T}`` drawn per minibatch and uses the ``addition`` test set
    at the same ``T``; the paper's setting is ``T=100`` (lengths ``U{50..100}``).
    Raises ValueError for an unknown name, a ``T`` too short for the marker ranges, or a
    ``T`` above :data:`MAX_T`.
    """
    if name not in ALL_NAMES:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(ALL_NAMES)}")
    _check_T(T)
    if name in ("addition", "multiplication", "xor", "addition_variable"):
        return MarkerTask(name, T)
    if name == "temporal_order_2bit":
        return TemporalOrderTask(name, T, bits=2)
    if name == "temporal_order_3bit":
        return TemporalOrderTask(name, T, bits=3)
    if name == "random_permutation":
        return RandomPermutationTask(name, T)
    if name == "memorization_5bit":
        return MemorizationTask(name, T, n=5, k=2, batch_size=32)
    return MemorizationTask(name, T, n=10, k=5, batch_size=100)
