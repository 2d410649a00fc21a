"""The result schema of one synthetic-problem run (Experiments 1 and 2): :class:`RunResult`.

A result file is one JSON object (written by :func:`psgdlib.utils.atomic_write_json`, keys
sorted)::

    config                 the resolved TrainConfig (dict)
    solved                 bool: an evaluation had < 1% of the test sequences wrong
    iterations_to_solve    first such iteration, or null
    iterations_to_0.1pct   first iteration with < 0.1% wrong, or null
    iterations_run, stopped ("solved", "solved_0.1pct", "budget", "time_limit", "non_finite")
    final_test_error       error of the last evaluation (null when non-finite)
    wall_time, seconds_per_iteration   training seconds (evaluations excluded)
    curve                  {iteration, train_loss, test_error, test_loss, wall_time, n_test}:
                           one entry per evaluation; ``n_test`` is the number of test
                           sequences that evaluation scored
    provenance             {command, git_commit, hardware, torch, python, date}
    error                  (non-finite runs) what happened
    schema_version         2

**Versions.** Files without ``schema_version`` are version 1 (everything before the curve
recorded ``n_test``).  For them ``n_test`` is *inferred* from the evaluation rule of
:func:`psgdlib.train.evaluate_test_set`: the first ``min(1000, n)`` test sequences are scored,
and the whole set of ``n = config["n_test"]`` only when fewer than 5% of those are wrong.  So
a point is read as scored on ``n`` when its error is below 5%, or is not a multiple of 1/1000
(it cannot come from 1,000 sequences), and as scored on 1,000 otherwise.  One case is
misread: a whole-set error of 5% or more after a first chunk below 5% that happens to be a
multiple of 1/1000 (rare: it needs the chunk and the set to straddle 5%).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .utils import atomic_write_json

__all__ = ["SCHEMA_VERSION", "STOPPED", "CURVE_KEYS", "SCREEN_N", "SCREEN_ERROR", "RunResult",
           "is_run", "infer_n_test", "result_files", "provenance_of"]

SCHEMA_VERSION = 2
STOPPED = ("solved", "solved_0.1pct", "budget", "time_limit", "non_finite")
CURVE_KEYS = ("iteration", "train_loss", "test_error", "test_loss", "wall_time", "n_test")
#: The screening rule of the test evaluation: the first SCREEN_N sequences, the whole set
#: only when fewer than SCREEN_ERROR of them are wrong.
SCREEN_N = 1000
SCREEN_ERROR = 0.05
_CONFIG_KEYS = ("problem", "T", "optimizer", "seed", "hidden", "iterations", "pairs")


def is_run(obj: Any) -> bool:
    """Whether a parsed JSON object is meant as a run result (config with a problem, and an
    outcome); other JSON files (MNIST runs, notes) are not."""
    return (isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "solved" in obj
            and "problem" in obj["config"])


def infer_n_test(test_error: Iterable[float], n_test: int) -> list[int]:
    """Test sequences behind each evaluation of a version-1 curve (see the module docstring)."""
    chunk = min(SCREEN_N, n_test)
    out = []
    for e in test_error:
        on_chunk = chunk < n_test and e >= SCREEN_ERROR and abs(e * chunk - round(e * chunk)) < 1e-6
        out.append(chunk if on_chunk else n_test)
    return out


@dataclass
class RunResult:
    """One run's outcome (see the module docstring for the JSON form).  ``curve`` maps each
    of :data:`CURVE_KEYS` to a list with one entry per evaluation (None: no curve)."""
    config: dict[str, Any]
    solved: bool
    iterations_to_solve: int | None
    iterations_to_strict: int | None      # JSON key "iterations_to_0.1pct"
    iterations_run: int | None
    stopped: str
    final_test_error: float | None
    wall_time: float | None
    seconds_per_iteration: float | None = None
    curve: dict[str, list] | None = None
    provenance: dict[str, Any] | None = None
    error: str | None = None
    schema_version: int = SCHEMA_VERSION  # the version it was read as (1: n_test inferred)
    source: str = field(default="", compare=False)   # the file it was read from

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """The JSON object (optional keys only where set, as in every stored file)."""
        d = {"config": dict(self.config), "solved": self.solved,
             "iterations_to_solve": self.iterations_to_solve,
             "iterations_to_0.1pct": self.iterations_to_strict,
             "iterations_run": self.iterations_run, "stopped": self.stopped,
             "final_test_error": self.final_test_error, "wall_time": self.wall_time,
             "curve": None if self.curve is None else {k: list(v) for k, v in self.curve.items()},
             "schema_version": SCHEMA_VERSION}   # the curve always carries n_test now
        for k in ("seconds_per_iteration", "provenance", "error"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    def write(self, path: str | os.PathLike) -> Path:
        """Write the file atomically; returns its path."""
        atomic_write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "") -> "RunResult":
        """Validate and read a parsed result; ``ValueError`` naming ``source`` when it is
        malformed or of an unknown version.  A version-1 curve gets its inferred ``n_test``."""
        where = f"{source}: " if source else ""
        try:
            r = cls._parse(d)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}malformed result file ({type(e).__name__}: {e})") from None
        r.source = source
        return r

    @classmethod
    def _parse(cls, d: Mapping[str, Any]) -> "RunResult":
        if not is_run(d):
            raise ValueError("not a run result: needs 'config' (with 'problem') and 'solved'")
        version = d.get("schema_version", 1)
        if version not in (1, SCHEMA_VERSION):
            raise ValueError(f"schema_version {version!r}; this psgdlib reads 1 and {SCHEMA_VERSION}")
        c = d["config"]
        missing = [k for k in _CONFIG_KEYS if k not in c]
        if missing:
            raise KeyError(f"config lacks {missing}")
        if not isinstance(d["solved"], bool) or d["stopped"] not in STOPPED:
            raise ValueError(f"solved={d['solved']!r}, stopped={d['stopped']!r} (one of {STOPPED})")
        curve = d.get("curve")
        if curve is not None:
            curve = {k: list(curve[k]) for k in CURVE_KEYS if k != "n_test"} | (
                {"n_test": list(curve["n_test"])} if version > 1 else
                {"n_test": infer_n_test(curve["test_error"], int(c["n_test"]))})
            if len({len(v) for v in curve.values()}) > 1:
                raise ValueError(f"curve lists of unequal lengths {[len(v) for v in curve.values()]}")
        return cls(config=dict(c), solved=d["solved"], iterations_to_solve=d["iterations_to_solve"],
                   iterations_to_strict=d.get("iterations_to_0.1pct"),
                   iterations_run=d["iterations_run"], stopped=d["stopped"],
                   final_test_error=d["final_test_error"], wall_time=d["wall_time"],
                   seconds_per_iteration=d.get("seconds_per_iteration"), curve=curve,
                   provenance=d.get("provenance"), error=d.get("error"), schema_version=version)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "RunResult":
        """The run stored at ``path``; ``ValueError`` naming the file when it is not valid
        JSON or not a valid run result."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable result file ({e}); delete it or rerun the run") from e
        return cls.from_dict(d, str(path))

    # ------------------------------------------------------------ conveniences
    @property
    def budget(self) -> int:
        """Iterations the run was allowed: its configured budget, or, for an unsolved run
        stopped by a time limit, the iterations it actually ran."""
        if not self.solved and self.stopped == "time_limit" and self.iterations_run:
            return int(self.iterations_run)
        return int(self.config["iterations"])


def result_files(dirs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Every ``*.json`` file under ``dirs`` (recursively, sorted per folder)."""
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    return [f for d in dirs for f in sorted(Path(d).rglob("*.json"))]


def provenance_of(files: Iterable[str | os.PathLike]):
    """Where the stored results ``files`` came from, one row per file (a DataFrame indexed by
    file): ``command``, ``git_commit``, ``hardware``, ``torch``, ``python``, ``date``.  Works
    for every result file that carries ``provenance`` (synthetic runs and MNIST runs)."""
    import pandas as pd
    cols = ["command", "git_commit", "hardware", "torch", "python", "date"]
    rows = []
    for f in files:
        try:
            d = json.loads(Path(f).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{f}: not a readable result file ({e})") from e
        p = d.get("provenance") if isinstance(d, dict) else None
        if not isinstance(p, dict):
            raise ValueError(f"{f}: no provenance in this file")
        rows.append({"file": str(f), **{k: p.get(k) for k in cols}})
    return pd.DataFrame(rows, columns=["file", *cols]).set_index("file")

