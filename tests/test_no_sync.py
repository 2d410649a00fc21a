"""The GPU path (issue 24, item 3): ``PSGD.step`` reads no value back to the host.

No GPU here, so the step runs on the CPU under two guards that fail on every way a value
can leave the device: a dispatch mode that refuses the aten ops which synchronise on CUDA
(``_local_scalar_dense`` behind ``.item()``/``bool()``/``float()``, ``nonzero``, boolean
indexing, ``unique``, ``equal``, ...), and patches of the ``Tensor`` methods that copy to
the host (``.cpu()``, ``.to("cpu")``, ``.tolist()``).  ``benchmarks/gpu_check.py`` checks
the same on CUDA with ``torch.cuda.set_sync_debug_mode("error")``.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from psgdlib import PSGD, tasks
from psgdlib.models import RNN

NAN = float("nan")
aten = torch.ops.aten
# ops whose result size or value the host must read on CUDA
_SYNC_OPS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
             aten.is_nonzero.default, aten.equal.default, aten.allclose.default,
             aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
             aten.nonzero_static.default, aten.repeat_interleave.Tensor}


class HostSync(AssertionError):
    """A step read a tensor's value on the host."""


class _NoSync(TorchDispatchMode):
    """Raise on every op in ``_SYNC_OPS`` and on indexing with a boolean mask; count the others."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _SYNC_OPS:
            raise HostSync(f"host sync inside PSGD.step: {func}")
        if func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
            idx = args[1]
            if any(i is not None and i.dtype == torch.bool for i in idx):
                raise HostSync(f"host sync inside PSGD.step: {func} with a boolean mask")
        self.ops += 1
        return func(*args, **(kwargs or {}))


def _refuse(name: str):
    def f(*args, **kwargs):
        raise HostSync(f"host sync inside PSGD.step: Tensor.{name}")
    return f


def _to_guard(original):
    def to(self, *args, **kwargs):
        dev = kwargs.get("device", args[0] if args else None)
        if isinstance(dev, (str, torch.device)) and torch.device(dev).type == "cpu":
            raise HostSync("host sync inside PSGD.step: Tensor.to('cpu')")
        return original(self, *args, **kwargs)
    return to


def _problem():
    """The RNN of eq. (1) (2-D W1, W2: Kron) and a 1-D output offset (Dense under kron)."""
    task = tasks.get("addition", 12)
    model = RNN(task.input_dim, 6, task.output_dim, dtype=torch.float64,
                generator=torch.Generator().manual_seed(0))
    offset = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    batch = task.sample(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = [model.W1, model.W2, offset]
    return params, lambda: task.loss(model(batch.inputs) + offset, batch)


def _closure(loss, params, style: str):
    if style == "psgd":
        return loss

    def torch_closure():
        for p in params:
            p.grad = None
        out = loss()
        out.backward()
        return out
    return torch_closure


CASES = [(pre, pairs, style) for pre in ("kron", "dense", "diag")
         for pairs, style in (("hvp", "psgd"), ("finite_difference", "psgd"), ("finite_difference", "torch"),
                              ("whitening", "psgd"), ("whitening", "torch"), ("whitening", "none"))]


def _guarded(monkeypatch, fn):
    with monkeypatch.context() as m:
        for name in ("item", "tolist", "cpu", "__bool__", "__float__", "__int__", "__index__"):
            m.setattr(torch.Tensor, name, _refuse(name))
        m.setattr(torch.Tensor, "to", _to_guard(torch.Tensor.to))
        with _NoSync() as mode:
            fn()
    return mode.ops


def _run_step(opt, params, closure, style):
    if style == "none":           # whitening on the caller's .grad fields
        opt.step()
    else:
        opt.step(closure)


@pytest.mark.parametrize("options", [dict(), dict(momentum=0.5, clip_norm=1.0, update_every=2)])
@pytest.mark.parametrize("preconditioner,pairs,style", CASES)
def test_step_reads_nothing_back(preconditioner, pairs, style, options, monkeypatch):
    """Kron/Dense/Diag x every pair source x both closure styles: three steps (one of them
    non-finite, masked on the device) under the guards, and the steps did change the
    parameters and count the non-finite one."""
    params, loss = _problem()
    opt = PSGD(params, preconditioner=preconditioner, pairs=pairs, seed=0, **options)
    closure = _closure(loss, params, style)
    if style == "none":
        loss().backward()
    opt.step(None if style == "none" else closure)            # builds the state
    before = [p.detach().clone() for p in params]

    def steps():
        for k in range(3):
            if style == "none":
                for p in params:              # .grad as a backward() left it (no graph here)
                    p.grad = torch.full_like(p, NAN if k == 1 else 0.1)
                opt.step()
            elif k == 1:
                opt.step(_closure(lambda: loss() * NAN, params, style))
            else:
                opt.step(closure)

    with pytest.warns(RuntimeWarning, match="non-finite"):
        ops = _guarded(monkeypatch, steps)
    assert ops > 50                                            # the guard saw the step's work
    assert any(not torch.equal(b, p) for b, p in zip(before, params))
    assert opt.nonfinite_steps == 1
    assert all(bool(torch.isfinite(p).all()) for p in params)


def test_the_guard_catches_a_sync():
    """The guards are not vacuous: ``nonfinite="raise"`` reads the flag by design (one sync)."""
    params, loss = _problem()
    opt = PSGD(params, preconditioner="kron", pairs="hvp", nonfinite="raise", seed=0)
    opt.step(loss)
    with pytest.raises(HostSync, match="host sync inside PSGD.step"):
        with _NoSync():
            opt.step(loss)
    for bad in (lambda x: x.item(), lambda x: x.to("cpu"), lambda x: x[x > 0], lambda x: torch.nonzero(x)):
        with pytest.raises(HostSync):
            mp = pytest.MonkeyPatch()
            try:
                _guarded(mp, lambda: bad(params[0].detach() + 1))
            finally:
                mp.undo()
