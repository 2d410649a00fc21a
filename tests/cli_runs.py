"""Helpers of the tests that run the real experiment CLI in a subprocess and kill it mid-run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from psgdlib import experiments as ex

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def cli(*args: str) -> list[str]:
    """The command line of ``python -m psgdlib.experiments ARGS``."""
    return [sys.executable, "-m", "psgdlib.experiments", *args]


def run(cmd: list[str]) -> str:
    """Run ``cmd`` to the end (it must succeed); its stdout."""
    return subprocess.run(cmd, env=ENV, check=True, capture_output=True, text=True).stdout


def results(folder: Path) -> dict[str, dict]:
    """Every result file in ``folder`` by name, without wall times and provenance (what two
    runs of the same configuration must share)."""
    out = {}
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text())
        for k in ("wall_time", "seconds_per_iteration", "provenance"):
            r.pop(k, None)
        r["curve"].pop("wall_time")
        out[f.name] = r
    return out


def kill_mid_run(cmd: list[str], out: Path, checkpoints: int, before_kill: Callable[[int], None] | None = None,
                 timeout: float = 180) -> None:
    """Start ``cmd --out OUT``, wait until ``checkpoints`` checkpoint files exist, call
    ``before_kill(pid)``, then SIGKILL the process and wait for it."""
    proc = subprocess.Popen(cmd + ["--out", str(out)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckdir = out / ex.CHECKPOINT_DIR
    deadline = time.time() + timeout
    while len(list(ckdir.glob("*.pt"))) < checkpoints and time.time() < deadline:
        time.sleep(0.05)
    if before_kill is not None:
        before_kill(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
