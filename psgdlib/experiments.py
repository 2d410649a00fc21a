"""``python -m psgdlib.experiments``: the command line of the synthetic-problem runs.

    python -m psgdlib.experiments run --profile cpu --out results/table1
    python -m psgdlib.experiments summarize --out results/table1

``run`` trains a grid of (problem, T, optimizer, seed); each finished run is one
JSON file (config, outcome, curve, wall time, provenance), written atomically.
A rerun skips finished runs; a run killed mid-way continues from its last checkpoint.
``--scheduler tcp://host:8786`` sends the runs to a Dask cluster's workers instead.
``summarize`` builds Table I (failures/total) and Table II (longest T without a
failure) from the files, next to the paper's numbers.

The work is done elsewhere and re-exported here under its old names: the runner
(:mod:`psgdlib.runner`), Experiment 2's grids and the paper's numbers
(:mod:`psgdlib.pathological`), and the tables (:mod:`psgdlib.tables`).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Sequence

from . import runner
from . import tasks as _tasks
from .pathological import (PAPER_BUDGET, PAPER_TABLE1, PAPER_TABLE2, PROBLEM_NAMES, PROFILE_GRIDS,
                           _paper_order)
from .runner import (CHECKPOINT_DIR, _finished, _stored_config_mismatch, checkpoint_path, grid,
                     run_file, run_grid, run_name)
from .settings import SETTINGS
from .tables import (load_results, longest_T_without_failure, reproduction_cost, rerun_pairs,
                     table1, table1_settings, table2, time_to_solve)
from .utils import PROFILES, get_profile

__all__ = ["PROFILE_GRIDS", "PAPER_BUDGET", "PAPER_TABLE1", "PAPER_TABLE2", "grid", "run_name", "run_file",
           "run_grid", "checkpoint_path", "CHECKPOINT_DIR", "load_results", "table1", "table1_settings",
           "table2", "longest_T_without_failure", "PROBLEM_NAMES", "time_to_solve", "rerun_pairs",
           "reproduction_cost", "main"]
_REEXPORTED = (_paper_order, _finished, _stored_config_mismatch)   # private names tests and resources use


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


def _parser() -> argparse.ArgumentParser:
    """The ``run`` and ``summarize`` commands and their options."""
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
    r.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="a Dask scheduler (e.g. tcp://host:8786): submit every unfinished run to its "
                        "workers instead of running here; --out must be a folder every worker shares "
                        "(needs: pip install distributed; not with --jobs > 1)")
    r.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: 1 with --jobs > 1 or --scheduler, else all cores); "
                        "use 1 when several runs share the machine")
    r.add_argument("--device", default=None)
    r.add_argument("--lr", type=float, help="step size (default: 0.01 PSGD/SGD, 0.001 Adam)")
    r.add_argument("--clip", type=float,
                   help="gradient-norm clip (SGD: of g, default 1; PSGD: of P g, default off)")
    r.add_argument("--eval-every", type=int)
    r.add_argument("--n-test", type=int)
    r.add_argument("--no-stop", action="store_true",
                   help="go on after solving (< 1%% wrong) until < 0.1%% wrong or the budget "
                        "(learning curves; stop_when_solved=False)")
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
    return ap


def _summarize(a: argparse.Namespace) -> int:
    """Print Table I per named setting and Table II per setting from the files under ``--out``."""
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


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()
    a = ap.parse_args(argv)
    if a.cmd == "summarize":
        return _summarize(a)
    try:
        configs = _run_configs(a)
        pause_at = None if a.pause_after is None else time.time() + a.pause_after
        command = None if argv is None else " ".join(["python -m psgdlib.experiments", *argv])
        done = runner.run_grid(configs, a.out, jobs=a.jobs, device=a.device, max_seconds=a.max_seconds,
                               threads=a.threads, command=command, checkpoint_every=a.checkpoint_every,
                               pause_at=pause_at, scheduler=a.scheduler)
    except (ValueError, runner.MissingPackageError) as e:
        ap.error(str(e))
    if len(done) < len(configs):
        print(f"{len(configs) - len(done)} runs paused or not started; rerun the command to continue",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
