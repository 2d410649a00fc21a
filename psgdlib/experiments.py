"""Resumable experiment runner for Experiment 2 (Tables I and II) and friends.

    python -m psgdlib.experiments run --profile cpu --out results/table1
    python -m psgdlib.experiments summarize --out results/table1

``run`` trains a grid of (problem, T, optimizer, seed); each finished run is one
JSON file (config, outcome, curve, wall time, provenance), written atomically.
A rerun skips finished runs; a run killed mid-way left no file and is redone.
``summarize`` builds Table I (failures/total) and Table II (longest T without a
failure) from the files, next to the paper's numbers.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import tasks as _tasks
from .settings import SETTINGS, setting_of
from .utils import PROFILES, atomic_write_json, get_profile, provenance

__all__ = ["PROFILE_GRIDS", "PAPER_TABLE1", "PAPER_TABLE2", "grid", "run_file", "run_grid", "checkpoint_path",
           "load_results", "table1", "table1_settings", "table2", "PROBLEM_NAMES", "time_to_solve", "reproduction_cost", "main"]

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

_P = ("addition", "multiplication", "xor", "temporal_order_2bit", "temporal_order_3bit",
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


def _paper_order(problems) -> list[str]:
    """The distinct ``problems`` in the paper's order (Tables I/II), unknown ones sorted after."""
    present = set(problems)
    return [p for p in _P if p in present] + sorted(present - set(_P))


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


def run_name(cfg: dict) -> str:
    """File name of a run: everything that distinguishes runs of one grid."""
    tail = "" if cfg.get("stop_when_solved", True) else "_full"
    if cfg.get("model", "rnn") != "rnn":
        tail += f"_{cfg['model']}"
    if cfg.get("lr") is not None:       # non-default settings are part of the name
        tail += f"_lr{cfg['lr']:g}"
    if cfg.get("clip") is not None:
        tail += f"_clip{cfg['clip']:g}"
    return (f"{cfg['problem']}_T{cfg['T']}_{cfg['optimizer']}_{cfg['pairs']}_h{cfg['hidden']}"
            f"_n{cfg['iterations']}{tail}_s{cfg['seed']}.json")


def grid(problems: Iterable[str], Ts: Iterable[int], optimizers: Iterable[str], seeds: Iterable[int],
         **common: Any) -> list[dict]:
    """All run configs of a grid (validated: unknown problems/optimizers or bad T raise)."""
    from .train import TrainConfig
    out = []
    for p, T, o, s in itertools.product(problems, Ts, optimizers, seeds):
        cfg = TrainConfig(problem=p, T=int(T), optimizer=o, seed=int(s), **common)
        cfg.resolved()  # raises ValueError on nonsense
        out.append(asdict(cfg))
    return out


CHECKPOINT_DIR = "_checkpoints"   # mid-run checkpoints, one per unfinished run, under --out


def checkpoint_path(out_dir: str | os.PathLike, cfg: dict) -> Path:
    """Where the mid-run checkpoint of run ``cfg`` lives: ``<out_dir>/_checkpoints/<name>.pt``."""
    return Path(out_dir) / CHECKPOINT_DIR / (Path(run_name(cfg)).stem + ".pt")


def _stored_config_mismatch(path: Path, cfg: dict) -> dict:
    """The settings in which the finished run stored at ``path`` differs from ``cfg``
    (resolved); empty when it is the same run.  A file that cannot be read is renamed to
    ``<name>.corrupt`` (so the run is redone) and reported as ``{"file": "unreadable"}``."""
    from .train import TrainConfig
    try:
        stored = json.loads(path.read_text())["config"]
    except (ValueError, KeyError, TypeError, OSError) as e:
        bad = path.with_name(path.name + ".corrupt")
        os.replace(path, bad)
        print(f"{path}: unreadable result file ({type(e).__name__}: {e}); moved to {bad.name}, "
              "the run is redone", file=sys.stderr, flush=True)
        return {"file": "unreadable"}
    want = asdict(TrainConfig(**cfg).resolved())
    return {k: (stored.get(k), v) for k, v in want.items() if k in stored and stored[k] != v}


def _finished(path: Path, cfg: dict) -> bool:
    """Whether run ``cfg`` is stored at ``path``: False when the file is missing or unreadable
    (then set aside); ``ValueError`` when it holds a run made with other settings."""
    if not path.exists():
        return False
    diff = _stored_config_mismatch(path, cfg)
    if diff and diff != {"file": "unreadable"}:
        raise ValueError(f"{path} holds a run with other settings (stored vs requested: {diff}); "
                         "use another --out folder")
    return not diff


def run_file(cfg: dict, out_dir: str | os.PathLike, device: str | None = None,
             max_seconds: float | None = None, threads: int | None = 1, progress: bool = False,
             command: str | None = None, checkpoint_every: int = 2000,
             pause_after: float | None = None) -> Path | None:
    """Train one run unless its file exists; write the result atomically; return the path.

    The run checkpoints its whole state to ``<out_dir>/_checkpoints/<name>.pt`` every
    ``checkpoint_every`` iterations and continues from there when restarted (bit-identical to
    an uninterrupted run); the checkpoint is removed once the result is written.  With
    ``pause_after`` seconds the run stops at its next evaluation after that long, keeps its
    checkpoint, writes no result and returns None.  A stored file made with other settings
    than ``cfg`` raises ``ValueError``; an unreadable one is set aside and the run redone.
    ``command`` is recorded as the provenance command (default: this process's argv)."""
    import torch

    from .train import NonFiniteLossError, RunPaused, TrainConfig, train
    path = Path(out_dir) / run_name(cfg)
    if _finished(path, cfg):
        return path
    if threads is not None:
        torch.set_num_threads(threads)
    config = TrainConfig(**cfg)
    ckpt = checkpoint_path(out_dir, cfg)
    if ckpt.exists() and progress is not None:
        it = torch.load(ckpt, map_location="cpu", weights_only=False).get("state", {}).get("it")
        print(f"{path.name}: resuming from iteration {it}", flush=True)
    try:
        result = train(config, device=device, progress=progress, max_seconds=max_seconds,
                       checkpoint=ckpt, checkpoint_every=checkpoint_every, pause_after=pause_after)
    except RunPaused as e:
        print(f"{path.name}: {e}", flush=True)
        return None
    except NonFiniteLossError as e:   # a genuine failure: keep what the run did before it diverged
        result = e.partial if e.partial is not None else {
            "config": asdict(config.resolved()), "solved": False, "iterations_to_solve": None,
            "iterations_to_0.1pct": None, "iterations_run": None, "stopped": "non_finite",
            "error": str(e), "final_test_error": None, "wall_time": None, "curve": None}
    if command is None:
        command = " ".join(["python -m psgdlib.experiments"] + sys.argv[1:])
    result["provenance"] = provenance(device, command=command)
    atomic_write_json(path, result)
    ckpt.unlink(missing_ok=True)
    return path


def _check_writable(out_dir: Path) -> None:
    """Fail before any training when results could not be written to ``out_dir``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as e:
        raise ValueError(f"--out {out_dir} is not writable ({e.strerror or e})") from e


def _die_with_parent() -> None:
    """Worker initializer: exit as soon as the parent process is gone (even after ``kill -9``,
    which runs no clean-up in the parent), instead of finishing a run nobody collects."""
    import threading
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_one(cfg: dict, out_dir: Path, device, max_seconds, threads, progress, command,
             checkpoint_every: int, pause_at: float | None) -> Path | None:
    """:func:`run_file` with an absolute pause time (``time.time()``); a run that has not
    started yet is not started once that time has passed."""
    pause_after = None
    if pause_at is not None:
        pause_after = pause_at - time.time()
        if pause_after <= 0 and not checkpoint_path(out_dir, cfg).exists():
            return None
        pause_after = max(pause_after, 0.0)
    return run_file(cfg, out_dir, device, max_seconds, threads=threads, progress=progress, command=command,
                    checkpoint_every=checkpoint_every, pause_after=pause_after)


def run_grid(configs: Sequence[dict], out_dir: str | os.PathLike, jobs: int = 1, device: str | None = None,
             max_seconds: float | None = None, progress: bool = True,
             command: str | None = None, threads: int | None = None, checkpoint_every: int = 2000,
             pause_at: float | None = None) -> list[Path]:
    """Run every config not already done, in ``jobs`` processes; return the finished files.

    ``threads`` is the number of torch threads per run: default 1 when ``jobs > 1``,
    else torch's default (all cores).  Give 1 when other runs share the machine:
    two processes with two threads each on two cores run several times slower
    than two with one thread each.  Every run checkpoints mid-run (see :func:`run_file`);
    ``pause_at`` (a ``time.time()`` value) pauses the runs in progress at their next
    evaluation after it and starts no new one: a later call continues them.  A stored run
    with other settings than its config raises ``ValueError`` before anything is trained."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out_dir = Path(out_dir)
    _check_writable(out_dir)
    todo, done = [], []
    for c in configs:
        path = out_dir / run_name(c)
        if _finished(path, c):
            done.append(path)
        else:
            todo.append(c)
    if progress:
        print(f"{len(configs)} runs in the grid, {len(done)} already done, {len(todo)} to run", flush=True)
    args = (device, max_seconds)
    if jobs == 1 or len(todo) <= 1:
        threads = 1 if threads is None and jobs > 1 else threads
        results = (_run_one(c, out_dir, *args, threads, progress, command, checkpoint_every, pause_at)
                   for c in todo)
        return done + _collect(results, progress)
    import multiprocessing as mp
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                             initializer=_die_with_parent) as ex:
        futs = [ex.submit(_run_one, c, out_dir, *args, threads or 1, False, command, checkpoint_every, pause_at)
                for c in todo]
        return done + _collect((f.result() for f in as_completed(futs)), progress)


def _collect(results: Iterable[Path | None], progress: bool) -> list[Path]:
    out = []
    for p in results:
        if p is not None:
            out.append(p)
            if progress:
                print("finished", p.name, flush=True)
    return out


# ----------------------------------------------------------------------- summaries
def load_results(dirs: str | os.PathLike | Iterable[str | os.PathLike]):
    """All result files under ``dirs`` as a pandas DataFrame, one row per run.

    ``budget`` is the number of iterations a run was allowed: its configured
    budget, or, for an unsolved run stopped by a time limit, the iterations it
    actually ran.  When the same run (problem, T, model, optimizer, pairs, hidden, step
    size, clip, seed) is stored more than once (e.g. rerun with a larger budget), only the
    copy with the largest budget is kept; runs that differ in a setting are all kept.
    """
    import pandas as pd
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    rows = []
    for d in dirs:
        for f in sorted(Path(d).rglob("*.json")):
            try:
                r = json.loads(f.read_text())
            except ValueError as e:
                raise ValueError(f"{f}: not a readable result file ({e}); delete it or rerun the run") from e
            if not isinstance(r, dict) or "config" not in r or "solved" not in r or "problem" not in r["config"]:
                continue
            c = r["config"]
            budget = c["iterations"]
            if not r["solved"] and r.get("stopped") == "time_limit" and r.get("iterations_run"):
                budget = int(r["iterations_run"])
            prov = r.get("provenance", {})
            rows.append(dict(file=str(f), problem=c["problem"], T=c["T"], model=c.get("model", "rnn"),
                             optimizer=c["optimizer"],
                             pairs=c["pairs"], seed=c["seed"], hidden=c["hidden"], lr=c.get("lr"),
                             clip=c.get("clip"), budget=budget,
                             solved=bool(r["solved"]), iterations_to_solve=r["iterations_to_solve"],
                             iterations_run=r["iterations_run"], stopped=r["stopped"],
                             final_test_error=r["final_test_error"], wall_time=r["wall_time"],
                             hardware=prov.get("hardware"), commit=prov.get("git_commit"),
                             date=prov.get("date"),
                             setting=(setting_of(c["problem"], c.get("lr"), c.get("clip"))
                                      if c["optimizer"].startswith("psgd") else None)))
    cols = ["file", "problem", "T", "model", "optimizer", "pairs", "seed", "hidden", "lr", "clip", "budget", "solved",
            "iterations_to_solve", "iterations_run", "stopped", "final_test_error", "wall_time",
            "hardware", "commit", "date", "setting"]
    df = pd.DataFrame(rows, columns=cols)
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


#: The paper's names of the problems, for tables and figures.
PROBLEM_NAMES = dict(zip(_P, ("Addition", "Multiplication", "XOR", "2-bit temporal order",
                              "3-bit temporal order", "Random permutation", "5-bit memorization",
                              "20-bit memorization")))


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


# ----------------------------------------------------------------------------- CLI
def _ints(s: str, option: str = "--seeds") -> list[int]:
    """``"0-4"`` or ``"0,2,5-6"`` as a list of ints; a clear error names ``option`` otherwise."""
    out: list[int] = []
    for part in s.split(","):
        try:
            if "-" in part.strip("-"):
                a, b = (int(x) for x in part.split("-"))
                if b < a:
                    raise ValueError(f"{option} {s!r}: the range {part!r} is empty (write {b}-{a})")
                out.extend(range(a, b + 1))
            elif part:
                out.append(int(part))
        except ValueError as e:
            if str(e).startswith(option):
                raise
            raise ValueError(f"{option} {s!r}: {part!r} is not an integer or a range such as 0-4") from None
    if not out:
        raise ValueError(f"{option} {s!r} names nothing")
    return out


def _check_cli_numbers(a: argparse.Namespace) -> None:
    """Every numeric option that was given must make sense (no silent profile fallback)."""
    import math
    for opt in ("iterations", "hidden", "eval_every", "n_test", "jobs", "checkpoint_every"):
        v = getattr(a, opt, None)
        if v is not None and v < 1:
            raise ValueError(f"--{opt.replace('_', '-')} must be >= 1, got {v}")
    for opt in ("lr", "clip", "max_seconds"):
        v = getattr(a, opt, None)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"--{opt.replace('_', '-')} must be a positive finite number, got {v}")
    if a.pause_after is not None and not (math.isfinite(a.pause_after) and a.pause_after >= 0):
        raise ValueError(f"--pause-after must be a finite number of seconds >= 0, got {a.pause_after}")


def _run_configs(a: argparse.Namespace) -> list[dict]:
    """The run configs the ``run`` command's options describe (validated)."""
    from .settings import setting
    prof = PROFILE_GRIDS[a.profile or get_profile()]
    _check_cli_numbers(a)
    problems = a.problems.split(",") if a.problems else prof["problems"]
    for p in problems:
        _tasks.get(p, 1000)  # unknown names fail here with the list of valid ones
    pick = lambda name: prof[name] if getattr(a, name) is None else getattr(a, name)  # noqa: E731
    common = dict(hidden=pick("hidden"), iterations=pick("iterations"), eval_every=pick("eval_every"),
                  n_test=pick("n_test"), pairs=a.pairs, dtype=a.dtype, model=a.model,
                  stop_when_solved=not a.no_stop)
    Ts = _ints(a.T, "--T") if a.T else prof["Ts"]
    optimizers = a.optimizers.split(",") if a.optimizers else prof["optimizers"]
    seeds = _ints(a.seeds) if a.seeds else prof["seeds"]
    configs = []
    for p in problems:
        for o in optimizers:
            step = setting(a.setting, p, o) if a.setting != "paper" else {"lr": None, "clip": None}
            if a.lr is not None or a.clip is not None:
                if a.setting != "paper":
                    raise ValueError("--lr/--clip and --setting li_rnn both set the step: give one")
                step = {"lr": a.lr, "clip": a.clip}
            configs += grid([p], Ts, [o], seeds, **common, **step)
    return configs


def main(argv: Sequence[str] | None = None) -> int:
    from .train import MODELS, OPTIMIZERS
    ap = argparse.ArgumentParser(prog="python -m psgdlib.experiments", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a grid (skips finished runs)")
    r.add_argument("--profile", choices=PROFILES, default=None, help="default: $PSGD_PROFILE or cpu")
    r.add_argument("--problems", help="comma-separated problem names (default: the profile's)")
    r.add_argument("--T", help="comma-separated lengths")
    r.add_argument("--optimizers", help=f"comma-separated, from {', '.join(OPTIMIZERS)}")
    r.add_argument("--seeds", help="e.g. 0-4 or 0,2")
    r.add_argument("--iterations", type=int, help="iteration budget per run")
    r.add_argument("--hidden", type=int)
    r.add_argument("--pairs", default="finite_difference", choices=("hvp", "finite_difference", "whitening"))
    r.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    r.add_argument("--model", default="rnn", choices=MODELS,
                   help="the RNN of eq. (1) (default) or the LSTM baseline")
    r.add_argument("--out", required=True, help="folder of result files")
    r.add_argument("--jobs", type=int, default=1, help="parallel runs (one torch thread each)")
    r.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: 1 with --jobs > 1, else all cores); "
                        "use 1 when several runs share the machine")
    r.add_argument("--device", default=None)
    r.add_argument("--lr", type=float, help="step size (default: 0.01 PSGD/SGD, 0.001 Adam)")
    r.add_argument("--clip", type=float,
                   help="gradient-norm clip (SGD: of g, default 1; PSGD: of P g, default off)")
    r.add_argument("--eval-every", type=int)
    r.add_argument("--n-test", type=int)
    r.add_argument("--no-stop", action="store_true",
                   help="run the whole budget even after solving (learning curves)")
    r.add_argument("--max-seconds", type=float, default=None,
                   help="training-time limit per run: the run is then stored as stopped at that budget")
    r.add_argument("--setting", default="paper", choices=SETTINGS,
                   help="named step/clip setting of the PSGD runs (psgdlib.settings): the paper's "
                        "literal one (default) or li_rnn (P g clipped at 1, step per problem family)")
    r.add_argument("--checkpoint-every", type=int, default=2000,
                   help="iterations between mid-run checkpoints (under OUT/_checkpoints; a restarted "
                        "run continues from its last one, bit-identically)")
    r.add_argument("--pause-after", type=float, default=None,
                   help="seconds: then pause every run in progress at its next evaluation (its state "
                        "stays in its checkpoint) and start no new one; rerun the command to continue")
    s = sub.add_parser("summarize", help="Table I and Table II from result files")
    s.add_argument("--out", required=True, nargs="+", help="folder(s) of result files")
    s.add_argument("--optimizer", default="psgd_kron")
    a = ap.parse_args(argv)

    if a.cmd == "run":
        try:
            configs = _run_configs(a)
            pause_at = None if a.pause_after is None else time.time() + a.pause_after
            command = None if argv is None else " ".join(["python -m psgdlib.experiments", *argv])
            done = run_grid(configs, a.out, jobs=a.jobs, device=a.device, max_seconds=a.max_seconds,
                            threads=a.threads, command=command, checkpoint_every=a.checkpoint_every,
                            pause_at=pause_at)
        except ValueError as e:
            ap.error(str(e))
        if len(done) < len(configs):
            print(f"{len(configs) - len(done)} runs paused or not started; rerun the command to continue",
                  flush=True)
        return 0
    df = load_results(a.out)
    if df.empty:
        print("no result files found under", ", ".join(a.out))
        return 1
    import pandas as pd
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("Table I: failed / total runs, per named setting (psgdlib.settings), next to the paper\n",
              table1_settings(df, optimizer=a.optimizer), "\n", sep="")
        for name in SETTINGS:
            d = df[df["setting"] == name]
            if len(d[d["optimizer"] == a.optimizer]):
                print(f"Table II ({name} setting): longest T without a failure\n", table2(d, a.optimizer),
                      "\n", sep="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
