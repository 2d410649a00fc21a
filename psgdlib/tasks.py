"""The synthetic RNN problems of Li (2016), Experiments 1 and 2.

The problems are those of the paper's Experiment 2 (Li 2016, Sec. IV; Table I's order, numbered
§1-8 below: 1 addition, 2 multiplication, 3 XOR, 4/5 2-/3-bit temporal order, 6 random
permutation, 7/8 5-/20-bit memorization), which the paper takes from Hochreiter & Schmidhuber
(1997) and Martens & Sutskever (2011), plus Experiment 1's ``addition_variable``.  Where the
papers leave a detail open, the choice made here is stated below ("Common conventions") or in
the class of the problem; together they are this repository's specification.  The classes live
in :mod:`psgdlib.tasks_base` (``Batch``, ``Task``) and :mod:`psgdlib.tasks_problems`.
Indices are 0-based; ``U{a..b}`` is a uniform integer, inclusive.

Usage::

    task = get("addition", T=100)
    g = torch.Generator().manual_seed(0)
    batch = task.sample(task.default_batch_size, generator=g)   # Batch
    outputs = model(batch.inputs)                                # (L, B, output_dim)
    task.loss(outputs, batch).backward()
    err = task.evaluate(model).error_rate                       # fixed test set

Common conventions (and design choices for §1-8):

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
* **5-bit memorization.** Only 32 distinct sequences exist (§7). When ``batch_size``
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

from .tasks_base import (ALL_NAMES, MAX_BATCH_BYTES, MAX_T, NAMES, Batch, EvalResult, Task, _check_T,
                         test_seed)
from .tasks_problems import MarkerTask, MemorizationTask, RandomPermutationTask, TemporalOrderTask

__all__ = ["Batch", "EvalResult", "Task", "MarkerTask", "TemporalOrderTask", "RandomPermutationTask",
           "MemorizationTask", "NAMES", "ALL_NAMES", "get", "test_seed", "MAX_T", "MAX_BATCH_BYTES"]


def get(name: str, T: int) -> Task:
    """Build problem ``name`` at nominal length ``T`` (§1-8 of the module docstring, and Experiment 1).

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
