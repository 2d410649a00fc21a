"""Experiment 2's analysis: the stored runs as a table (:func:`load_results`), Table I (failed /
total runs), Table II (longest T without a failure), times to solve, reruns and compute cost.

Every function takes the DataFrame of :func:`load_results` (one row per run, read through
:class:`psgdlib.results.RunResult`).
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

from .pathological import (PAPER_BUDGET, PAPER_PROBLEMS, PAPER_TABLE1, PAPER_TABLE2, PROBLEM_NAMES,
                           paper_order)
from .results import RunResult, is_run, result_files
from .settings import SETTINGS, setting_of

__all__ = ["load_results", "table1", "table1_settings", "table2", "longest_T_without_failure",
           "time_to_solve", "rerun_pairs", "reproduction_cost", "RESULT_COLUMNS"]

_P = PAPER_PROBLEMS
_paper_order = paper_order

_SETTINGS = ("hidden", "pairs", "lr", "clip")


def _one_setting_per_cell(d) -> None:
    """Raise ``ValueError`` when runs of one (problem, T) cell differ in a setting of
    ``_SETTINGS`` (e.g. step size): a failed/total count over mixed settings means nothing."""
    cols = [c for c in _SETTINGS if c in d.columns]
    if not len(d) or not cols:
        return
    n = d.assign(**{c: d[c].astype(str) for c in cols}).groupby(["problem", "T"])[cols].nunique()
    bad = n[(n > 1).any(axis=1)]
    if len(bad):
        cells = ", ".join(f"{p} T={T}" for p, T in bad.index)
        raise ValueError(f"runs with different settings ({', '.join(cols)}) share a cell: {cells}; "
                         "select one setting first, e.g. df[df['lr'] == 0.01]")



#: The columns of :func:`load_results`.
RESULT_COLUMNS = ["file", "problem", "T", "model", "optimizer", "pairs", "seed", "hidden", "lr", "clip", "budget",
                  "solved", "iterations_to_solve", "iterations_run", "stopped", "final_test_error", "wall_time",
                  "hardware", "commit", "date", "setting"]


def _row(r: RunResult) -> dict:
    """One row of :func:`load_results`."""
    c, prov = r.config, r.provenance or {}
    return dict(file=r.source, problem=c["problem"], T=c["T"], model=c.get("model", "rnn"),
                optimizer=c["optimizer"], pairs=c["pairs"], seed=c["seed"], hidden=c["hidden"],
                lr=c.get("lr"), clip=c.get("clip"), budget=r.budget, solved=bool(r.solved),
                iterations_to_solve=r.iterations_to_solve, iterations_run=r.iterations_run,
                stopped=r.stopped, final_test_error=r.final_test_error, wall_time=r.wall_time,
                hardware=prov.get("hardware"), commit=prov.get("git_commit"), date=prov.get("date"),
                setting=(setting_of(c["problem"], c.get("lr"), c.get("clip"))
                         if c["optimizer"].startswith("psgd") else None))


def load_results(dirs: str | os.PathLike | Iterable[str | os.PathLike]):
    """All result files under ``dirs`` as a pandas DataFrame, one row per run.

    ``budget`` is the number of iterations a run was allowed (:attr:`RunResult.budget`): its
    configured budget, or, for an unsolved run stopped by a time limit, the iterations it
    actually ran.  When the same run (problem, T, model, optimizer, pairs, hidden, step
    size, clip, seed) is stored more than once (e.g. rerun with a larger budget), only the
    copy with the largest budget is kept; runs that differ in a setting are all kept.  JSON
    files that are not run results (MNIST runs, notes) are skipped; a file that cannot be
    read, or a run result that is malformed, is a ``ValueError`` naming the file.
    """
    import json

    import pandas as pd
    rows = []
    for f in result_files(dirs):
        try:
            d = json.loads(f.read_text())
        except ValueError as e:
            raise ValueError(f"{f}: not a readable result file ({e}); delete it or rerun the run") from e
        if is_run(d):
            rows.append(_row(RunResult.from_dict(d, str(f))))
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    if len(df):
        key = ["problem", "T", "model", "optimizer", "pairs", "hidden", "lr", "clip", "seed"]
        df = (df.sort_values("budget", kind="stable").drop_duplicates(key, keep="last")
              .sort_values(key).reset_index(drop=True))
    return df


def _cell(g) -> str:
    failed, total = int((~g["solved"]).sum()), len(g)
    budget = int(g["budget"].min())
    cell = f"{failed}/{total}"
    if budget < PAPER_BUDGET:
        cell += f" (budget {budget:,})"
    return cell


def table1(df, optimizer: str = "psgd_kron", with_paper: bool = True,
           problems: Sequence[str] | None = None, Ts: Sequence[int] | None = None, model: str = "rnn",
           setting: str | None = None):
    """Table I: failed/total runs per problem and T for ``optimizer`` training ``model``.

    A run that was not solved within a budget below the paper's 10^5 iterations is
    counted as failed *within that budget*: the cell then says ``(budget N)``.
    ``problems``/``Ts`` fix the rows/columns (cells without runs show ``-``);
    by default they are those present in ``df``.
    """
    import pandas as pd
    d = df[(df["optimizer"] == optimizer) & (df["model"] == model)]
    if setting is not None:
        d = d[d["setting"] == setting]
    _one_setting_per_cell(d)
    order = list(problems) if problems is not None else _paper_order(d["problem"])
    Ts = sorted(Ts) if Ts is not None else sorted(set(d["T"]))
    d = d[d["problem"].isin(order) & d["T"].isin(Ts)]
    table = pd.DataFrame(index=order, columns=[f"T={T}" for T in Ts], dtype=object)
    for (p, T), g in d.groupby(["problem", "T"]):
        table.loc[p, f"T={T}"] = _cell(g)
    table = table.fillna("-")
    if with_paper:
        for T in Ts:
            table[f"paper T={T}"] = [PAPER_TABLE1.get(p, {}).get(T, "-") for p in table.index]
    table.index.name = "problem"
    return table


def table1_settings(df, settings: Sequence[str] = SETTINGS, optimizer: str = "psgd_kron",
                    Ts: Sequence[int] = (30, 50, 100, 200), model: str = "rnn"):
    """Table I under each named setting side by side (:mod:`psgdlib.settings`), next to the
    paper: one row per problem (the paper's order), columns ``(T, setting)`` for each setting and
    ``(T, "Li 2016")`` (the paper's reported result),
    each cell failed/total (with the budget where it is below 10^5), ``-`` where nothing ran."""
    import pandas as pd
    problems = list(_P)
    parts = {s: table1(df, optimizer, with_paper=False, problems=problems, Ts=Ts, model=model, setting=s)
             for s in settings}
    cols = {}
    for T in Ts:
        for s in settings:
            cols[(f"T={T}", s)] = parts[s][f"T={T}"]
        cols[(f"T={T}", "Li 2016")] = pd.Series([PAPER_TABLE1[p][T] for p in problems], index=problems)
    out = pd.DataFrame(cols)
    out.index = [PROBLEM_NAMES.get(p, p) for p in out.index]
    out.index.name = "problem"
    return out




def longest_T_without_failure(d) -> str:
    """Largest tested T such that every run at that T and at every shorter tested T solved.

    When the first T with an unsolved run only had runs cut below the paper's budget, the
    answer is not a paper-style failure and says so: ``"- (T=30: not solved within 18,900)"``.
    """
    best = None
    for T, g in sorted(d.groupby("T"), key=lambda x: x[0]):
        if not g["solved"].all():
            unsolved = g[~g["solved"]]
            if (unsolved["budget"] < PAPER_BUDGET).all():
                prefix = str(best) if best is not None else "-"
                return f"{prefix} (T={T}: not solved within {int(unsolved['budget'].min()):,})"
            break
        best = T
    if best is None:
        return f"<{int(d['T'].min())}" if len(d) else "-"
    return str(best)


def table2(df, optimizer: str = "psgd_kron", with_paper: bool = True, model: str = "rnn"):
    """Table II: longest T without a failure, this repository's runs next to the paper's."""
    import pandas as pd
    d = df[(df["optimizer"] == optimizer) & (df["model"] == model)]
    _one_setting_per_cell(d)
    rows = []
    for p in _paper_order(d["problem"]):
        g = d[d["problem"] == p]
        row = {"problem": p, "this repo": longest_T_without_failure(g),
               "T tested": ", ".join(str(t) for t in sorted(set(g["T"]))),
               "budget": f"{int(g['budget'].min()):,}"}
        if with_paper:
            row.update(zip(("HF Tikhonov", "HF structural", "PSGD (paper)"), PAPER_TABLE2.get(p, ("-",) * 3)))
        rows.append(row)
    return pd.DataFrame(rows).set_index("problem") if rows else pd.DataFrame()


def time_to_solve(df, problem: str, Ts: Sequence[int] | None = None,
                  optimizers: Sequence[str] | None = None, model: str = "rnn"):
    """Iterations and wall time to solve ``problem``, one row per (optimizer, T).

    Columns: ``runs``, ``solved``, ``iterations to solve`` and ``seconds to solve`` (median,
    min-max over the solved runs), ``unsolved`` (the budgets of the runs that were not
    solved, e.g. "not solved within 100,000 (x2)") and ``seconds per 1000 iterations``
    (median over all runs; evaluations excluded).
    """
    import pandas as pd
    d = df[(df["problem"] == problem) & (df["model"] == model)]
    if Ts is not None:
        d = d[d["T"].isin(list(Ts))]
    opts = list(optimizers) if optimizers is not None else sorted(set(d["optimizer"]))

    def spread(x) -> str:
        x = sorted(x)
        if not x:
            return "-"
        med = float(pd.Series(x).median())
        return f"{med:,.0f}" if len(x) == 1 else f"{med:,.0f} ({x[0]:,.0f}-{x[-1]:,.0f})"

    rows = []
    for o in opts:
        for T in sorted(set(d[d["optimizer"] == o]["T"])):
            g = d[(d["optimizer"] == o) & (d["T"] == T)]
            ok = g[g["solved"]]
            bad = g[~g["solved"]]
            budgets = bad["budget"].value_counts().sort_index()
            unsolved = "; ".join(f"not solved within {int(b):,}" + (f" (x{n})" if n > 1 else "")
                                 for b, n in budgets.items()) or "-"
            per_it = (g["wall_time"] / g["iterations_run"]).dropna()
            rows.append({"optimizer": o, "T": int(T), "runs": len(g), "solved": len(ok),
                         "iterations to solve": spread(ok["iterations_to_solve"].astype(float)),
                         "seconds to solve": spread(ok["wall_time"].astype(float)),
                         "unsolved": unsolved,
                         "seconds per 1000 iterations": f"{1000 * per_it.median():.1f}" if len(per_it) else "-"})
    cols = ["optimizer", "T", "runs", "solved", "iterations to solve", "seconds to solve", "unsolved",
            "seconds per 1000 iterations"]
    return pd.DataFrame(rows, columns=cols).set_index(["optimizer", "T"])


_TWIN = ["problem", "T", "seed", "model", "optimizer", "hidden", "pairs", "budget"]


def rerun_pairs(base, reruns):
    """Each run of ``reruns`` next to its twin in ``base``: one row per rerun.

    A twin is the run with the same problem, T, seed, model, optimizer, hidden size, pairs
    and budget -- so the same initial weights and minibatches -- trained with another step
    size or clip (e.g. a Table I run and its rerun with a larger step).  Indexed by
    (problem, T, seed); the columns ``lr``, ``clip``, ``solved``, ``iterations`` (to solve,
    or run when unsolved) and ``final_test_error`` appear once per side, under ``"base"``
    and ``"rerun"``.  Raises ``ValueError`` when a rerun has no twin, or has the same step
    size and clip as its twin (then it is not a rerun with another setting).
    """
    import pandas as pd
    cols = ["lr", "clip", "solved", "iterations", "final_test_error"]

    def side(d):
        d = d.copy()
        d["iterations"] = d["iterations_to_solve"].where(d["solved"], d["iterations_run"]).astype("Int64")
        return d[_TWIN + cols]

    if reruns.empty:
        return pd.DataFrame(columns=pd.MultiIndex.from_product([["base", "rerun"], cols]))
    m = side(reruns).merge(side(base), on=_TWIN, how="left", suffixes=("_rerun", "_base"),
                           indicator=True)
    if len(m) > len(reruns):
        raise ValueError("a rerun matches several base runs: give one base run per (problem, T, seed, model, "
                         "optimizer, hidden, pairs, budget)")
    lost = m[m["_merge"] == "left_only"]
    if len(lost):
        raise ValueError("reruns without a twin run (same problem, T, seed, model, optimizer, hidden, "
                         f"pairs, budget) in the base runs: {lost[_TWIN].to_dict('records')}")
    same = m[(m["lr_rerun"] == m["lr_base"]) & (m["clip_rerun"].fillna(-1) == m["clip_base"].fillna(-1))]
    if len(same):
        raise ValueError(f"reruns with the same step size and clip as their twin: {same[_TWIN].to_dict('records')}")
    out = pd.DataFrame({(s, c): m[f"{c}_{s}"] for s in ("base", "rerun") for c in cols})
    out.index = pd.MultiIndex.from_frame(m[["problem", "T", "seed"]])
    return out.sort_index()


def reproduction_cost(df, Ts: Sequence[int] = (30, 50, 100, 200), runs: int = 5,
                      budget: int = PAPER_BUDGET, optimizer: str = "psgd_kron", model: str = "rnn"):
    """Worst-case compute of a Table I reproduction, from the training times stored in ``df``.

    For every problem with stored runs and every ``T``: the training seconds per iteration of
    the stored runs at that ``T`` (their total ``wall_time`` over their total ``iterations_run``,
    so long runs weigh most), or, where none is stored, that of the longest stored ``T`` scaled
    by ``T / T_stored`` (back-propagation through time costs O(T) per iteration).
    ``worst case (core-h)`` is ``runs`` runs that all use the whole ``budget``.  Returns a
    table indexed by (T, problem) with the columns ``seconds per 1000 iterations``, ``rate``
    (where it came from) and ``worst case (core-h)``.
    """
    import pandas as pd
    d = df[(df["optimizer"] == optimizer) & (df["model"] == model) & (df["iterations_run"] > 0)]
    d = d.dropna(subset=["wall_time"])
    rows = []
    for p in _paper_order(d["problem"]):
        per_T = d[d["problem"] == p].groupby("T").agg(seconds=("wall_time", "sum"),
                                                      iterations=("iterations_run", "sum"),
                                                      runs=("seed", "size"))
        per_T["spi"] = per_T["seconds"] / per_T["iterations"]
        for T in Ts:
            if T in per_T.index:
                spi, rate = per_T.loc[T, "spi"], f"measured ({int(per_T.loc[T, 'runs'])} runs)"
            else:
                T0 = int(per_T.index.max())
                spi, rate = per_T.loc[T0, "spi"] * T / T0, f"scaled from T={T0}"
            rows.append({"T": T, "problem": p, "seconds per 1000 iterations": 1000 * spi,
                         "rate": rate, "worst case (core-h)": runs * budget * spi / 3600})
    cols = ["T", "problem", "seconds per 1000 iterations", "rate", "worst case (core-h)"]
    return pd.DataFrame(rows, columns=cols).set_index(["T", "problem"])
