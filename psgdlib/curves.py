"""Learning curves of stored synthetic-problem runs (Fig. 1): one row per evaluation, final
numbers per run, and when each run left the plateau.  Fig. 1's defaults (problem, hidden size,
chance level) are in :mod:`psgdlib.fig1`, which re-exports these with them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from .plotting import ORDER
from .results import RunResult, is_run, result_files

__all__ = ["CURVE_COLUMNS", "curves_from_result", "load_curves", "final_table", "plateau_exit"]

#: The columns of :func:`load_curves`.
CURVE_COLUMNS = ["optimizer", "seed", "iteration", "train_loss", "test_loss", "test_error", "wall_time",
                 "pairs", "clip", "hidden", "problem", "source"]


def curves_from_result(result: dict, source: str = ""):
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


def load_curves(dirs: str | os.PathLike | Iterable[str | os.PathLike], problem: str | None = None,
                hidden: int | None = None):
    """Every learning curve stored under ``dirs`` (result files of ``experiments.run_file``).

    Returns a long DataFrame with one row per evaluation: ``optimizer, seed, iteration,
    train_loss, test_loss, test_error, wall_time, pairs, clip, hidden, problem, source``.  Runs
    of other problems / hidden sizes are skipped (``None`` keeps them), so are files that are
    not result files (or not readable JSON: e.g. half-written by a foreign tool) and runs that
    ended with no curve; a malformed run result is a ``ValueError`` naming the file.  Missing
    folders give an empty table.  When one run (optimizer, seed, pairs, clip) is stored more than once, e.g.
    rerun with a longer budget, only the longest curve is kept.
    """
    import pandas as pd
    frames = []
    folders = [dirs] if isinstance(dirs, (str, os.PathLike)) else list(dirs)
    for f in result_files(d for d in folders if Path(d).is_dir()):
        try:
            obj = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not is_run(obj) or not obj.get("curve"):
            continue
        r = RunResult.from_dict(obj, str(f))
        if problem is not None and r.config.get("problem") != problem:
            continue
        if hidden is not None and r.config.get("hidden") != hidden:
            continue
        frames.append(curves_from_result(r.to_dict(), str(f)))
    cols = CURVE_COLUMNS
    if not frames:
        return pd.DataFrame(columns=cols)
    df = pd.concat(frames, ignore_index=True)[cols]
    key = ["problem", "hidden", "optimizer", "seed", "pairs", "clip"]
    runs = (df.groupby("source", sort=False).agg(**{c: (c, "first") for c in key}, _len=("iteration", "max"))
            .reset_index().sort_values(["_len", "source"], ascending=[False, True]))
    keep = set(runs.drop_duplicates(key, keep="first")["source"])   # the longest copy of each run
    return df[df["source"].isin(keep)].reset_index(drop=True)


def _by_optimizer_and_seed(table):
    """Rows sorted in the order of :data:`psgdlib.plotting.ORDER` (SGD, Kron, dense, ...), then by seed."""
    order = {o: i for i, o in enumerate(ORDER)}
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


def plateau_exit(df, chance: float, fraction: float = 0.5):
    """When each run left the plateau: the first evaluation whose test loss is below
    ``fraction * chance`` (e.g. half the MSE of predicting 0.5), one row per
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
