"""``kill -9`` of the runner with ``--jobs 2``: its workers exit with it, and a rerun finishes
the interrupted runs with the same results as an uninterrupted run (issue 25, item 9)."""
import time
from pathlib import Path

import pytest

from psgdlib import experiments as ex
from tests.cli_runs import cli, kill_mid_run, results, run
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


def test_kill_9_of_the_parent_takes_its_workers_and_a_rerun_matches(tmp_path):
    cmd = cli("run", "--problems", "addition", "--T", "10", "--seeds", "0-1", "--hidden", "30",
              "--iterations", "1500", "--eval-every", "50", "--n-test", "500", "--no-stop",
              "--checkpoint-every", "100", "--jobs", "2")
    ref, out = tmp_path / "ref", tmp_path / "out"
    run(cmd + ["--out", str(ref)])
    workers: list[int] = []
    kill_mid_run(cmd, out, checkpoints=2,
                 before_kill=lambda pid: workers.extend(p for p in _children(pid) if _is_worker(p)))
    assert len(workers) == 2, "both runs should be training in their own worker"
    deadline = time.time() + 20
    while any(_alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "workers outlived their killed parent"
    assert not list(out.glob("*.json")), "killed before either run finished"
    ckdir = out / ex.CHECKPOINT_DIR
    assert len(list(ckdir.glob("*.pt"))) == 2

    run(cmd + ["--out", str(out)])
    assert results(out) == results(ref) and len(results(ref)) == 2
    assert not list(ckdir.glob("*.pt"))
