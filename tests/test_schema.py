"""The result schema (psgdlib.results.RunResult), the n_test of every evaluation, the stop rule of
``stop_when_solved`` and the checkpoints written before the curve recorded n_test."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from psgdlib import experiments as ex
from psgdlib import tasks
from psgdlib import train as train_mod
from psgdlib.results import SCHEMA_VERSION, RunResult, infer_n_test, is_run, provenance_of
from psgdlib.train import RunPaused, TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


class _Oracle(torch.nn.Module):
    """Addition (eq. (1)'s task 1): outputs the chance prediction 0.5 for its first ``n`` training
    calls, then the exact target ``(v(I) + v(J)) / 2`` at every step (a 0-weight parameter keeps
    a gradient path for the optimizer)."""

    def __init__(self, n: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.n, self.calls = n, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # x: (L, B, 2) -> (L, B, 1)
        self.calls += self.training
        exact = torch.cumsum(x[..., 0] * x[..., 1], dim=0)[..., None] / 2
        out = exact if self.calls > self.n else torch.full_like(exact, 0.5)
        return out + 0 * self.w


def test_every_stored_run_loads_and_round_trips():
    """Every run result under results/ reads through RunResult (version 1 files: n_test inferred)."""
    files = [f for f in sorted(RESULTS.rglob("*.json")) if is_run(json.loads(f.read_text()))]
    assert files, "no stored run results"
    for f in files:
        r = RunResult.read(f)
        assert r.schema_version in (1, SCHEMA_VERSION)
        if r.curve is not None:
            n = r.config["n_test"]
            assert len(r.curve["n_test"]) == len(r.curve["iteration"])
            assert all(k in (min(1000, n), n) for k in r.curve["n_test"])
        again = RunResult.from_dict(json.loads(json.dumps(r.to_dict())), str(f))
        assert again.to_dict() == r.to_dict() and again.curve == r.curve, f


def test_load_results_names_a_malformed_run_file(tmp_path):
    cfg = asdict(TrainConfig("addition", 10).resolved())
    good = RunResult(cfg, True, 100, None, 100, "solved", 0.0, 1.0)
    good.write(tmp_path / "a.json")
    assert len(ex.load_results(tmp_path)) == 1
    for name, change in (("b.json", {"stopped": "bored"}), ("c.json", {"schema_version": 99}),
                         ("d.json", {"curve": {"iteration": [1, 2], "train_loss": [1.0], "test_error": [1.0],
                                               "test_loss": [1.0], "wall_time": [1.0]}})):
        (tmp_path / name).write_text(json.dumps({**good.to_dict(), **change}))
        with pytest.raises(ValueError, match=rf"{name}: malformed result file"):
            ex.load_results(tmp_path)
        (tmp_path / name).unlink()
    (tmp_path / "e.json").write_text(json.dumps({"config": {"optimizer": "psgd"}, "history": {}}))   # MNIST-like
    assert len(ex.load_results(tmp_path)) == 1


def test_version_1_curves_get_n_test_inferred():
    # 1000 sequences only when >= 5% wrong and a multiple of 1/1000; a 200-sequence test set is all 200
    assert infer_n_test([0.5, 0.0513, 0.051, 0.04, 0.0], 10_000) == [1000, 10_000, 1000, 10_000, 10_000]
    assert infer_n_test([0.5, 0.0], 200) == [200, 200]
    old = {"config": asdict(TrainConfig("addition", 10, n_test=5000).resolved()), "solved": False,
           "iterations_to_solve": None, "iterations_to_0.1pct": None, "iterations_run": 20, "stopped": "budget",
           "final_test_error": 0.02, "wall_time": 1.0,
           "curve": {"iteration": [10, 20], "train_loss": [1, 1], "test_error": [0.3, 0.02], "test_loss": [1, 1],
                     "wall_time": [0.5, 1.0]}}
    r = RunResult.from_dict(old)
    assert r.schema_version == 1 and r.curve["n_test"] == [1000, 5000]
    assert r.to_dict()["schema_version"] == SCHEMA_VERSION


def test_each_evaluation_records_how_many_test_sequences_it_scored():
    """At chance (84.6% wrong) the first 1,000 sequences decide; once solved the whole n_test."""
    cfg = TrainConfig("addition", 10, optimizer="sgd", hidden=4, iterations=60, eval_every=20, n_test=1500,
                      stop_when_solved=False)
    r = train(cfg, progress=False, model=_Oracle(n=30))
    curve = r["curve"]
    assert curve["test_error"][0] > 0.5 and curve["test_error"][-1] == 0.0
    assert curve["n_test"] == [1000, 1500] and r["stopped"] == "solved_0.1pct"
    assert curve["n_test"] == infer_n_test(curve["test_error"], 1500)   # the version-1 rule agrees
    assert RunResult.from_dict(r).curve == curve and r["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize("stop_when_solved, stopped, iterations_run", [(True, "solved", 40),
                                                                       (False, "solved_0.1pct", 80)])
def test_stop_when_solved(monkeypatch, stop_when_solved, stopped, iterations_run):
    """True: stop at the first evaluation with < 1% wrong.  False: go on past it and stop at the
    first one with < 0.1% wrong (not at the budget of 200 iterations)."""
    errors = iter([0.5, 0.005, 0.003, 0.0005, 0.0])
    monkeypatch.setattr(train_mod, "evaluate_test_set", lambda *a: (next(errors), 1.0, 100))
    cfg = TrainConfig("addition", 10, optimizer="sgd", hidden=4, iterations=200, eval_every=20, n_test=100,
                      stop_when_solved=stop_when_solved)
    r = train(cfg, progress=False)
    assert r["stopped"] == stopped and r["iterations_run"] == iterations_run
    assert r["iterations_to_solve"] == 40
    assert r["iterations_to_0.1pct"] == (None if stop_when_solved else 80)


def _strip(r: dict) -> dict:
    r = json.loads(json.dumps(r))
    for k in ("wall_time", "seconds_per_iteration"):
        r.pop(k)
    r["curve"].pop("wall_time")
    return r


def test_a_checkpoint_without_n_test_resumes_bit_identically(tmp_path):
    """Checkpoints written before the curve recorded n_test (the runs paused in results/) resume:
    the n_test of their evaluations is inferred, everything else continues bit-identically."""
    cfg = TrainConfig("addition", 10, hidden=8, iterations=200, eval_every=20, n_test=1500, stop_when_solved=False)
    whole = train(cfg, progress=False)
    ck = tmp_path / "run.pt"
    with pytest.raises(RunPaused):
        train(cfg, progress=False, checkpoint=ck, pause_after=0.0)
    obj = torch.load(ck, weights_only=False)
    del obj["state"]["hist"]["n_test"]                  # the format the running experiments write
    torch.save(obj, ck)
    assert _strip(train(cfg, progress=False, checkpoint=ck)) == _strip(whole)


def test_the_stored_paused_checkpoints_load(tmp_path):
    """The mid-run checkpoints under results/*/_checkpoints load into their runs' models."""
    found = sorted(RESULTS.glob("*/_checkpoints/*.pt"))
    if not found:
        pytest.skip("no paused run stored")
    src = found[0]
    path = tmp_path / src.name
    shutil.copyfile(src, path)
    c = TrainConfig(**torch.load(path, weights_only=False)["config"])
    model = train_mod.build_model(tasks.get(c.problem, c.T), c.hidden, c.seed, model=c.model)
    params = list(model.parameters())
    opt = train_mod.make_optimizer(c.optimizer, params, c.lr, c.precond_lr, c.pairs, c.clip, seed=c.seed)
    st = train_mod._load_checkpoint(path, c, model, opt, torch.Generator())
    assert 0 < st.it < c.iterations and len(st.hist.n_test) == len(st.hist.iteration) > 0


def test_provenance_of_stored_files():
    files = sorted((RESULTS / "table1").glob("*.json"))[:3] + sorted((RESULTS / "mnist").glob("*.json"))[:1]
    prov = provenance_of(files)
    assert list(prov.index) == [str(f) for f in files]
    assert prov["git_commit"].notna().all() and prov["command"].str.startswith("python").all()


def test_docstrings_cite_only_files_in_the_repository():
    """A path such as ``specs/tasks.md`` named in a psgdlib docstring must exist in the repository."""
    missing = []
    for f in sorted((ROOT / "psgdlib").rglob("*.py")):
        for ref in re.findall(r"``([\w./-]+\.(?:md|py|txt|json|yml))``", f.read_text()):
            if "/" in ref and not (ROOT / ref).exists() and not ref.startswith(("OUT/", "results/mnist/psgd_cpu")):
                missing.append(f"{f.name}: {ref}")
    assert not missing, missing
