"""``--scheduler``: a sweep on a Dask distributed cluster (issue 24, item 4).

A ``LocalCluster`` of 2 worker processes stands in for a real cluster: the same grid run there
and by the local runner gives the same result files, a rerun skips them, and a run whose worker
is killed with SIGKILL mid-run is finished anyway (by another worker, from the run's last
checkpoint) with the result of an uninterrupted run."""
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from psgdlib import experiments as ex
from psgdlib import runner
from tests.cli_runs import results

GRID = ["run", "--problems", "addition", "--T", "10", "--seeds", "0-2", "--hidden", "8",
        "--iterations", "200", "--eval-every", "50", "--n-test", "200", "--no-stop",
        "--optimizers", "psgd_kron", "--checkpoint-every", "100"]


def _iteration(ckpt: Path) -> int:
    """The iteration a run's checkpoint holds; -1 while there is none."""
    try:
        return torch.load(ckpt, weights_only=False)["state"]["it"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return -1


def test_scheduler_and_jobs_together_are_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ex.main(GRID + ["--out", str(tmp_path), "--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--scheduler and --jobs > 1" in err
    assert not list(tmp_path.glob("*.json"))


def test_missing_distributed_names_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)   # import distributed -> ImportError
    with pytest.raises(SystemExit) as e:
        ex.main(GRID + ["--out", str(tmp_path), "--scheduler", "tcp://127.0.0.1:1"])
    assert e.value.code == 2
    assert "pip install distributed" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json")) and not (tmp_path / ex.CHECKPOINT_DIR).exists()


def test_an_output_folder_a_worker_cannot_see_is_refused(tmp_path):
    class Client:   # two workers, the second on another machine without the folder
        def run(self, fn, path):
            return {"tcp://10.0.0.1:4000": fn(path), "tcp://10.0.0.2:4000": fn(path + ".elsewhere")}
    with pytest.raises(ValueError, match=r"not visible to the workers tcp://10\.0\.0\.2:4000.*shares"):
        runner._check_shared(Client(), tmp_path)
    assert not list(tmp_path.iterdir()), "the probe file is removed"


def test_an_unreachable_scheduler_is_a_usage_error(tmp_path, capsys):
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(SystemExit) as e:
            ex.main(GRID + ["--out", str(tmp_path), "--scheduler", f"tcp://127.0.0.1:{port}"])
    assert e.value.code == 2
    assert f"--scheduler tcp://127.0.0.1:{port}: cannot connect" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c:
        yield c


def test_the_grid_on_a_cluster_gives_the_local_runners_files(cluster, tmp_path, capsys):
    local, shared = tmp_path / "local", tmp_path / "shared"
    assert ex.main(GRID + ["--out", str(local)]) == 0
    assert ex.main(GRID + ["--out", str(shared), "--scheduler", cluster.scheduler_address]) == 0
    assert len(results(local)) == 3
    assert results(shared) == results(local)
    assert not list((shared / ex.CHECKPOINT_DIR).glob("*.pt")), "finished runs remove their checkpoints"
    for f in shared.glob("*.json"):   # the sweep's command, not the worker's `dask worker ...`
        assert json.loads(f.read_text())["provenance"]["command"].endswith(
            f"--scheduler {cluster.scheduler_address}")
    stamps = {f.name: f.stat().st_mtime_ns for f in shared.glob("*.json")}
    capsys.readouterr()
    assert ex.main(GRID + ["--out", str(shared), "--scheduler", cluster.scheduler_address]) == 0
    assert "3 runs in the grid, 3 already done, 0 to run" in capsys.readouterr().out
    assert {f.name: f.stat().st_mtime_ns for f in shared.glob("*.json")} == stamps, "nothing rewritten"


def test_a_run_whose_worker_is_killed_is_finished_from_its_checkpoint(cluster, tmp_path):
    from distributed import Client
    (cfg,) = runner.grid(["addition"], [10], ["psgd_kron"], [0], hidden=8, iterations=1000,
                         eval_every=50, n_test=200, stop_when_solved=False)
    ref, out = tmp_path / "ref", tmp_path / "out"
    runner.run_file(cfg, ref, progress=False, checkpoint_every=100)
    ckpt = runner.checkpoint_path(out, cfg)
    key = runner._task_key(cfg, out.resolve())
    with Client(cluster, set_as_default=False) as client:
        done: list = []
        sweep = threading.Thread(target=lambda: done.append(runner.run_grid(
            [cfg], out, scheduler=client, checkpoint_every=100, progress=False)), daemon=True)
        sweep.start()
        deadline = time.time() + 60
        while _iteration(ckpt) < 300 and time.time() < deadline:   # so that a restart from 0 shows
            time.sleep(0.02)
        busy = [w for w, keys in client.processing().items() if key in keys]
        assert len(busy) == 1, "the run should be training on one worker"
        pid = client.run(os.getpid, workers=busy)[busy[0]]
        os.kill(pid, signal.SIGKILL)
        assert not list(out.glob("*.json")), "killed before the run finished"
        at_kill = _iteration(ckpt)
        assert 300 <= at_kill < 1000
        seen = []   # the checkpoint's iteration from then on: never back to an earlier one
        while sweep.is_alive() and time.time() < deadline + 60:
            if (it := _iteration(ckpt)) >= 0:
                seen.append(it)
            time.sleep(0.02)
        sweep.join(1)
        assert not sweep.is_alive(), "the sweep did not finish"
        assert pid not in client.run(os.getpid).values(), "the killed worker is gone"
    assert done == [[out / runner.run_name(cfg)]]
    assert results(out) == results(ref) and len(results(ref)) == 1
    assert seen and min(seen) >= at_kill, \
        f"the run restarted from scratch: {at_kill}, then {sorted(set(seen))}"
    assert not ckpt.exists(), "the finished run removed its checkpoint"
