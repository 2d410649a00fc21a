"""Experiment 1 (the paper's Fig. 1): SGD against PSGD with a sparse and a dense preconditioner.

The addition problem with training lengths ``U{50..100}`` drawn per minibatch
(``tasks.get("addition_variable", 100)``), evaluated on the addition test set at
T = 100; an RNN of eq. (1) with 50 hidden units (n = 2701 parameters); the same
initial weights (``seed``) and the same step size 0.01 for every optimizer; SGD's
gradient clipped at norm 1 (and PSGD's preconditioned gradient, see below); every run goes on
after it solves the problem (``stop_when_solved=False``: past the first evaluation with < 1%
wrong, until one with < 0.1% wrong or the budget), so that the learning curves go on.

**Clipping.** The paper clips SGD's gradient at norm 1 and says nothing about PSGD. Run as
written (PSGD unclipped), nothing bounds a step ``mu P g`` taken at one of the gradient
"cliffs" of this problem, where one minibatch's gradient is orders of magnitude above the
typical one; such a step can throw the weights into saturation.  Whether it happens depends
on the run (and on the platform's rounding): the stored paper-literal runs
(``results/fig1_noclip``) and chapter 2 show what happened on this repository's machine.  The
author's public PyTorch demos of PSGD on this problem (``psgd_torch``) clip the
*preconditioned* gradient ``P g`` at norm 1 for PSGD too, and so do the configs here by
default (``clip=1.0`` for every optimizer; ``TrainConfig.clip`` clips ``g`` for SGD and
``P g`` for PSGD).  ``experiment1_configs(..., clip=None)`` gives the
paper-literal variant.

The long run stored in ``results/fig1`` is produced by (resumable; each finished run is one
JSON file written by :func:`psgdlib.runner.run_file` through :func:`psgdlib.runner.run_grid`)::

    python -m psgdlib.fig1 run --profile paper --out results/fig1

or, the same grid, by the runner's command line with ``--clip 1`` (``experiments_argv(clip=1.0)``;
``--clip`` clips ``g`` for SGD and ``P g`` for PSGD, so the one option clips every optimizer
at 1).  The paper-literal variant (PSGD unclipped) is the runner's command without ``--clip``::

    python -m psgdlib.experiments run --problems addition_variable --T 100 --hidden 50 \\
        --optimizers sgd,psgd_kron,psgd_dense --seeds 0-2 --iterations 20000 \\
        --eval-every 100 --n-test 10000 --no-stop --out results/fig1_noclip

``python -m psgdlib.fig1 summarize --out results/fig1`` prints the final numbers and
``python -m psgdlib.fig1 plot --out results/fig1 --save fig1.png`` draws the curves.

In Python::

    from psgdlib import fig1
    configs = fig1.experiment1_configs("cpu")       # list of TrainConfig dicts
    df = fig1.load_curves("results/fig1")           # long table, one row per evaluation
    fig1.plot_curves(df, x="iteration", y="test_loss")
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import curves as _curves
from . import plotting as _plotting
from .curves import curves_from_result, final_table

__all__ = ["PROBLEM", "T", "HIDDEN", "OPTIMIZERS", "LABELS", "COLORS", "PROFILE_SETTINGS", "CHANCE_MSE",
           "n_parameters", "kron_factor_dims", "experiment1_configs", "experiments_argv",
           "long_run_command", "run", "curves_from_result", "load_curves", "final_table",
           "plateau_exit", "plot_curves", "main"]

PROBLEM = "addition_variable"
T = 100
HIDDEN = 50
OPTIMIZERS = ("sgd", "psgd_kron", "psgd_dense")
LABELS = {o: _plotting.LABELS[o] for o in OPTIMIZERS}
COLORS = {o: _plotting.COLORS[o] for o in OPTIMIZERS}

#: Per profile: iteration budget, evaluation period, test-set size, seeds.  ``dense_iterations``
#: caps the dense preconditioner's runs (its O(n^2) update dominates an iteration on a CPU,
#: see benchmarks/dense_update.py);
#: ``None`` means the same budget as the others.
PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": dict(iterations=100, dense_iterations=10, eval_every=20, n_test=1000, seeds=(0,)),
    "cpu": dict(iterations=3000, dense_iterations=1000, eval_every=100, n_test=2000, seeds=(0,)),
    "paper": dict(iterations=20_000, dense_iterations=None, eval_every=100, n_test=10_000, seeds=(0, 1, 2)),
}


def n_parameters(hidden: int = HIDDEN, input_dim: int = 2, output_dim: int = 1) -> int:
    """Parameters of the RNN of eq. (1): ``Nx (Nu + Nx + 1) + Ny (Nx + 1)``."""
    return hidden * (input_dim + hidden + 1) + output_dim * (hidden + 1)


def kron_factor_dims(hidden: int = HIDDEN, input_dim: int = 2, output_dim: int = 1) -> tuple[int, int, int, int]:
    """Dimensions of ``P1, P2, P3, P4`` in eq. (5): ``Nx, Nu + Nx + 1, Ny, Nx + 1``."""
    return hidden, input_dim + hidden + 1, output_dim, hidden + 1


def _settings(profile: str) -> dict[str, Any]:
    if profile not in PROFILE_SETTINGS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {tuple(PROFILE_SETTINGS)}")
    return dict(PROFILE_SETTINGS[profile])


def experiment1_configs(profile: str = "cpu", seeds: Iterable[int] | None = None,
                        optimizers: Sequence[str] = OPTIMIZERS, equal_budgets: bool = False,
                        **overrides: Any) -> list[dict]:
    """The Experiment-1 run configs of ``profile`` (dicts of :class:`psgdlib.train.TrainConfig`).

    Every optimizer gets the same ``seed`` (hence the same initial weights and the same
    minibatches), the same step size (``lr=None``: 0.01 for SGD and PSGD) and the same
    clipping threshold (``clip=1.0``: SGD's gradient, PSGD's preconditioned gradient; pass
    ``clip=None`` for the paper-literal unclipped PSGD).  The dense runs use the profile's
    ``dense_iterations`` (and evaluate at least 5 times) unless ``equal_budgets`` is true or
    ``iterations`` is overridden.
    ``overrides`` replace any other ``TrainConfig`` field (e.g. ``pairs="hvp"``).
    """
    from .runner import grid
    s = _settings(profile)
    seeds = tuple(s["seeds"] if seeds is None else seeds)
    common = dict(problem=PROBLEM, T=T, hidden=HIDDEN, iterations=s["iterations"],
                  eval_every=s["eval_every"], n_test=s["n_test"], clip=1.0, stop_when_solved=False)
    common.update(overrides)
    problem, length = common.pop("problem"), common.pop("T")
    out = []
    for opt in optimizers:
        kw = dict(common)
        if opt == "psgd_dense" and not equal_budgets and s["dense_iterations"] and "iterations" not in overrides:
            kw["iterations"] = min(kw["iterations"], s["dense_iterations"])
            if "eval_every" not in overrides:   # at least 5 points on the short dense curve
                kw["eval_every"] = max(1, min(kw["eval_every"], kw["iterations"] // 5))
        out += grid([problem], [length], [opt], seeds, **kw)
    return out


def _seed_spec(seeds: Sequence[int]) -> str:
    seeds = sorted(int(s) for s in seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(s) for s in seeds)



def experiments_argv(profile: str = "paper", out: str = "results/fig1_noclip", seeds: Iterable[int] | None = None,
                     iterations: int | None = None, clip: float | None = None) -> list[str]:
    """Arguments of ``python -m psgdlib.experiments`` for the profile's grid with equal budgets;
    equals ``experiment1_configs(profile, equal_budgets=True, clip=clip)``.  The default
    ``clip=None`` is the paper-literal grid (PSGD unclipped); ``clip=1.0`` adds ``--clip 1``,
    the grid of ``python -m psgdlib.fig1 run``."""
    s = _settings(profile)
    return ["run", "--problems", PROBLEM, "--T", str(T), "--hidden", str(HIDDEN),
            "--optimizers", ",".join(OPTIMIZERS), "--seeds", _seed_spec(s["seeds"] if seeds is None else seeds),
            "--iterations", str(iterations or s["iterations"]), "--eval-every", str(s["eval_every"]),
            "--n-test", str(s["n_test"]), "--no-stop", *(["--clip", f"{clip:g}"] if clip is not None else []),
            "--out", str(out)]


def long_run_command(profile: str = "paper", out: str | None = None, clip: bool = True) -> str:
    """The shell command that produces the stored long run (``clip=False``: the unclipped variant,
    by default into ``results/fig1_noclip``)."""
    if clip:
        return f"python -m psgdlib.fig1 run --profile {profile} --out {out or 'results/fig1'}"
    out = out or "results/fig1_noclip"
    return "python -m psgdlib.experiments " + " ".join(experiments_argv(profile, out))


def run(profile: str = "paper", out: str | os.PathLike = "results/fig1", jobs: int = 1,
        device: str | None = None, seeds: Iterable[int] | None = None, progress: bool = True,
        command: str | None = None, **overrides: Any) -> list[Path]:
    """Run (or finish) the profile's grid with equal budgets through :func:`psgdlib.runner.run_grid`
    (which refuses a stored run made with other settings before anything trains).

    ``overrides`` go to :func:`experiment1_configs` (e.g. ``clip=None``, ``iterations=...``).
    The files written by this call get ``command`` (default: the ``python -m psgdlib.fig1``
    command line) as their provenance command.
    """
    from . import runner
    configs = experiment1_configs(profile, seeds=seeds, equal_budgets=True, **overrides)
    command = command or "python -m psgdlib.fig1 " + " ".join(sys.argv[1:])
    return runner.run_grid(configs, Path(out), jobs=jobs, device=device, progress=progress, command=command)


# --------------------------------------------------------- Fig. 1's curves, tables, plots
CHANCE_MSE: float = 1 / 24
"""Test MSE of the constant prediction 0.5 on the addition variant (the plateau of Fig. 1)."""

_YLABELS = {"test_loss": "test MSE (addition, T = 100)", "train_loss": "training MSE (lengths 50..100)",
            "test_error": "test error rate (|y - target| >= 0.04)"}


def load_curves(dirs: str | os.PathLike | Iterable[str | os.PathLike], problem: str | None = PROBLEM,
                hidden: int | None = HIDDEN):
    """:func:`psgdlib.curves.load_curves` with Fig. 1's problem and hidden size as defaults."""
    return _curves.load_curves(dirs, problem=problem, hidden=hidden)


def plateau_exit(df, fraction: float = 0.5, chance: float = CHANCE_MSE):
    """:func:`psgdlib.curves.plateau_exit`: the first evaluation of each run whose test MSE is
    below ``fraction * chance`` (default: half the MSE of predicting 0.5)."""
    return _curves.plateau_exit(df, chance=chance, fraction=fraction)


def plot_curves(df, x: str = "iteration", y: str = "test_loss", ax=None,
                optimizers: Sequence[str] | None = None, logy: bool = True, chance: float | None = None,
                title: str | None = None):
    """:func:`psgdlib.plotting.plot_curves` with Fig. 1's axis labels; ``chance`` is labelled
    as the MSE of predicting 0.5."""
    return _plotting.plot_curves(df, x, y, ax, optimizers, logy, chance, title, ylabels=_YLABELS,
                                 labels=LABELS, chance_label="chance (predict 0.5)")


# ----------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m psgdlib.fig1", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the grid through runner.run_grid (resumable)")
    r.add_argument("--profile", choices=tuple(PROFILE_SETTINGS), default="paper")
    r.add_argument("--out", default="results/fig1")
    r.add_argument("--seeds", default=None, help="e.g. 0-2 (default: the profile's)")
    r.add_argument("--iterations", type=int, default=None)
    r.add_argument("--jobs", type=int, default=1)
    r.add_argument("--device", default=None)
    r.add_argument("--no-clip", action="store_true",
                   help="paper-literal: PSGD unclipped (SGD stays clipped at 1); use another --out")
    r.add_argument("--dry-run", action="store_true", help="print the grid only")
    s = sub.add_parser("summarize", help="final numbers of the stored runs")
    s.add_argument("--out", default="results/fig1", nargs="+")
    p = sub.add_parser("plot", help="learning curves of the stored runs")
    p.add_argument("--out", default="results/fig1", nargs="+")
    p.add_argument("--save", required=True, help="image file to write")
    a = ap.parse_args(argv)

    if a.cmd == "run":
        from .experiments import _ints
        seeds = _ints(a.seeds) if a.seeds else None
        overrides: dict[str, Any] = {}
        if a.iterations:
            overrides["iterations"] = a.iterations
        if a.no_clip:
            overrides["clip"] = None
        configs = experiment1_configs(a.profile, seeds=seeds, equal_budgets=True, **overrides)
        print(f"{len(configs)} runs: {', '.join(OPTIMIZERS)} x seeds "
              f"{sorted({c['seed'] for c in configs})}, {configs[0]['iterations']} iterations each, "
              f"clip {configs[0]['clip']} -> {a.out}", flush=True)
        if a.dry_run:
            return 0
        run(a.profile, a.out, jobs=a.jobs, device=a.device, seeds=seeds, **overrides)
        return 0
    df = load_curves(a.out)
    if df.empty:
        print("no Experiment-1 result files found under", ", ".join(map(str, a.out)))
        return 1
    if a.cmd == "summarize":
        import pandas as pd
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(final_table(df).to_string(index=False))
        return 0
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    plot_curves(df, x="iteration", ax=axes[0], chance=CHANCE_MSE)
    plot_curves(df, x="wall_time", ax=axes[1], chance=CHANCE_MSE)
    fig.tight_layout()
    fig.savefig(a.save, dpi=120)
    print("wrote", a.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
