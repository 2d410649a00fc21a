"""Experiment 2 (the pathological problems, Tables I and II): the grids and the paper's numbers.

The runs themselves go through :mod:`psgdlib.runner` (``python -m psgdlib.experiments run``);
the tables are built by :mod:`psgdlib.tables`.
"""
from __future__ import annotations

from typing import Any

from . import tasks as _tasks

__all__ = ["PAPER_BUDGET", "PROFILE_GRIDS", "PAPER_PROBLEMS", "PAPER_TABLE1", "PAPER_TABLE2",
           "PROBLEM_NAMES", "paper_order"]

PAPER_BUDGET = 100_000

#: The grids of each profile: smoke (CI, seconds), cpu (default, minutes), paper (GPU hours).
PROFILE_GRIDS: dict[str, dict[str, Any]] = {
    "smoke": dict(problems=("addition", "temporal_order_2bit"), Ts=(10,), optimizers=("psgd_kron",),
                  seeds=(0,), hidden=20, iterations=200, eval_every=50, n_test=1000),
    "cpu": dict(problems=("addition", "temporal_order_2bit"), Ts=(30,), optimizers=("psgd_kron",),
                seeds=(0, 1), hidden=100, iterations=20_000, eval_every=100, n_test=10_000),
    "paper": dict(problems=_tasks.NAMES, Ts=(30, 50, 100, 200), optimizers=("psgd_kron",),
                  seeds=(0, 1, 2, 3, 4), hidden=100, iterations=PAPER_BUDGET, eval_every=100,
                  n_test=10_000),
}

#: The problems in the paper's order (Tables I and II).
PAPER_PROBLEMS = _P = ("addition", "multiplication", "xor", "temporal_order_2bit", "temporal_order_3bit",
                       "random_permutation", "memorization_5bit", "memorization_20bit")
#: The paper's Table I (failed runs / total runs, PSGD with the Kronecker preconditioner).
PAPER_TABLE1: dict[str, dict[int, str]] = dict(zip(_P, (
    {30: "0/5", 50: "0/5", 100: "0/5", 200: "2/5"},
    {30: "0/5", 50: "0/5", 100: "0/5", 200: "0/5"},
    {30: "0/5", 50: "0/5", 100: "3/5", 200: "1/1"},
    {30: "0/5", 50: "0/5", 100: "0/5", 200: "3/4"},
    {30: "0/5", 50: "0/5", 100: "0/5", 200: "2/3"},
    {30: "0/5", 50: "0/5", 100: "0/5", 200: "0/5"},
    {30: "0/5", 50: "0/5", 100: "0/5", 200: "0/5"},
    {30: "0/5", 50: "0/5", 100: "0/5", 200: "0/5"},
)))
#: The paper's Table II: longest T without a failure (HF Tikhonov, HF structural, PSGD).
PAPER_TABLE2: dict[str, tuple[str, str, str]] = dict(zip(_P, (
    ("100", "100", "100"), ("100", "100", "200"), ("30", "50", "50"), ("50", "50", "100"),
    ("100", "100", "100"), ("200", "100", "200"), ("<30", "200", "200"), ("30", "100", "200"),
)))


def paper_order(problems) -> list[str]:
    """The distinct ``problems`` in the paper's order (Tables I/II), unknown ones sorted after."""
    present = set(problems)
    return [p for p in _P if p in present] + sorted(present - set(_P))


#: The paper's names of the problems, for tables and figures.
PROBLEM_NAMES = dict(zip(_P, ("Addition", "Multiplication", "XOR", "2-bit temporal order",
                              "3-bit temporal order", "Random permutation", "5-bit memorization",
                              "20-bit memorization")))
_paper_order = paper_order   # the name resources.py and older callers import
