"""Bad input and faults (issue 25): each one a clear error at the first moment it can be known,
or a documented safe behaviour; nothing silently wrong.  Case numbers are the issue's."""
from __future__ import annotations

import gzip
import math
import struct
import time
import warnings
from pathlib import Path

import pytest
import torch

from psgdlib import PSGD, pairs, tasks
from psgdlib import data as D
from psgdlib.models import LSTM, RNN, RNN2D
from psgdlib.optim import NonFiniteStepError
from psgdlib.preconditioners import Dense, Diag, Kron

NAN, INF = float("nan"), float("inf")
PRECONDITIONERS = ("kron", "dense", "diag")
PAIRS = ("hvp", "finite_difference", "whitening", "whitening/no closure")


# --------------------------------------------------------------------------- helpers
def _problem(seed: int = 0):
    """A (3, 2) matrix (Kron), a (4,) vector (Dense under kron) and a smooth loss of both."""
    gen = torch.Generator().manual_seed(seed)
    W = torch.nn.Parameter(torch.randn(3, 2, generator=gen, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(4, generator=gen, dtype=torch.float64))
    A = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    return W, b, lambda: (torch.tanh(W @ A).sum(0) * b).pow(2).sum() + (W ** 4).sum()


def _snapshot(opt: PSGD) -> list[torch.Tensor]:
    """Clones of every parameter and every tensor in the optimizer state but the skip counters."""
    out = []
    for g in opt.param_groups:
        for p in g["params"]:
            out.append(p.detach().clone())
            st = opt.state.get(p, {})
            out += [t.clone() for k, t in sorted(st.get("precond", {}).items())
                    if torch.is_tensor(t) and k != "skipped"]
            if "momentum_buffer" in st:
                out.append(st["momentum_buffer"].clone())
    return out


def _step(opt: PSGD, closure, params, how: str):
    if how == "whitening/no closure":
        for p in params:
            p.grad = None
        closure().backward()
        return opt.step()
    return opt.step(closure)


def _bad(closure, kind: str):
    """``closure`` made non-finite: a NaN or inf loss, or one NaN gradient entry (finite loss)."""
    if kind == "nan loss":
        return lambda: closure() * NAN
    if kind == "inf loss":
        return lambda: closure() + INF
    # d sqrt(x)/dx = inf at 0, times d(w * 0)/dw = 0: one NaN gradient entry, loss unchanged
    return lambda: closure() + torch.sqrt(_bad.W.reshape(-1)[0] * 0)


# --------------------------------------------------------------- 1. non-finite steps
@pytest.mark.parametrize("kind", ["nan loss", "inf loss", "nan gradient entry"])
@pytest.mark.parametrize("how", PAIRS)
@pytest.mark.parametrize("preconditioner", PRECONDITIONERS)
def test_nonfinite_step_changes_no_parameter_and_no_state(preconditioner, how, kind):
    W, b, closure = _problem()
    _bad.W = W
    opt = PSGD([W, b], lr=0.1, preconditioner=preconditioner, pairs=how.split("/")[0],
               momentum=0.5, clip_norm=10.0, seed=0)
    for _ in range(3):
        _step(opt, closure, [W, b], how)
    before = _snapshot(opt)
    if kind == "nan gradient entry":
        assert math.isfinite(float(_bad(closure, kind)().detach()))
    if how == "whitening/no closure" and kind == "inf loss":
        _step(opt, _bad(closure, kind), [W, b], how)  # d(loss + inf) = d loss: finite gradients,
        assert opt.nonfinite_steps == 0               # and without a closure PSGD sees only those
        return
    with pytest.warns(RuntimeWarning, match="1 step.*non-finite"):
        loss = _step(opt, _bad(closure, kind), [W, b], how)
    if loss is not None and kind != "nan gradient entry":
        assert not torch.isfinite(loss)
    after = _snapshot(opt)
    assert len(after) == len(before)
    assert all(torch.equal(x, y) for x, y in zip(before, after))
    assert opt.nonfinite_steps == 1 and opt.nonfinite_steps_tensor.dtype == torch.int64
    _step(opt, closure, [W, b], how)                  # a finite step moves again
    assert not torch.equal(W.detach(), before[0])
    assert torch.isfinite(W).all() and opt.nonfinite_steps == 1


@pytest.mark.parametrize("preconditioner", PRECONDITIONERS)
def test_nonfinite_first_step_leaves_the_initial_state(preconditioner):
    W, b, closure = _problem()
    W0, b0 = W.detach().clone(), b.detach().clone()
    opt = PSGD([W, b], preconditioner=preconditioner, momentum=0.9, seed=0)
    with pytest.warns(RuntimeWarning):
        opt.step(lambda: closure() * NAN)
    assert torch.equal(W0, W.detach()) and torch.equal(b0, b.detach())
    for pc in opt.preconditioners():
        for name, t in pc._tensors().items():
            if name == "Q":
                assert torch.equal(t, torch.eye(t.shape[0], dtype=t.dtype)), name
            elif name == "q":
                assert torch.equal(t, torch.ones_like(t))
            else:
                assert torch.equal(t, torch.eye(t.shape[0], dtype=t.dtype)), name


def test_nonfinite_warning_is_rate_limited_and_the_count_is_saved():
    W, b, closure = _problem()
    opt = PSGD([W, b], seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            opt.step(lambda: closure() * NAN)
        opt.step(closure)
    texts = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert [t.split(" step")[0] for t in texts] == ["PSGD: 1", "PSGD: 2", "PSGD: 4"]
    assert all(Path(w.filename).name == "test_bad_input.py" for w in caught)  # points at the caller
    assert opt.nonfinite_steps == 5
    W2, b2, _ = _problem()
    opt2 = PSGD([W2, b2], seed=0)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.nonfinite_steps == 5


@pytest.mark.parametrize("preconditioner", PRECONDITIONERS)
def test_nonfinite_raise_mode_raises_before_changing_anything(preconditioner):
    W, b, closure = _problem()
    _bad.W = W
    opt = PSGD([W, b], preconditioner=preconditioner, nonfinite="raise", seed=0)
    opt.step(closure)
    before = _snapshot(opt)
    with pytest.raises(NonFiniteStepError, match=r"non-finite.*parameter 0 \(shape \(3, 2\)\)"):
        opt.step(_bad(closure, "nan gradient entry"))
    with pytest.raises(FloatingPointError, match="loss inf"):
        opt.step(_bad(closure, "inf loss"))
    assert all(torch.equal(x, y) for x, y in zip(before, _snapshot(opt)))
    assert opt.nonfinite_steps == 0
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        PSGD([W], nonfinite="ignore")


_SYNCS = ("item", "tolist", "cpu", "__bool__", "__float__", "__int__", "__index__")


@pytest.mark.parametrize("how", PAIRS)
@pytest.mark.parametrize("preconditioner", PRECONDITIONERS)
def test_step_issues_no_host_sync(preconditioner, how, monkeypatch):
    """Every way a tensor's value reaches Python raises inside step() (finite inputs)."""
    W, b, closure = _problem()
    opt = PSGD([W, b], preconditioner=preconditioner, pairs=how.split("/")[0], momentum=0.5,
               clip_norm=1.0, seed=0)
    _step(opt, closure, [W, b], how)                  # the first step builds the state

    def sync(*args, **kwargs):
        raise AssertionError("host sync inside PSGD.step")

    with monkeypatch.context() as m:
        for name in _SYNCS:
            m.setattr(torch.Tensor, name, sync)
        if how == "whitening/no closure":
            for p in (W, b):
                p.grad = torch.ones_like(p)
            opt.step()
        else:
            opt.step(closure)
            with pytest.warns(RuntimeWarning):        # the masked path too
                opt.step(lambda: closure() * NAN)
    assert opt.nonfinite_steps == int(how != "whitening/no closure")


# ---------------------------------------------------------------- 4. group options
@pytest.mark.parametrize("option,value", [("lr", NAN), ("lr", -0.1), ("lr", INF), ("precond_lr", NAN),
                                          ("momentum", NAN), ("clip_norm", NAN), ("clip_norm", -1.0),
                                          ("precond_init_scale", NAN), ("max_kron_dim", 2.5)])
def test_bad_group_option_is_refused_in_add_param_group(option, value):
    W, b, _ = _problem()
    with pytest.raises(ValueError, match=rf"param group 0: {option} .*got {value}"):
        PSGD([{"params": [W], option: value}])
    opt = PSGD([W])
    with pytest.raises(ValueError, match=rf"param group 1: {option} .*got {value}"):
        opt.add_param_group({"params": [b], option: value})
    assert len(opt.param_groups) == 1                 # the bad group was not kept


def test_lr_mutated_to_nan_is_refused_at_step():
    W, b, closure = _problem()
    opt = PSGD([W, b], seed=0)
    opt.param_groups[0]["lr"] = NAN
    before = W.detach().clone()
    with pytest.raises(ValueError, match="param group 0: lr must be a positive number, got nan"):
        opt.step(closure)
    assert torch.equal(before, W.detach())


# ------------------------------------------------ 5, 11, 13: parameters PSGD refuses
@pytest.mark.parametrize("param,match", [
    (torch.ones(2, 3, dtype=torch.complex64), r"parameter 0 \(shape \(2, 3\), dtype torch.complex64\): complex"),
    (torch.ones(4).to_sparse(), r"parameter 0 \(shape \(4,\).*sparse parameters"),
    (torch.ones(0, 3), r"parameter 0 \(shape \(0, 3\).*no elements"),
])
def test_unsupported_parameters_are_refused_at_construction(param, match):
    with pytest.raises(ValueError, match=match):
        PSGD([torch.nn.Parameter(param)])


def test_sparse_gradient_is_refused():
    emb = torch.nn.Embedding(5, 3, sparse=True)
    opt = PSGD(emb.parameters(), pairs="whitening", seed=0)
    with pytest.raises(ValueError, match=r"parameter 0 \(shape \(5, 3\)\): sparse gradients"):
        opt.step(lambda: emb(torch.tensor([1, 2])).pow(2).sum())


def test_dense_preconditioner_too_big_is_refused_at_construction():
    big = torch.nn.Parameter(torch.empty(5000, 5000, device="meta"))
    with pytest.raises(ValueError, match=r"n = 25000000 .*6\.25e\+14 elements \(2\.5e\+15 bytes.*'kron'"):
        PSGD([big], preconditioner="dense")
    PSGD([big], preconditioner="kron")                # Diag fallback: accepted
    small = torch.nn.Parameter(torch.ones(11))
    with pytest.raises(ValueError, match="max_dense_dim=10"):
        PSGD([small], preconditioner="dense", max_dense_dim=10)
    with pytest.raises(ValueError, match=r"over parameter 0 has n = 11"):
        PSGD([small], preconditioner="kron", max_dense_dim=10)   # 1-D parameters get a Dense


# ------------------------------------------------------- 6. whitening and .grad
def test_whitening_without_closure_names_a_parameter_without_grad():
    W, b, closure = _problem()
    opt = PSGD([W, b], pairs="whitening", seed=0)
    W.grad = torch.ones_like(W)
    with pytest.raises(ValueError, match=r"parameter 1 \(shape \(4,\)\) has no \.grad"):
        opt.step()
    assert opt.preconditioners() == []                # nothing was built or changed


# ------------------------------------------------------------------ 8. task size
@pytest.mark.parametrize("T", [10**12, 10**9, tasks.MAX_T + 1])
def test_huge_T_is_refused_at_once(T):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=rf"T={T} is above the limit psgdlib.tasks.MAX_T={tasks.MAX_T}"):
        tasks.get("addition", T)
    assert time.perf_counter() - t0 < 1.0


def test_oversized_minibatch_or_test_set_is_refused_before_allocating():
    task = tasks.get("random_permutation", tasks.MAX_T)
    with pytest.raises(ValueError, match=r"a test chunk of 1000 sequences .*GiB.*MAX_BATCH_BYTES"):
        task.test_batches()
    with pytest.raises(ValueError, match=r"a minibatch of 10000 sequences of length up to 10000 needs about 74.5 GiB"):
        tasks.get("random_permutation", 10_000).sample(10_000)
    assert tasks.get("addition", 200).sample(100).inputs.shape[1] == 100   # the paper's sizes are fine


# ---------------------------------------------------------- 12. truncated MNIST
def _idx(arr: torch.Tensor) -> bytes:
    return struct.pack(">HBB", 0, 8, arr.dim()) + struct.pack(f">{arr.dim()}I", *arr.shape) \
        + arr.numpy().tobytes()


def _write_gz(raw: Path) -> None:
    raw.mkdir(parents=True)
    for name in D.MNIST_FILES:
        n = 6 if name.startswith("train") else 4
        arr = (torch.zeros(n, 28, 28) if "images" in name else torch.zeros(n)).to(torch.uint8)
        with gzip.open(raw / f"{name}.gz", "wb") as f:
            f.write(_idx(arr))


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("victim", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_truncated_or_corrupt_gz_names_the_file_and_leaves_nothing_behind(tmp_path, victim, damage):
    raw = tmp_path / "MNIST" / "raw"
    _write_gz(raw)
    gz = raw / f"{victim}.gz"
    blob = gz.read_bytes()
    gz.write_bytes(blob[: len(blob) // 2] if damage == "truncated" else b"not a gzip file at all")
    for _ in range(2):                                # the same clear error again, not a stale file
        with pytest.raises(ValueError, match=rf"{victim}\.gz: truncated or corrupt gzip file"):
            D.load_mnist(tmp_path, download=False)
        assert not list(raw.glob("*.tmp-*"))
        assert not (raw / victim).exists()
    with pytest.raises(ValueError, match=rf"{victim}\.gz: truncated or corrupt"):
        D.read_idx(gz)                                # the read-only-folder path reads it directly
    gz.write_bytes(blob)                              # repaired: loads
    images, labels = D.load_mnist(tmp_path, train=False, download=False)
    assert images.shape == (4, 1, 28, 28) and labels.shape == (4,)


# ------------------------------------------------------------- 13. state_dict shapes
@pytest.mark.parametrize("preconditioner", PRECONDITIONERS)
def test_state_dict_of_another_shape_fails_in_load_state_dict(preconditioner):
    W, b, closure = _problem()
    opt = PSGD([W, b], preconditioner=preconditioner, seed=0)
    opt.step(closure)
    W2 = torch.nn.Parameter(torch.zeros(4, 2, dtype=torch.float64))
    opt2 = PSGD([W2, b], preconditioner=preconditioner, seed=0)
    want = {"kron": r"\(4, 4\).*\(3, 3\)", "dense": r"\(12, 12\).*\(10, 10\)", "diag": r"\(8,\).*\(6,\)"}
    with pytest.raises(ValueError, match=rf"parameter 0 \(shape \(4, 2\)\) needs .*{want[preconditioner]}"):
        opt2.load_state_dict(opt.state_dict())
    assert len(opt2.state) == 0                       # nothing was loaded


def test_momentum_buffer_of_another_shape_fails_in_load_state_dict():
    W, b, closure = _problem()
    opt = PSGD([W, b], momentum=0.5, preconditioner="diag", seed=0)
    opt.step(closure)
    sd = opt.state_dict()
    sd["state"][1]["momentum_buffer"] = torch.zeros(5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"parameter 1 \(shape \(4,\)\) has a saved momentum buffer of shape \(5,\)"):
        PSGD([W, b], momentum=0.5, preconditioner="diag").load_state_dict(sd)


# ------------------------------------------------------------ 13. closures
@pytest.mark.parametrize("preconditioner", PRECONDITIONERS)
@pytest.mark.parametrize("pair_source", ["finite_difference", "whitening"])
@pytest.mark.parametrize("zero_grad", [True, False])
def test_standard_torch_closure_is_accepted_and_gives_the_same_steps(pair_source, preconditioner, zero_grad):
    def run(style):
        W, b, closure = _problem()
        opt = PSGD([W, b], preconditioner=preconditioner, pairs=pair_source, seed=0)

        def torch_closure():
            if zero_grad:
                opt.zero_grad()
            loss = closure()
            loss.backward()
            return loss

        for _ in range(4):
            opt.step(torch_closure if style == "torch" else closure)
        return _snapshot(opt) + [W.grad.clone(), b.grad.clone()]

    assert all(torch.equal(x, y) for x, y in zip(run("psgd"), run("torch")))


def test_hvp_closure_that_calls_backward_says_what_to_write():
    W, b, closure = _problem()
    opt = PSGD([W, b], pairs="hvp", seed=0)

    def torch_closure():
        opt.zero_grad()
        loss = closure()
        loss.backward()
        return loss

    before = W.detach().clone()
    with pytest.raises(ValueError, match=r"closure must only return the loss: write `def closure\(\): return"):
        opt.step(torch_closure)
    assert torch.equal(before, W.detach())
    with pytest.raises(ValueError, match="closure must return the scalar loss as a tensor.*float"):
        opt.step(lambda: 1.0)
    with pytest.raises(ValueError, match="does not require grad"):
        opt.step(lambda: closure().detach())


@pytest.mark.parametrize("preconditioner", PRECONDITIONERS)
def test_hvp_with_a_linear_and_an_unused_parameter(preconditioner):
    """Their Hessian blocks are zero: the step works, and their h are zeros."""
    W, b, closure = _problem()
    lin = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    unused = torch.nn.Parameter(torch.ones(2, 2, dtype=torch.float64))
    loss = lambda: closure() + 0.5 * lin.sum()
    opt = PSGD([W, b, lin, unused], lr=0.1, preconditioner=preconditioner, pairs="hvp", seed=0)
    for _ in range(3):
        opt.step(loss)
    assert all(torch.isfinite(p).all() for p in (W, b, lin)) and opt.num_skipped == 0
    if preconditioner != "dense":                     # a dense P mixes in the other gradients
        assert torch.equal(unused.detach(), torch.ones(2, 2, dtype=torch.float64))
    assert not torch.equal(lin.detach(), torch.ones(3, dtype=torch.float64))
    params = [W, b, lin, unused]
    with torch.enable_grad():
        g = torch.autograd.grad(loss(), params, create_graph=True, allow_unused=True)
    g = [torch.zeros_like(p) if x is None else x for p, x in zip(params, g)]
    _, hs = pairs.hvp(params, g, torch.Generator().manual_seed(0))
    assert torch.equal(hs[2], torch.zeros(3, dtype=torch.float64)) and torch.equal(hs[3], torch.zeros(2, 2, dtype=torch.float64))
    assert hs[0].abs().sum() > 0
    with pytest.raises(ValueError, match="create_graph"):   # no gradient requires grad: forgotten
        pairs.hvp([lin], [torch.ones(3, dtype=torch.float64)])
    _, h = pairs.hvp([lin], [torch.ones(3, dtype=torch.float64)], allow_constant=True)
    assert torch.equal(h[0], torch.zeros(3, dtype=torch.float64))


# ----------------------------------------------------------------- 13. models
@pytest.mark.parametrize("make", [lambda: RNN(2, 4, 1), lambda: LSTM(2, 4, 1),
                                  lambda: RNN(2, 4, 1, impl="loop"), lambda: RNN(2, 4, 1, impl="fused")])
def test_rnn_input_of_length_zero_is_refused(make):
    with pytest.raises(ValueError, match=r"no time steps \(L = 0, shape \(0, 3, 2\)\)"):
        make()(torch.zeros(0, 3, 2))


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_dim=2, hidden_dim=2.7, output_dim=1), "hidden_dim must be an integer >= 1, got 2.7"),
    (dict(input_dim=True, hidden_dim=3, output_dim=1), "input_dim must be an integer >= 1, got True"),
    (dict(input_dim=2, hidden_dim=3, output_dim=0), "output_dim must be an integer >= 1, got 0"),
    (dict(input_dim=2, hidden_dim="8", output_dim=1), "hidden_dim must be an integer >= 1, got '8'"),
])
def test_rnn_dimensions_must_be_integers(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RNN(**kwargs)
    assert RNN(2, 3.0, 1).hidden_dim == 3             # an integral float is that integer


def test_rnn2d_and_preconditioner_dimensions_must_be_integers():
    with pytest.raises(ValueError, match=r"sizes\[1\] must be an integer >= 1, got 2.5"):
        RNN2D(sizes=(4, 2.5))
    with pytest.raises(ValueError, match="grid must be an integer >= 1, got 0"):
        RNN2D(sizes=(4,), grid=0)
    for make, match in ((lambda: Dense(2.7), "integer n >= 1, got 2.7"),
                        (lambda: Kron(3, 1.5), "integer n >= 1, got 1.5"),
                        (lambda: Diag(0), "integer n >= 1, got 0")):
        with pytest.raises(ValueError, match=match):
            make()
