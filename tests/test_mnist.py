"""Tests of psgdlib.mnist (Experiment 3) on tiny synthetic data: no MNIST files needed."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import psgdlib.mnist as mn
from psgdlib.mnist import evaluate, make_model, run_mnist, weights_digest


def quadrant_data(n_train: int = 40, n_test: int = 20, n_classes: int = 4, noise: float = 0.3,
                  seed: int = 0):
    """An easy problem: class c lights up quadrant c of the 28x28 image, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.randint(0, n_classes, (n,), generator=g)
        x = noise * torch.rand(n, 1, 28, 28, generator=g)
        for c in range(n_classes):
            r, q = divmod(c, 2)
            x[y == c, :, 14 * r:14 * r + 14, 14 * q:14 * q + 14] += 1.0
        return x.clamp_(0, 1), y

    return (*make(n_train), *make(n_test))


FAST = dict(batch_size=10, progress=False, verbose=False, device="cpu", profile="smoke")


def strip_times(result: dict) -> dict:
    h = {k: v for k, v in result["history"].items()
         if k not in ("epoch_time_s", "train_time_s", "eval_time_s")}
    return dict(history=h, train_log=result["train_log"],
                final=result["final_weights_sha256"], init=result["initial_weights_sha256"])


def test_same_initial_weights_for_sgd_and_psgd():
    data = quadrant_data()
    r_sgd = run_mnist("sgd", epochs=0, data=data, **FAST)
    r_psgd = run_mnist("psgd", epochs=0, data=data, **FAST)
    assert r_sgd["initial_weights_sha256"] == r_psgd["initial_weights_sha256"]
    assert r_sgd["initial_weights_sha256"] == weights_digest(make_model(0))
    assert r_sgd["history"]["test_error"] == r_psgd["history"]["test_error"]
    assert weights_digest(make_model(1)) != weights_digest(make_model(0))
    assert r_sgd["num_parameters"] == 39_706
    # one epoch later the two optimizers have moved the weights differently
    r1 = run_mnist("sgd", epochs=1, data=data, lr=0.05, **FAST)
    r2 = run_mnist("psgd", epochs=1, data=data, lr=0.05, **FAST)
    assert r1["final_weights_sha256"] != r2["final_weights_sha256"]


def test_test_error_matches_manual_count():
    xtr, ytr, xte, yte = quadrant_data(n_test=37)
    model = make_model(3)
    with torch.no_grad():
        pred = model(xte).argmax(dim=1)
    manual = sum(int(p) != int(t) for p, t in zip(pred, yte)) / len(yte)
    err, loss = evaluate(model, xte, yte, batch_size=10)  # 37 = 3 full batches + 7
    assert err == manual
    with torch.no_grad():
        assert loss == pytest.approx(F.cross_entropy(model(xte), yte).item(), rel=1e-5)
    # the run's epoch-0 entry is the error of the initial weights, counted the same way
    r = run_mnist("sgd", epochs=0, seed=3, data=(xtr, ytr, xte, yte), **FAST)
    assert r["history"]["test_error"] == [manual]
    assert r["history"]["epoch"] == [0] and r["history"]["train_loss"] == [None]
    # all-wrong and all-right limits
    assert evaluate(model, xte, pred)[0] == 0.0
    assert evaluate(model, xte, (pred + 1) % 10)[0] == 1.0


@pytest.mark.parametrize("optimizer", ["psgd", "sgd"])
def test_checkpoint_resume_is_bit_identical(optimizer, tmp_path, monkeypatch):
    data = quadrant_data(n_train=30)
    kw = dict(data=data, lr=0.05, **FAST)
    full = run_mnist(optimizer, epochs=3, **kw)
    assert full["resumed_from_epoch"] is None

    # stop after epoch 1, then resume to 3
    ck = tmp_path / "a"
    part = run_mnist(optimizer, epochs=1, checkpoint_dir=ck, **kw)
    assert part["history"]["epoch"] == [0, 1]
    resumed = run_mnist(optimizer, epochs=3, checkpoint_dir=ck, **kw)
    assert resumed["resumed_from_epoch"] == 1
    assert strip_times(resumed) == strip_times(full)

    # a crash in the middle of epoch 2 (the evaluation after its training) loses epoch 2 only
    ck = tmp_path / "b"
    calls = {"n": 0}
    real_evaluate = mn.evaluate

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 0, epoch 1, then crash
            raise KeyboardInterrupt
        return real_evaluate(*a, **k)

    monkeypatch.setattr(mn, "evaluate", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_mnist(optimizer, epochs=3, checkpoint_dir=ck, **kw)
    monkeypatch.setattr(mn, "evaluate", real_evaluate)
    assert [p.suffix for p in ck.iterdir()] == [".pt"]  # no temporary file left behind
    resumed = run_mnist(optimizer, epochs=3, checkpoint_dir=ck, **kw)
    assert resumed["resumed_from_epoch"] == 1
    assert strip_times(resumed) == strip_times(full)

    # a finished run is returned from its checkpoint without training
    again = run_mnist(optimizer, epochs=3, checkpoint_dir=ck, **kw)
    assert again["resumed_from_epoch"] == 3
    assert strip_times(again) == strip_times(full)


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    data = quadrant_data(n_train=20)
    run_mnist("sgd", epochs=1, data=data, lr=0.05, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match="another configuration"):
        run_mnist("sgd", epochs=2, data=data, lr=0.02, checkpoint_dir=tmp_path, **FAST)


def test_psgd_learns_an_easy_problem():
    data = quadrant_data(n_train=200, n_test=100, noise=0.5)
    r = run_mnist("psgd", epochs=3, data=data, lr=0.1, batch_size=20, progress=False,
                  verbose=False, device="cpu", profile="smoke", log_every=5)
    h = r["history"]
    assert not r["diverged"]
    assert h["train_loss"][-1] < h["train_loss"][1] < h["test_loss"][0]
    assert h["test_loss"][-1] < 0.5 * h["test_loss"][0]
    assert h["test_error"][-1] < 0.25 < 0.75 <= h["test_error"][0] + 0.1  # chance: 75%
    assert len(r["train_log"]["loss"]) == 3 * 10 // 5
    json.dumps(r)  # the result is JSON-serialisable


def test_profiles_table():
    assert set(mn.PROFILES) == {"smoke", "cpu", "paper"}
    assert mn.PROFILES["paper"]["train_limit"] is None and mn.PROFILES["paper"]["test_limit"] is None
    for p in mn.PROFILES.values():
        assert {"train_limit", "test_limit", "epochs"} <= set(p)


def test_limits_pick_a_fixed_subset():
    data = quadrant_data(n_train=50, n_test=30)
    a = mn.load_data(train_limit=12, test_limit=7, data=data)
    b = mn.load_data(train_limit=12, test_limit=7, data=data)
    assert [t.shape[0] for t in a] == [12, 12, 7, 7]
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    r = run_mnist("sgd", epochs=0, data=data, train_limit=12, test_limit=1000, **FAST)
    assert r["config"]["n_train"] == 12 and r["config"]["n_test"] == 30


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="adam"), "unknown optimizer"),
    (dict(profile="huge"), "unknown profile"),
    (dict(epochs=-1), "epochs"),
    (dict(epochs=1.5), "epochs"),
    (dict(lr=0.0), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(batch_size=0), "batch_size"),
    (dict(train_limit=0), "train_limit"),
    (dict(log_every=0), "log_every"),
    (dict(clip_norm=-1.0), "clip_norm"),
    (dict(pairs="magic"), "pair source"),
    (dict(preconditioner="full"), "preconditioner"),
])
def test_bad_arguments_raise(kwargs, match):
    args = dict(optimizer="psgd", epochs=0, data=quadrant_data(), **FAST)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        run_mnist(**args)


def test_bad_data_raises():
    xtr, ytr, xte, yte = quadrant_data()
    for data, match in [
        ((xtr, ytr, xte), "four tensors"),
        ((xtr, ytr[:-1], xte, yte), "labels"),
        ((xtr, ytr, xte, yte + 10), "0..9"),
        (((xtr * 255).to(torch.uint8), ytr, xte, yte), "floating point"),
        ((xtr, ytr.float(), xte, yte), "integer"),
    ]:
        with pytest.raises(ValueError, match=match):
            run_mnist("sgd", epochs=0, data=data, **FAST)


def test_cli_writes_json_with_provenance(tmp_path, monkeypatch):
    data = quadrant_data(n_train=20, n_test=10)

    def fake_load_mnist(root=None, train=True, dataset="mnist", **kw):
        assert dataset == "mnist"
        return (data[0], data[1]) if train else (data[2], data[3])

    monkeypatch.setattr(mn, "load_mnist", fake_load_mnist)
    out = tmp_path / "res" / "sgd.json"
    mn.main(["--optimizer", "sgd", "--profile", "smoke", "--epochs", "1", "--batch-size", "10",
             "--device", "cpu", "--no-progress", "--out", str(out),
             "--checkpoint-dir", str(tmp_path / "ck")])
    res = json.loads(out.read_text())
    assert res["config"]["optimizer"] == "sgd" and res["config"]["epochs"] == 1
    assert res["history"]["epoch"] == [0, 1]
    assert {"command", "git_commit", "hardware", "torch", "date"} <= set(res["provenance"])
    assert res["provenance"]["command"].startswith("python -m psgdlib.mnist --optimizer sgd")
    assert list((tmp_path / "ck").glob("*.pt"))
    with pytest.raises(SystemExit):
        mn.main(["--optimizer", "adam"])


def test_a_non_finite_loss_stops_the_run_as_diverged(tmp_path):
    """The loop's one rule: the first non-finite window mean ends the epoch; that epoch is still
    scored, the run stops there (epochs 2 and 3 never run) and is marked diverged, also when resumed."""
    xtr, ytr, xte, yte = quadrant_data(n_train=30)
    xtr = xtr.clone()
    xtr[:] = float("nan")                     # every minibatch has a NaN loss
    kw = dict(data=(xtr, ytr, xte, yte), lr=0.05, log_every=2, **FAST)
    r = run_mnist("sgd", epochs=3, checkpoint_dir=tmp_path, **kw)
    assert r["diverged"] and r["history"]["epoch"] == [0, 1]
    assert r["history"]["iteration"] == [0, 2] and r["train_log"]["iteration"] == [2]
    assert r["train_log"]["loss"][0] != r["train_log"]["loss"][0]        # NaN
    again = run_mnist("sgd", epochs=3, checkpoint_dir=tmp_path, **kw)   # resumed: nothing more to do
    assert again["diverged"] and again["resumed_from_epoch"] == 1 and again["history"]["epoch"] == [0, 1]
