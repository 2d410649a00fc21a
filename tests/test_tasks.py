"""Tests of psgdlib.tasks against specs/tasks.md (sections 1-8 and Experiment 1).

Targets, positions and perfect predictors are recomputed here from the inputs alone,
independently of the library code.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from psgdlib import tasks
from psgdlib.tasks import Batch

torch.set_num_threads(1)

MARKER = ("addition", "multiplication", "xor")
TEMPORAL = {"temporal_order_2bit": 2, "temporal_order_3bit": 3}
MEMO = {"memorization_5bit": (5, 2), "memorization_20bit": (10, 5)}  # name -> (n, k)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def expected_length_range(name: str, T: int) -> tuple[int, int]:
    """Spec: inclusive range of sequence lengths per problem."""
    if name in MARKER:
        return T, T + math.ceil(T / 10) - 1
    if name == "addition_variable":
        return math.ceil(T / 2), T
    if name in MEMO:
        return T + 2 * MEMO[name][0], T + 2 * MEMO[name][0]
    return T, T


EXPECTED_DIMS = {  # name -> (input_dim, output_dim, loss_kind)
    "addition": (2, 1, "mse"),
    "multiplication": (2, 1, "mse"),
    "xor": (2, 1, "bce"),
    "addition_variable": (2, 1, "mse"),
    "temporal_order_2bit": (6, 4, "ce"),
    "temporal_order_3bit": (6, 8, "ce"),
    "random_permutation": (100, 100, "ce"),
    "memorization_5bit": (4, 3, "ce"),
    "memorization_20bit": (7, 6, "ce"),
}


# ----------------------------------------------------------- independent oracles
def marker_positions(inputs: torch.Tensor) -> torch.Tensor:
    """(B, 2) time indices of the two markers, from the marker channel."""
    m = inputs[..., 1].T  # (B, L)
    assert torch.all(m.sum(1) == 2), "exactly two markers per sequence"
    return torch.nonzero(m)[:, 1].reshape(-1, 2)


def oracle_targets(name: str, inputs: torch.Tensor) -> torch.Tensor:
    """Targets recomputed from the inputs only (spec §1-8)."""
    L, B, _ = inputs.shape
    base = "addition" if name == "addition_variable" else name
    if base in MARKER:
        pos = marker_positions(inputs)
        v = inputs[..., 0].T.gather(1, pos)  # (B, 2)
        if base == "addition":
            return (v[:, 0] + v[:, 1]) / 2
        if base == "multiplication":
            return v[:, 0] * v[:, 1]
        return (v[:, 0] != v[:, 1]).to(inputs.dtype)
    ids = inputs.argmax(-1)  # (L, B)
    if name in TEMPORAL:
        bits = TEMPORAL[name]
        special = ids.T < 2  # (B, L)
        assert torch.all(special.sum(1) == bits)
        s = ids.T[special].reshape(B, bits)  # row-major: in time order
        return sum(s[:, k] << k for k in range(bits))
    if name == "random_permutation":
        return torch.cat([ids[1:], ids[:1]])
    n, k = MEMO[name]
    t = torch.full_like(ids, k)
    t[L - n:] = ids[:n]
    return t


def perfect_outputs(name: str, task, inputs: torch.Tensor) -> torch.Tensor:
    """A perfect predictor built from the inputs: (L, B, output_dim)."""
    L, B, _ = inputs.shape
    target = oracle_targets(name, inputs)
    out = torch.zeros(L, B, task.output_dim, dtype=inputs.dtype)
    if task.loss_kind == "mse":
        out[-1, :, 0] = target
    elif task.loss_kind == "bce":
        out[-1, :, 0] = 20 * (2 * target - 1)
    elif target.dim() == 1:
        out[-1] = 20 * F.one_hot(target, task.output_dim).to(inputs.dtype)
    else:
        out[:] = 20 * F.one_hot(target, task.output_dim).to(inputs.dtype)
    return out


def chance_outputs(name: str, task, batch: Batch) -> torch.Tensor:
    """The spec's no-memory predictor."""
    L, B = batch.length, batch.batch_size
    out = torch.zeros(L, B, task.output_dim)
    if name in ("addition", "addition_variable"):
        out[:] = 0.5
    elif name == "multiplication":
        out[:] = 0.25
    elif name in MEMO:  # blanks right, a fixed value (0) on the data steps
        n, k = MEMO[name]
        out[:, :, k] = 20.0
        out[L - n:, :, k] = -20.0
    elif name == "random_permutation":  # uniform over 2..99, then over {0, 1}
        out[:-1, :, :2] = -1e4
        out[-1, :, 2:] = -1e4
    return out  # xor: logit 0; temporal order: uniform logits


# ------------------------------------------------------------------ API basics
def test_names_in_table_order():
    assert tasks.NAMES == (
        "addition", "multiplication", "xor", "temporal_order_2bit", "temporal_order_3bit",
        "random_permutation", "memorization_5bit", "memorization_20bit",
    )
    assert set(tasks.ALL_NAMES) == set(tasks.NAMES) | {"addition_variable"}


@pytest.mark.parametrize("name", tasks.ALL_NAMES)
@pytest.mark.parametrize("T", [30, 100])
def test_dimensions(name, T):
    task = tasks.get(name, T)
    in_dim, out_dim, kind = EXPECTED_DIMS[name]
    assert (task.name, task.T, task.input_dim, task.output_dim, task.loss_kind) == (
        name, T, in_dim, out_dim, kind)
    assert task.default_batch_size == (32 if name == "memorization_5bit" else 100)
    assert task.lengths == expected_length_range(name, T)
    b = task.sample(7, generator=gen(1))
    lo, hi = task.lengths
    assert lo <= b.length <= hi and b.batch_size == 7
    assert b.inputs.shape == (b.length, 7, in_dim) and b.inputs.dtype == torch.float32
    if name in ("random_permutation",) or name in MEMO:
        assert b.targets.shape == (b.length, 7) and b.targets.dtype == torch.long
    else:
        assert b.targets.shape == (7,)
    assert 0 <= task.chance_wrong <= 1 and task.chance_loss > 0


# --------------------------------------------------------- positions and targets
@pytest.mark.parametrize("name", MARKER + ("addition_variable",))
def test_marker_problem_positions_values_targets(name):
    T = 30 if name != "addition_variable" else 100
    task = tasks.get(name, T)
    g = gen(3)
    seen_L = set()
    for _ in range(40):
        b = task.sample(1500, generator=g)
        L = b.length
        seen_L.add(L)
        pos = marker_positions(b.inputs)
        assert torch.equal(pos, b.positions)
        I, J = pos[:, 0], pos[:, 1]
        a, h = L // 10, L // 2
        # inside the spec's ranges, and (with 1500 draws) every position occurs
        assert set(I.tolist()) == set(range(0, a))
        assert set(J.tolist()) == set(range(a, h))
        v = b.inputs[..., 0]
        if name == "xor":
            assert set(v.unique().tolist()) == {0.0, 1.0}
        else:
            assert v.min() >= 0 and v.max() <= 1 and v.std() > 0.25
        assert set(b.inputs[..., 1].unique().tolist()) == {0.0, 1.0}
        assert torch.equal(b.targets, oracle_targets(name, b.inputs))
    lo, hi = expected_length_range(name, T)
    # one L per minibatch: the 40 draws must stay in range and cover most of it
    assert seen_L <= set(range(lo, hi + 1))
    assert len(seen_L) >= min(hi - lo + 1, 20)


def test_marker_lengths_cover_range_at_T100():
    task = tasks.get("addition", 100)
    g = gen(0)
    seen = {task.sample(1, generator=g).length for _ in range(300)}
    assert seen == set(range(100, 110))


def test_target_values_addition_mult():
    b = tasks.get("multiplication", 30).sample(2000, generator=gen(2))
    assert b.targets.min() >= 0 and b.targets.max() <= 1
    assert abs(b.targets.mean().item() - 0.25) < 0.02
    b = tasks.get("addition", 30).sample(2000, generator=gen(2))
    assert abs(b.targets.mean().item() - 0.5) < 0.02


@pytest.mark.parametrize("name", list(TEMPORAL))
@pytest.mark.parametrize("T", [30, 50])
def test_temporal_order_positions_and_targets(name, T):
    bits = TEMPORAL[name]
    task = tasks.get(name, T)
    b = task.sample(3000, generator=gen(4))
    assert b.length == T
    assert torch.all(b.inputs.sum(-1) == 1)  # one-hot
    ids = b.inputs.argmax(-1)
    fr = [(0.1, 0.2), (0.5, 0.6)] if bits == 2 else [(0.1, 0.2), (0.3, 0.4), (0.6, 0.7)]
    special = ids < 2
    assert torch.all(special.sum(0) == bits)
    pos = torch.nonzero(special.T)[:, 1].reshape(-1, bits)
    assert torch.equal(pos, b.positions)
    for k, (a, c) in enumerate(fr):
        lo, hi = math.floor(round(a * T, 9)), math.floor(round(c * T, 9)) - 1
        assert set(pos[:, k].tolist()) == set(range(lo, hi + 1))
    distract = ids[~special]
    assert set(distract.unique().tolist()) == {2, 3, 4, 5}
    assert torch.equal(b.targets, oracle_targets(name, b.inputs))
    counts = torch.bincount(b.targets, minlength=2**bits).float() / 3000
    assert torch.all((counts - 1 / 2**bits).abs() < 0.04)


def test_random_permutation_layout_and_targets():
    T = 30
    task = tasks.get("random_permutation", T)
    b = task.sample(2000, generator=gen(5))
    assert b.positions is None and b.length == T
    assert torch.all(b.inputs.sum(-1) == 1)
    ids = b.inputs.argmax(-1)
    assert set(ids[0].unique().tolist()) == {0, 1}
    assert set(ids[1:].unique().tolist()) == set(range(2, 100))
    assert torch.equal(b.targets[:-1], ids[1:])
    assert torch.equal(b.targets[-1], ids[0])
    assert torch.equal(b.targets, oracle_targets("random_permutation", b.inputs))


@pytest.mark.parametrize("name", list(MEMO))
def test_memorization_layout_and_targets(name):
    n, k = MEMO[name]
    T = 30
    task = tasks.get(name, T)
    b = task.sample(500, generator=gen(6))
    L = T + 2 * n
    assert b.length == L and torch.all(b.inputs.sum(-1) == 1)
    ids = b.inputs.argmax(-1)
    blank, trigger = k, k + 1
    assert set(ids[:n].unique().tolist()) == set(range(k))
    assert torch.all(ids[n:T + n] == blank)
    assert torch.all(ids[T + n] == trigger)
    assert torch.all(ids[T + n + 1:] == blank)
    assert torch.all(b.targets[:T + n] == blank)
    assert torch.equal(b.targets[T + n:], ids[:n])
    assert torch.equal(b.targets, oracle_targets(name, b.inputs))


def test_memorization_5bit_minibatch_enumerates_all_32():
    task = tasks.get("memorization_5bit", 30)
    assert task.n_distinct == 32
    for B, reps in ((32, 1), (64, 2)):
        b = task.sample(B, generator=gen(7))
        data = b.inputs.argmax(-1)[:5].T  # (B, 5)
        uniq, counts = torch.unique(data, dim=0, return_counts=True)
        assert len(uniq) == 32 and torch.all(counts == reps)
    # other sizes are i.i.d. (duplicates in 40 draws from 32 are certain)
    data = task.sample(40, generator=gen(7)).inputs.argmax(-1)[:5].T
    assert len(torch.unique(data, dim=0)) < 40


# --------------------------------------------------------------- loss and wrong
@pytest.mark.parametrize("name", tasks.NAMES)
def test_perfect_predictor_zero_wrong(name):
    task = tasks.get(name, 30)
    b = task.sample(300, generator=gen(8))
    out = perfect_outputs(name, task, b.inputs)
    assert not task.wrong(out, b).any()
    assert task.wrong(out, b).dtype == torch.bool and task.wrong(out, b).shape == (300,)
    assert task.loss(out, b).item() < 1e-6
    assert task.loss(out, b).dim() == 0


@pytest.mark.parametrize("name", MARKER + tuple(TEMPORAL))
def test_last_step_only_scored(name):
    task = tasks.get(name, 30)
    b = task.sample(200, generator=gen(9))
    out = torch.randn(b.length, 200, task.output_dim, generator=gen(10))
    loss, wrong = task.loss(out, b), task.wrong(out, b)
    out2 = out.clone()
    out2[:-1] = torch.randn(b.length - 1, 200, task.output_dim, generator=gen(11))
    assert torch.equal(task.loss(out2, b), loss)
    assert torch.equal(task.wrong(out2, b), wrong)
    out3 = out.clone()
    out3[-1] += 1.0 if task.output_dim == 1 else torch.randn(200, task.output_dim)
    assert not torch.equal(task.loss(out3, b), loss)


def test_random_permutation_loss_every_step_wrong_last_step():
    task = tasks.get("random_permutation", 30)
    b = task.sample(200, generator=gen(12))
    out = perfect_outputs("random_permutation", task, b.inputs)
    out2 = out.clone()
    out2[5] = 0.0  # ruin one middle step
    assert task.loss(out2, b) > task.loss(out, b) + 0.05
    assert not task.wrong(out2, b).any()  # wrong only looks at the last step
    out3 = out.clone()
    out3[-1] = out3[-1].roll(1, dims=-1)
    assert task.wrong(out3, b).all()
    # loss is the mean of per-step cross-entropies
    ref = torch.stack([F.cross_entropy(out2[t], b.targets[t]) for t in range(b.length)]).mean()
    assert torch.allclose(task.loss(out2, b), ref)


@pytest.mark.parametrize("name", list(MEMO))
def test_memorization_every_step_scored(name):
    n, k = MEMO[name]
    task = tasks.get(name, 30)
    b = task.sample(100, generator=gen(13))
    out = perfect_outputs(name, task, b.inputs)
    for t in (0, 3, b.length - 1):  # a data step, a blank step, an answer step
        o = out.clone()
        o[t, 0] = o[t, 0].roll(1)  # wrong argmax for sequence 0 at step t
        assert task.loss(o, b) > task.loss(out, b)
        assert task.wrong(o, b).tolist() == [True] + [False] * 99


def test_mse_and_bce_definitions():
    task = tasks.get("addition", 30)
    b = task.sample(50, generator=gen(14))
    out = torch.zeros(b.length, 50, 1)
    out[-1, :, 0] = b.targets + 0.039
    assert not task.wrong(out, b).any()
    assert torch.allclose(task.loss(out, b), torch.tensor(0.039**2))
    out[-1, :, 0] = b.targets - 0.0401
    assert task.wrong(out, b).all()
    xt = tasks.get("xor", 30)
    b = xt.sample(50, generator=gen(14))
    out = torch.randn(b.length, 50, 1, generator=gen(15))
    ref = F.binary_cross_entropy(torch.sigmoid(out[-1, :, 0]), b.targets)
    assert torch.allclose(xt.loss(out, b), ref, atol=1e-5)
    assert torch.equal(xt.wrong(out, b), (torch.sigmoid(out[-1, :, 0]) >= 0.5) != (b.targets == 1))
    # p = 0.5 exactly (logit 0) predicts bit 1
    assert torch.equal(xt.wrong(torch.zeros_like(out), b), b.targets == 0)


# ------------------------------------------------------------------ chance level
SPEC_CHANCE = {  # name -> (wrong rate, tolerance, loss or None)
    "addition": (0.85, 0.02, 1 / 24),
    "multiplication": (None, 0.02, 7 / 144),
    "xor": (0.5, 0.02, math.log(2)),
    "temporal_order_2bit": (0.75, 0.02, math.log(4)),
    "temporal_order_3bit": (0.875, 0.02, math.log(8)),
    "random_permutation": (0.5, 0.02, None),
    "memorization_5bit": (31 / 32, 0.02, None),
    "memorization_20bit": (1.0, 0.001, None),
}


@pytest.mark.parametrize("name", tasks.NAMES)
def test_chance_predictor(name):
    task = tasks.get(name, 30)
    b = task.sample(12000 if task.input_dim < 100 else 4000, generator=gen(16))
    out = chance_outputs(name, task, b)
    rate = task.wrong(out, b).float().mean().item()
    loss = task.loss(out, b).item()
    spec_rate, tol, spec_loss = SPEC_CHANCE[name]
    assert abs(rate - task.chance_wrong) < tol
    if spec_rate is not None:
        assert abs(task.chance_wrong - spec_rate) < 0.01
    assert abs(loss - task.chance_loss) < 0.05 * task.chance_loss
    if spec_loss is not None:
        assert abs(task.chance_loss - spec_loss) < 1e-9
    if name == "random_permutation":  # uniform logits: ln 100, still 50% wrong
        u = torch.zeros_like(out)
        assert abs(task.loss(u, b).item() - math.log(100)) < 1e-5
        assert abs(task.wrong(u, b).float().mean().item() - 0.5) < 0.03


# ------------------------------------------------------------ seeds and devices
@pytest.mark.parametrize("name", tasks.ALL_NAMES)
def test_seeding(name):
    task = tasks.get(name, 30 if name != "addition_variable" else 100)
    b1 = task.sample(64, generator=gen(0))
    b2 = task.sample(64, generator=gen(0))
    b3 = task.sample(64, generator=gen(1))
    assert torch.equal(b1.inputs, b2.inputs) and torch.equal(b1.targets, b2.targets)
    if b1.positions is not None:
        assert torch.equal(b1.positions, b2.positions)
    assert b1.inputs.shape != b3.inputs.shape or not torch.equal(b1.inputs, b3.inputs)
    torch.manual_seed(5)
    a = task.sample(8)
    torch.manual_seed(5)
    assert torch.equal(a.inputs, task.sample(8).inputs)  # global RNG when generator=None


def test_dtype_and_batch_to():
    task = tasks.get("addition", 30)
    b64 = task.sample(16, generator=gen(0), dtype=torch.float64)
    b32 = task.sample(16, generator=gen(0))
    assert b64.inputs.dtype == torch.float64 and b64.targets.dtype == torch.float64
    assert torch.equal(b64.inputs.float(), b32.inputs)
    c = b64.to("cpu", dtype=torch.float32)
    assert c.inputs.dtype == torch.float32 and c.positions.dtype == torch.long


# -------------------------------------------------------------------- test set
@pytest.mark.parametrize("name", tasks.NAMES)
def test_test_set_fixed_and_distinct(name):
    T = 30
    task = tasks.get(name, T)
    tb = task.test_batches()
    assert sum(b.batch_size for b in tb) == 10000 and len(tb) == 10
    assert task.test_batches() is tb  # cached
    assert task.test_set() is tb
    fresh = tasks.get(name, T).test_batches(n=2000, cache=False)
    for x, y in zip(fresh, tb[:2]):  # same seed on a new instance, prefix-consistent
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
    train = task.sample(1000, generator=gen(0))
    first = tb[0]
    assert first.inputs.shape != train.inputs.shape or not torch.equal(first.inputs, train.inputs)
    assert task.test_seed > 10**12
    other = tasks.get(name, 50)
    assert other.test_seed != task.test_seed
    # the test chunks obey the same definitions
    for b in tb[:2]:
        assert torch.equal(b.targets, oracle_targets(name, b.inputs))
        assert not task.wrong(perfect_outputs(name, task, b.inputs), b).any()


def test_test_seeds_all_distinct():
    seeds = {tasks.test_seed(n, T) for n in tasks.NAMES for T in (30, 50, 100, 200)}
    assert len(seeds) == 32
    assert tasks.test_seed("addition", 100) == tasks.test_seed("addition", 100)


def test_test_set_variable_lengths_and_uneven_chunks():
    task = tasks.get("addition", 100)
    tb = task.test_batches(n=2500, chunk=1000)
    assert [b.batch_size for b in tb] == [1000, 1000, 500]
    tb = task.test_batches()
    assert {b.length for b in tb} <= set(range(100, 110)) and len({b.length for b in tb}) > 1


def test_addition_variable_experiment1():
    task = tasks.get("addition_variable", 100)
    g = gen(0)
    seen = {task.sample(1, generator=g).length for _ in range(800)}
    assert seen == set(range(50, 101))
    add = tasks.get("addition", 100)
    assert task.test_seed == add.test_seed
    for x, y in zip(task.test_batches(n=3000), add.test_batches(n=3000)):
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
        assert 100 <= x.length <= 109


def test_evaluate():
    task = tasks.get("temporal_order_2bit", 30)
    res = task.evaluate(lambda u: perfect_outputs("temporal_order_2bit", task, u), n=3000)
    assert res.error_rate == 0.0 and res.n == 3000 and res.loss < 1e-6
    res = task.evaluate(lambda u: torch.zeros(u.shape[0], u.shape[1], 4), n=3000)
    assert abs(res.error_rate - 0.75) < 0.03 and abs(res.loss - math.log(4)) < 1e-5


# ---------------------------------------------------------------------- errors
def test_unknown_name():
    with pytest.raises(ValueError, match=r"unknown task 'adition'.*valid names: addition"):
        tasks.get("adition", 100)


@pytest.mark.parametrize(
    "name,bad,good",
    [
        ("addition", 9, 10),
        ("multiplication", 9, 10),
        ("xor", 9, 10),
        ("addition_variable", 18, 19),
        ("temporal_order_2bit", 8, 9),
        ("temporal_order_3bit", 7, 8),
        ("random_permutation", 1, 2),
    ],
)
def test_T_too_short(name, bad, good):
    with pytest.raises(ValueError, match="too short"):
        tasks.get(name, bad)
    task = tasks.get(name, good)  # the smallest valid T works end to end
    b = task.sample(50, generator=gen(0))
    assert not task.wrong(perfect_outputs(name, task, b.inputs), b).any()


@pytest.mark.parametrize("T", [0, -3, 2.5, True, "100"])
def test_bad_T_type(T):
    with pytest.raises(ValueError, match="T must be a positive integer"):
        tasks.get("addition", T)


@pytest.mark.parametrize("bs", [0, -1, 2.0])
def test_bad_batch_size(bs):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        tasks.get("xor", 30).sample(bs)


def test_bad_test_set_args():
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        tasks.get("xor", 30).test_batches(chunk=0)


@pytest.mark.parametrize("name", tasks.NAMES)
def test_bad_output_shape(name):
    task = tasks.get(name, 30)
    b = task.sample(4, generator=gen(0))
    for shape in [
        (b.length, 4, task.output_dim + 1),
        (b.length - 1, 4, task.output_dim),
        (b.length, 4),
        (4, task.output_dim),
    ]:
        out = torch.zeros(shape)
        with pytest.raises(ValueError, match=r"outputs must have shape \(L, B, output_dim\)"):
            task.loss(out, b)
        with pytest.raises(ValueError, match=r"outputs must have shape"):
            task.wrong(out, b)
