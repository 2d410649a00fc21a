"""Experiment 3's recipe options (issue 23): the step-size schedule, [-1, 1] pixels, random shifts
of the training images and a sparser preconditioner fit, on tiny synthetic data."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import psgdlib.mnist as mn
from psgdlib.models.rnn2d import image_to_patches
from psgdlib.recipe import MAX_SHIFT, step_size, to_canvas
from tests.test_mnist import FAST, quadrant_data, strip_times


def _digits(n: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_centred_unit_canvas_is_the_models_own_padding():
    x = _digits()
    c = to_canvas(x)
    assert c.shape == (50, 1, 32, 32)
    assert torch.equal(c, F.pad(x, (2, 2, 2, 2)))
    assert torch.equal(image_to_patches(c), image_to_patches(x))


def test_signed_pixels_have_a_minus_one_background():
    x = _digits()
    c = to_canvas(x, "signed")
    assert torch.equal(c[:, :, 2:30, 2:30], 2 * x - 1)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (c[:, 0][:, border] == -1).all()
    assert c.min() >= -1 and c.max() <= 1


@pytest.mark.parametrize("shift", [1, 2])
def test_shift_places_each_digit_whole_at_an_offset_within_range(shift):
    x = _digits(400)
    c = to_canvas(x, "unit", shift, torch.Generator().manual_seed(1))
    seen = set()
    for i in range(400):
        hits = [(r, q) for r in range(5) for q in range(5) if torch.equal(c[i, :, r:r + 28, q:q + 28], x[i])]
        assert len(hits) == 1, "the digit is on the canvas exactly once, unchanged"
        r, q = hits[0]
        assert abs(r - MAX_SHIFT) <= shift and abs(q - MAX_SHIFT) <= shift
        assert c[i].sum() == pytest.approx(x[i].sum().item(), rel=1e-6)   # nothing else on the canvas
        seen.add((r, q))
    assert len(seen) == (2 * shift + 1) ** 2, "every offset in range occurs"
    again = to_canvas(x, "unit", shift, torch.Generator().manual_seed(1))
    assert torch.equal(again, c)


def test_geometric_schedule_runs_from_lr_to_lr_final():
    steps = [step_size(0.1, e, 5, "geometric", 0.001) for e in range(1, 6)]
    assert steps[0] == pytest.approx(0.1) and steps[-1] == pytest.approx(0.001)
    ratios = [b / a for a, b in zip(steps, steps[1:])]
    assert ratios == pytest.approx([0.001 ** 0.25 / 0.1 ** 0.25] * 4)
    assert step_size(0.1, 3, 5) == 0.1


def test_run_follows_the_schedule_and_records_the_step():
    r = mn.run_mnist("sgd", epochs=3, data=quadrant_data(), lr=0.1, schedule="geometric", lr_final=0.001, **FAST)
    assert r["history"]["lr"][0] is None
    assert r["history"]["lr"][1:] == pytest.approx([0.1, 0.01, 0.001])
    assert r["config"]["schedule"] == "geometric" and r["config"]["lr_final"] == 0.001
    const = mn.run_mnist("sgd", epochs=2, data=quadrant_data(), lr=0.1, **FAST)
    assert const["history"]["lr"] == [None, 0.1, 0.1]


def test_both_optimizers_see_the_same_shifted_minibatches(monkeypatch):
    """The shifts come from their own generator (seed + SHIFT_SEED_OFFSET): the same for SGD and
    PSGD, and new ones every epoch."""
    seen: dict[str, list] = {}
    real = mn.to_canvas

    def spy(x, pixels="unit", shift=0, generator=None):
        out = real(x, pixels, shift, generator)
        if shift:
            seen.setdefault(name, []).append(out.clone())
        return out

    monkeypatch.setattr(mn, "to_canvas", spy)
    data = quadrant_data()
    for name in ("sgd", "psgd"):
        mn.run_mnist(name, epochs=2, data=data, lr=0.05, shift=2, pixels="signed", **FAST)
    assert len(seen["sgd"]) == 8 and all(torch.equal(a, b) for a, b in zip(seen["sgd"], seen["psgd"]))
    assert not torch.equal(seen["sgd"][0], seen["sgd"][4][: len(seen["sgd"][0])])


@pytest.mark.parametrize("optimizer", ["psgd", "sgd"])
def test_recipe_run_resumes_bit_identically(optimizer, tmp_path, monkeypatch):
    kw = dict(data=quadrant_data(n_train=30), lr=0.05, schedule="geometric", lr_final=0.005, shift=2,
              pixels="signed", **FAST, **({"update_every": 2, "clip_norm": 1.0} if optimizer == "psgd" else {}))
    full = mn.run_mnist(optimizer, epochs=3, **kw)
    calls = {"n": 0}
    real = mn.evaluate

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(mn, "evaluate", crashing)
    with pytest.raises(KeyboardInterrupt):
        mn.run_mnist(optimizer, epochs=3, checkpoint_dir=tmp_path, **kw)
    monkeypatch.setattr(mn, "evaluate", real)
    resumed = mn.run_mnist(optimizer, epochs=3, checkpoint_dir=tmp_path, **kw)
    assert resumed["resumed_from_epoch"] == 1
    assert strip_times(resumed) == strip_times(full)
    with pytest.raises(ValueError, match="another"):   # a geometric schedule cannot be extended
        mn.run_mnist(optimizer, epochs=4, checkpoint_dir=tmp_path, **kw)


def test_update_every_fits_the_preconditioner_less_often():
    data = quadrant_data()
    a = mn.run_mnist("psgd", epochs=1, data=data, lr=0.05, **FAST)
    b = mn.run_mnist("psgd", epochs=1, data=data, lr=0.05, update_every=4, **FAST)
    assert a["final_weights_sha256"] != b["final_weights_sha256"]
    assert b["config"]["update_every"] == 4


@pytest.mark.parametrize("kwargs,match", [
    (dict(schedule="cosine"), "schedule"), (dict(schedule="geometric"), "lr_final"),
    (dict(lr_final=0.01), "lr_final"), (dict(pixels="zero"), "pixels"), (dict(shift=3), "shift"),
    (dict(shift=-1), "shift"), (dict(update_every=0), "update_every"),
    (dict(schedule="geometric", lr_final=float("nan")), "lr_final")])
def test_bad_recipe_options_are_refused_before_training(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mn.run_mnist("psgd", epochs=1, data=quadrant_data(), **FAST, **kwargs)
