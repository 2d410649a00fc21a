"""``kill -9`` of the runner with ``--jobs 2``: its workers exit with it, and a rerun finishes
the interrupted runs with the same results as an uninterrupted run (issue 25, item 9)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from psgdlib import experiments as ex

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _children(pid: int) -> list[int]:
    """PIDs of the processes whose parent is ``pid`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _is_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _results(folder: Path) -> dict[str, dict]:
    out = {}
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text())
        for k in ("wall_time", "seconds_per_iteration", "provenance"):
            r.pop(k, None)
        r["curve"].pop("wall_time")
        out[f.name] = r
    return out


def test_kill_9_of_the_parent_takes_its_workers_and_a_rerun_matches(tmp_path):
    args = ["run", "--problems", "addition", "--T", "10", "--seeds", "0-1", "--hidden", "30",
            "--iterations", "1500", "--eval-every", "50", "--n-test", "500", "--no-stop",
            "--checkpoint-every", "100", "--jobs", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "psgdlib.experiments", *args]
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(cmd + ["--out", str(ref)], env=env, check=True, capture_output=True)

    proc = subprocess.Popen(cmd + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckdir = out / ex.CHECKPOINT_DIR
    deadline = time.time() + 180
    while len(list(ckdir.glob("*.pt"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    workers = [p for p in _children(proc.pid) if _is_worker(p)]
    assert len(workers) == 2, "both runs should be training in their own worker"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while any(_alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "workers outlived their killed parent"
    assert not list(out.glob("*.json")), "killed before either run finished"
    assert len(list(ckdir.glob("*.pt"))) == 2

    subprocess.run(cmd + ["--out", str(out)], env=env, check=True, capture_output=True)
    assert _results(out) == _results(ref) and len(_results(ref)) == 2
    assert not list(ckdir.glob("*.pt"))
