"""The base of the synthetic problems (:mod:`psgdlib.tasks`): the minibatch ``Batch``, the
evaluation result, the ``Task`` interface (sampling, loss, wrong, test set, evaluation), the
problem names, the fixed test-set seeds and the size limits.  The conventions are documented in
:mod:`psgdlib.tasks`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Batch", "EvalResult", "Task", "NAMES", "ALL_NAMES", "test_seed", "MAX_T", "MAX_BATCH_BYTES"]

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
    """Seed of the fixed test set of ``(name, T)`` (see "Test set" in :mod:`psgdlib.tasks`).

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
        default_batch_size: 100 (32 for 5-bit memorization), as in the paper (:mod:`psgdlib.tasks`, "Common conventions").
        n_distinct: number of distinct input sequences if finite (memorization), else None.
        chance_wrong: fraction wrong of the no-memory predictor (see subclasses).
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

        "Common conventions" (psgdlib.tasks): generated once from :attr:`test_seed` (on CPU, then
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
