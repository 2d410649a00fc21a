"""Experiment 1 (the paper's Fig. 1): SGD against PSGD with a sparse and a dense preconditioner.

The addition problem with training lengths ``U{50..100}`` drawn per minibatch
(``tasks.get("addition_variable", 100)``), evaluated on the addition test set at
T = 100; an RNN of eq. (1) with 50 hidden units (n = 2701 parameters); the same
initial weights (``seed``) and the same step size 0.01 for every optimizer; SGD's
gradient clipped at norm 1 (and PSGD's preconditioned gradient, see below); every run goes through its whole budget
(``stop_when_solved=False``) so that the learning curves are complete.

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
JSON file written by :func:`psgdlib.experiments.run_file` through
:func:`psgdlib.experiments.run_grid`)::

    python -m psgdlib.fig1 run --profile paper --out results/fig1

The paper-literal variant (PSGD unclipped) is exactly the runner's command (the runner has
no ``--clip`` option, so it cannot express the clipped grid)::

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
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["PROBLEM", "T", "HIDDEN", "OPTIMIZERS", "LABELS", "COLORS", "PROFILE_SETTINGS",
           "n_parameters", "kron_factor_dims", "experiment1_configs", "experiments_argv",
           "long_run_command", "run", "curves_from_result", "load_curves", "final_table",
           "plot_curves", "main"]

PROBLEM = "addition_variable"
T = 100
HIDDEN = 50
OPTIMIZERS = ("sgd", "psgd_kron", "psgd_dense")
LABELS = {"sgd": "SGD (clipped at 1)", "psgd_kron": "PSGD, sparse (Kron, eq. 5)",
          "psgd_dense": "PSGD, dense"}
COLORS = {"sgd": "tab:gray", "psgd_kron": "tab:blue", "psgd_dense": "tab:red"}

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
    from .experiments import grid
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
                     iterations: int | None = None) -> list[str]:
    """Arguments of ``python -m psgdlib.experiments`` for the profile's grid with equal budgets,
    paper-literal: PSGD unclipped (the runner has no ``--clip``); equals
    ``experiment1_configs(profile, equal_budgets=True, clip=None)``."""
    s = _settings(profile)
    return ["run", "--problems", PROBLEM, "--T", str(T), "--hidden", str(HIDDEN),
            "--optimizers", ",".join(OPTIMIZERS), "--seeds", _seed_spec(s["seeds"] if seeds is None else seeds),
            "--iterations", str(iterations or s["iterations"]), "--eval-every", str(s["eval_every"]),
            "--n-test", str(s["n_test"]), "--no-stop", "--out", str(out)]


def long_run_command(profile: str = "paper", out: str | None = None, clip: bool = True) -> str:
    """The shell command that produces the stored long run (``clip=False``: the unclipped variant,
    by default into ``results/fig1_noclip``)."""
    if clip:
        return f"python -m psgdlib.fig1 run --profile {profile} --out {out or 'results/fig1'}"
    out = out or "results/fig1_noclip"
    return "python -m psgdlib.experiments " + " ".join(experiments_argv(profile, out))


def _check_existing(configs: Sequence[dict], out: Path) -> None:
    """Refuse to mix grids: a file name encodes the main settings, not every field of the config."""
    from .experiments import run_name
    from .train import TrainConfig
    for c in configs:
        p = out / run_name(c)
        if not p.exists():
            continue
        want = asdict(TrainConfig(**c).resolved())
        # a field added to TrainConfig after a file was written has its default there
        have = {**asdict(TrainConfig(problem=c["problem"], T=c["T"])), **json.loads(p.read_text()).get("config", {})}
        diff = sorted(k for k in want if have.get(k) != want[k])
        if diff:
            raise ValueError(f"{p} holds a run with other settings ({', '.join(f'{k}={have.get(k)!r}' for k in diff)}"
                             f" instead of {', '.join(f'{k}={want[k]!r}' for k in diff)}); use another --out")


def run(profile: str = "paper", out: str | os.PathLike = "results/fig1", jobs: int = 1,
        device: str | None = None, seeds: Iterable[int] | None = None, progress: bool = True,
        command: str | None = None, **overrides: Any) -> list[Path]:
    """Run (or finish) the profile's grid with equal budgets through ``experiments.run_grid``.

    ``overrides`` go to :func:`experiment1_configs` (e.g. ``clip=None``, ``iterations=...``).
    The files written by this call get ``command`` (default: the ``python -m psgdlib.fig1``
    command line) as their provenance command.
    """
    from .experiments import run_grid
    configs = experiment1_configs(profile, seeds=seeds, equal_budgets=True, **overrides)
    out = Path(out)
    _check_existing(configs, out)
    command = command or "python -m psgdlib.fig1 " + " ".join(sys.argv[1:])
    return run_grid(configs, out, jobs=jobs, device=device, progress=progress, command=command)


# --------------------------------------------------------------------------- loading
def curves_from_result(result: dict, source: str = "") -> "Any":
    """The learning curve of one result dict (``train`` output or result file) as a DataFrame."""
    import pandas as pd
    c = result["config"]
    curve = result.get("curve") or {}
    df = pd.DataFrame({k: curve.get(k, []) for k in ("iteration", "train_loss", "test_loss",
                                                     "test_error", "wall_time")})
    df.insert(0, "seed", int(c["seed"]))
    df.insert(0, "optimizer", c["optimizer"])
    df["pairs"] = c.get("pairs")
    df["hidden"] = c.get("hidden")
    df["clip"] = c.get("clip")
    df["problem"] = c.get("problem")
    df["source"] = source
    return df


def load_curves(dirs: str | os.PathLike | Iterable[str | os.PathLike], problem: str | None = PROBLEM,
                hidden: int | None = HIDDEN):
    """Every learning curve stored under ``dirs`` (result files of ``experiments.run_file``).

    Returns a long DataFrame with one row per evaluation: ``optimizer, seed, iteration,
    train_loss, test_loss, test_error, wall_time, pairs, clip, hidden, problem, source``.  Runs
    of other problems / hidden sizes are skipped (``None`` keeps them), so are files that are
    not result files and runs that ended non-finite (no curve).  Missing folders give an
    empty table.  When one run (optimizer, seed, pairs, clip) is stored more than once, e.g.
    rerun with a longer budget, only the longest curve is kept.
    """
    import pandas as pd
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    frames = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            continue
        for f in sorted(d.rglob("*.json")):
            try:
                r = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if not isinstance(r, dict) or "config" not in r or not r.get("curve"):
                continue
            c = r["config"]
            if problem is not None and c.get("problem") != problem:
                continue
            if hidden is not None and c.get("hidden") != hidden:
                continue
            frames.append(curves_from_result(r, str(f)))
    cols = ["optimizer", "seed", "iteration", "train_loss", "test_loss", "test_error", "wall_time",
            "pairs", "clip", "hidden", "problem", "source"]
    if not frames:
        return pd.DataFrame(columns=cols)
    df = pd.concat(frames, ignore_index=True)[cols]
    key = ["problem", "hidden", "optimizer", "seed", "pairs", "clip"]
    runs = (df.groupby("source", sort=False).agg(**{c: (c, "first") for c in key}, _len=("iteration", "max"))
            .reset_index().sort_values(["_len", "source"], ascending=[False, True]))
    keep = set(runs.drop_duplicates(key, keep="first")["source"])   # the longest copy of each run
    return df[df["source"].isin(keep)].reset_index(drop=True)


def _by_optimizer_and_seed(table):
    """Rows sorted in the order of :data:`OPTIMIZERS` (SGD, Kron, dense), then by seed."""
    order = {o: i for i, o in enumerate(OPTIMIZERS)}
    table = table.sort_values(["optimizer", "seed"], key=lambda s: s.map(order) if s.name == "optimizer" else s)
    return table.reset_index(drop=True)


def final_table(df):
    """Last evaluation of every run, one row per (optimizer, seed), plus ms/iteration."""
    import pandas as pd
    if df.empty:
        return pd.DataFrame(columns=["optimizer", "seed", "iterations", "final_train_loss",
                                     "final_test_loss", "final_test_error", "wall_time_s", "ms_per_iteration"])
    last = df.sort_values("iteration").groupby(["optimizer", "seed"], sort=False).tail(1)
    out = pd.DataFrame({
        "optimizer": last["optimizer"], "seed": last["seed"], "iterations": last["iteration"],
        "final_train_loss": last["train_loss"], "final_test_loss": last["test_loss"],
        "final_test_error": last["test_error"], "wall_time_s": last["wall_time"],
        "ms_per_iteration": 1000 * last["wall_time"] / last["iteration"],
    })
    return _by_optimizer_and_seed(out)


CHANCE_MSE: float = 1 / 24
"""Test MSE of the constant prediction 0.5 on the addition variant (the plateau of Fig. 1)."""


def plateau_exit(df, fraction: float = 0.5, chance: float = CHANCE_MSE):
    """When each run left the plateau: the first evaluation whose test MSE is below
    ``fraction * chance`` (default: half the MSE of predicting 0.5), one row per
    (optimizer, seed) of ``df`` (from :func:`load_curves`).

    Columns: ``iterations_run``, ``left_plateau`` (bool), ``iteration`` and ``wall_time_s`` of
    the exit (NaN when the run never left), ``final_test_loss``.
    """
    import pandas as pd
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rows = []
    for (opt, seed), g in df.sort_values("iteration").groupby(["optimizer", "seed"], sort=False):
        below = g[g["test_loss"] < fraction * chance]
        hit = below.iloc[0] if len(below) else None
        rows.append({"optimizer": opt, "seed": seed, "iterations_run": int(g["iteration"].max()),
                     "left_plateau": hit is not None,
                     "iteration": float(hit["iteration"]) if hit is not None else float("nan"),
                     "wall_time_s": float(hit["wall_time"]) if hit is not None else float("nan"),
                     "final_test_loss": float(g["test_loss"].iloc[-1])})
    cols = ["optimizer", "seed", "iterations_run", "left_plateau", "iteration", "wall_time_s", "final_test_loss"]
    out = pd.DataFrame(rows, columns=cols)
    return _by_optimizer_and_seed(out)


# -------------------------------------------------------------------------- plotting
_YLABELS = {"test_loss": "test MSE (addition, T = 100)", "train_loss": "training MSE (lengths 50..100)",
            "test_error": "test error rate (|y - target| >= 0.04)"}
_XLABELS = {"iteration": "iteration", "wall_time": "wall time (s, training only)"}


def plot_curves(df, x: str = "iteration", y: str = "test_loss", ax=None,
                optimizers: Sequence[str] | None = None, logy: bool = True, chance: float | None = None,
                title: str | None = None):
    """Learning curves of ``df`` (from :func:`load_curves`): the median over seeds as a bold line
    (robust when one seed stays on the plateau while the others fall by decades), every seed as a
    faint line.

    ``x``: ``"iteration"`` or ``"wall_time"``; ``y``: ``"test_loss"``, ``"train_loss"`` or
    ``"test_error"``.  The mean is taken at the evaluation points every seed reached
    (the median of the wall times too).  ``chance`` draws a dotted reference line (e.g. 1/24 for the
    test MSE of predicting 0.5).  Returns the axes.
    """
    import matplotlib.pyplot as plt
    if x not in _XLABELS:
        raise ValueError(f"x must be one of {tuple(_XLABELS)}, got {x!r}")
    if y not in _YLABELS:
        raise ValueError(f"y must be one of {tuple(_YLABELS)}, got {y!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0))
    present = list(dict.fromkeys(df["optimizer"])) if len(df) else []
    opts = [o for o in (optimizers or OPTIMIZERS) if o in present]
    opts += [o for o in present if o not in opts and optimizers is None]
    for opt in opts:
        d = df[df["optimizer"] == opt]
        color = COLORS.get(opt)
        seeds = sorted(set(d["seed"]))
        if len(seeds) > 1:
            for _, g in d.groupby("seed"):
                g = g.sort_values("iteration")
                ax.plot(g[x], g[y], color=color, alpha=0.25, lw=0.8)
        common = set.intersection(*(set(g["iteration"]) for _, g in d.groupby("seed")))
        m = (d[d["iteration"].isin(common)].groupby("iteration")[[x, y] if x != "iteration" else [y]]
             .median().reset_index().sort_values("iteration"))
        label = LABELS.get(opt, opt) + (f" (median of {len(seeds)} seeds)" if len(seeds) > 1 else "")
        ax.plot(m[x], m[y], color=color, lw=2, label=label)
    if chance is not None:
        ax.axhline(chance, color="k", ls=":", lw=1, label="chance (predict 0.5)")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(_XLABELS[x])
    ax.set_ylabel(_YLABELS[y])
    if title:
        ax.set_title(title)
    if opts or chance is not None:
        ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return ax


# ----------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m psgdlib.fig1", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the grid through experiments.run_grid (resumable)")
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
