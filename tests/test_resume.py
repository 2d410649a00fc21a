"""Mid-run checkpoints: an interrupted and resumed run is bit-identical to an uninterrupted one."""
import json
import time

import pytest
import torch

from psgdlib import experiments as ex
from psgdlib.train import RunPaused, TrainConfig, train
from tests.cli_runs import cli, kill_mid_run, results, run


def _strip_times(r: dict) -> dict:
    r = json.loads(json.dumps(r))
    for k in ("wall_time", "seconds_per_iteration"):
        r.pop(k, None)
    r["curve"].pop("wall_time")
    return r


@pytest.mark.parametrize("optimizer,pairs", [("psgd_kron", "finite_difference"), ("psgd_kron", "hvp"),
                                             ("psgd_dense", "finite_difference"), ("sgd", "finite_difference"),
                                             ("adam", "finite_difference")])
def test_paused_and_resumed_run_equals_uninterrupted(tmp_path, optimizer, pairs):
    cfg = TrainConfig("addition", 10, optimizer=optimizer, pairs=pairs, hidden=8, iterations=300,
                      eval_every=20, n_test=200, lr=0.02 if optimizer != "adam" else None,
                      stop_when_solved=False, clip=1.0)
    whole = train(cfg, progress=False)
    ck = tmp_path / "run.pt"
    pauses = 0
    while True:   # pause at the first evaluation of every call: 15 interruptions
        try:
            resumed = train(cfg, progress=False, checkpoint=ck, checkpoint_every=40, pause_after=0.0)
            break
        except RunPaused as e:
            pauses += 1
            assert e.checkpoint == ck and ck.exists()
    assert pauses == 300 // 20 - 1
    assert _strip_times(resumed) == _strip_times(whole)
    assert resumed["iterations_run"] == 300 and len(resumed["curve"]["iteration"]) == 15


def test_resume_checks_the_config_and_names_a_bad_file(tmp_path):
    cfg = TrainConfig("addition", 10, hidden=8, iterations=100, eval_every=20, n_test=200)
    ck = tmp_path / "run.pt"
    with pytest.raises(RunPaused):
        train(cfg, progress=False, checkpoint=ck, pause_after=0.0)
    other = TrainConfig("addition", 10, hidden=8, iterations=100, eval_every=20, n_test=200, lr=0.02)
    with pytest.raises(ValueError, match="another run.*lr"):
        train(other, progress=False, checkpoint=ck)
    ck.write_bytes(ck.read_bytes()[:100])   # truncated
    with pytest.raises(ValueError, match="run.pt: not a readable training checkpoint"):
        train(cfg, progress=False, checkpoint=ck)
    with pytest.raises(ValueError, match="checkpoint_every"):
        train(cfg, progress=False, checkpoint=ck, checkpoint_every=0)


def test_killed_cli_run_resumes_mid_run_bit_identically(tmp_path):
    """The real CLI, killed with SIGKILL mid-run, then rerun: it continues from its last
    checkpoint (not from iteration 0) and stores the same result as an uninterrupted run."""
    cmd = cli("run", "--problems", "addition", "--T", "10", "--seeds", "0", "--hidden", "30",
              "--iterations", "3000", "--eval-every", "50", "--n-test", "500", "--no-stop",
              "--checkpoint-every", "100", "--threads", "1")
    ref, out = tmp_path / "ref", tmp_path / "out"
    run(cmd + ["--out", str(ref)])
    kill_mid_run(cmd, out, checkpoints=1, before_kill=lambda pid: time.sleep(0.3), timeout=120)
    ckdir = out / ex.CHECKPOINT_DIR
    assert not list(out.glob("*.json")), "killed before the run finished"
    (ck,) = ckdir.glob("*.pt")
    done_before = torch.load(ck, weights_only=False)["state"]["it"]
    assert 0 < done_before < 3000
    log = run(cmd + ["--out", str(out)])
    assert f"resuming from iteration {done_before}" in log
    assert results(out) == results(ref) and len(results(ref)) == 1
    assert not list(ckdir.glob("*.pt")), "a finished run removes its checkpoint"
