"""Tests of the two-dimensional RNN (psgdlib.models.rnn2d)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from psgdlib.models.rnn2d import ALTERNATE_CYCLE, RNN2D, image_to_patches, resolve_directions

torch.set_num_threads(1)

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int, seed: int = 1, dtype=F64, channel: bool = True) -> torch.Tensor:
    x = torch.rand(b, 1, 28, 28, generator=_gen(seed), dtype=dtype)
    return x if channel else x[:, 0]


def _by_hand(sizes, d0=16, n_classes=10):
    total, d_in = 0, d0
    for d in sizes:
        total += d * (d_in + 2 * d + 1)
        d_in = d
    return total + n_classes * (d_in + 1)


# --------------------------------------------------------------------------------------
# parameters and initialisation


def test_parameter_count_and_shapes():
    m = RNN2D()
    # 16*49 + 32*81 + 48*129 + 64*177 + 80*225 + 10*81
    assert 784 + 2592 + 6192 + 11328 + 18000 + 810 == 39706
    assert _by_hand((16, 32, 48, 64, 80)) == 39706
    assert m.num_parameters() == 39706
    assert sum(p.numel() for p in m.parameters()) == 39706
    shapes = [tuple(w.shape) for w in m.weight_matrices()]
    assert shapes == [(16, 49), (32, 81), (48, 129), (64, 177), (80, 225), (10, 81)]
    assert len(list(m.parameters())) == 6
    assert all(w.dim() == 2 for w in m.weight_matrices())
    assert m.weight_matrices()[-1] is m.W_out
    assert RNN2D(sizes=(4, 6)).num_parameters() == _by_hand((4, 6))


def test_init_orthogonal_recurrent_blocks_zero_bias():
    m = RNN2D(dtype=F64, generator=_gen(0))
    d_in = 16
    for w, d in zip(m.layers, m.sizes):
        eye = torch.eye(d, dtype=F64)
        for blk in (w[:, d_in : d_in + d], w[:, d_in + d : d_in + 2 * d]):
            torch.testing.assert_close(blk @ blk.T, eye, atol=1e-12, rtol=0)
        assert torch.all(w[:, -1] == 0)
        std = w[:, :d_in].std().item()
        assert 0.05 < std < 0.15, std
        d_in = d
    assert torch.all(m.W_out[:, -1] == 0)
    assert 0.05 < m.W_out[:, :-1].std().item() < 0.15


def test_generator_reproducible_and_dtypes():
    a, b = RNN2D(generator=_gen(5)), RNN2D(generator=_gen(5))
    c = RNN2D(generator=_gen(6))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.layers[0], c.layers[0])
    d64 = RNN2D(generator=_gen(5), dtype=F64)
    assert all(p.dtype == F64 for p in d64.parameters())
    assert a.layers[0].dtype == torch.float32
    torch.testing.assert_close(d64.layers[2].float(), a.layers[2], rtol=0, atol=0)
    out = a(_images(3, dtype=torch.float32))
    assert out.shape == (3, 10) and out.dtype == torch.float32
    assert d64(_images(3)).dtype == F64


# --------------------------------------------------------------------------------------
# wavefront vs cell-by-cell reference


def _grads(m: RNN2D, fn, x, y):
    loss = F.cross_entropy(fn(x), y)
    return torch.autograd.grad(loss, m.weight_matrices())


@pytest.mark.parametrize("directions", [None, "alternate", ("br", "tr", "bl", "tl", "tr")])
def test_wavefront_matches_reference_default_sizes(directions):
    m = RNN2D(dtype=F64, generator=_gen(0), directions=directions)
    x = _images(2, seed=3)
    y = torch.tensor([3, 7])
    out, ref = m(x), m.forward_reference(x)
    assert out.shape == (2, 10)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for g, gr in zip(_grads(m, m, x, y), _grads(m, m.forward_reference, x, y)):
        torch.testing.assert_close(g, gr, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("directions", [None, "alternate", "br"])
@pytest.mark.parametrize("sizes", [(4, 6), (3,), (2, 3, 2, 3, 2, 3)])
def test_wavefront_matches_reference_small(sizes, directions):
    m = RNN2D(sizes=sizes, dtype=F64, generator=_gen(1), directions=directions, init_std=0.5)
    x = _images(5, seed=4, channel=False)
    y = torch.arange(5)
    torch.testing.assert_close(m(x), m.forward_reference(x), rtol=1e-12, atol=1e-12)
    for g, gr in zip(_grads(m, m, x, y), _grads(m, m.forward_reference, x, y)):
        torch.testing.assert_close(g, gr, rtol=1e-12, atol=1e-12)


def test_other_nonlinearity_and_32x32_input():
    m = RNN2D(sizes=(4, 5), dtype=F64, generator=_gen(2), nonlinearity="sigmoid")
    x = torch.rand(2, 1, 32, 32, generator=_gen(9), dtype=F64)
    torch.testing.assert_close(m(x), m.forward_reference(x), rtol=1e-12, atol=1e-12)
    # a 28x28 image and its zero-padded 32x32 version give the same output
    x28 = _images(2)
    torch.testing.assert_close(m(x28), m(F.pad(x28, (2, 2, 2, 2))), rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# second order


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def _hvp(m: RNN2D, fn, x, y, v):
    ws = m.weight_matrices()
    g = torch.autograd.grad(F.cross_entropy(fn(x), y), ws, create_graph=True)
    return torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, v)), ws)


@pytest.mark.parametrize("directions", [None, "alternate"])
def test_hessian_vector_product(directions):
    m = RNN2D(sizes=(4, 6), dtype=F64, generator=_gen(3), directions=directions, init_std=0.5)
    x = _images(4, seed=5)
    y = torch.tensor([0, 1, 2, 9])
    gv = _gen(11)
    v = [torch.randn(w.shape, generator=gv, dtype=F64) for w in m.weight_matrices()]
    hv = _flat(_hvp(m, m, x, y, v))
    hv_ref = _flat(_hvp(m, m.forward_reference, x, y, v))
    torch.testing.assert_close(hv, hv_ref, rtol=1e-11, atol=1e-12)
    assert hv.abs().max() > 1e-6  # nontrivial

    # central finite difference of the gradient, using forward(x, weights=...)
    eps = 1e-6  # truncation error ~ eps**2 * |third derivative|, roundoff ~ 1e-16 / eps

    def grad_at(sign):
        ws = [(w + sign * eps * vi).detach().requires_grad_() for w, vi in zip(m.weight_matrices(), v)]
        return _flat(torch.autograd.grad(F.cross_entropy(m(x, weights=ws), y), ws))

    fd = (grad_at(+1) - grad_at(-1)) / (2 * eps)
    torch.testing.assert_close(hv, fd, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------
# sweep directions


def test_resolve_directions():
    assert resolve_directions(None, 3) == ("tl", "tl", "tl")
    assert resolve_directions("alternate", 5) == ("tl", "br", "tr", "bl", "tl")
    assert ALTERNATE_CYCLE == ("tl", "br", "tr", "bl")
    assert resolve_directions("br", 2) == ("br", "br")
    assert resolve_directions(["tr", "bl"], 2) == ("tr", "bl")
    with pytest.raises(ValueError, match="unknown"):
        resolve_directions("diagonal", 2)
    with pytest.raises(ValueError, match="entries"):
        resolve_directions(["tl"], 2)
    with pytest.raises(ValueError, match="unknown direction"):
        resolve_directions(["tl", "up"], 2)
    assert RNN2D(directions="alternate").directions == ("tl", "br", "tr", "bl", "tl")


@pytest.mark.parametrize("direction,flip_rows,flip_cols", [("tr", False, True), ("bl", True, False), ("br", True, True)])
def test_direction_equals_flipped_image(direction, flip_rows, flip_cols):
    """A sweep from another corner == the top-left sweep on the flipped image, with the
    input weights permuted like the pixels inside a patch."""
    m = RNN2D(sizes=(5, 3), dtype=F64, generator=_gen(4), directions=direction, init_std=0.5)
    base = RNN2D(sizes=(5, 3), dtype=F64, generator=_gen(4), init_std=0.5)
    dims = [d for d, f in ((-2, flip_rows), (-1, flip_cols)) if f]
    off = torch.arange(16).reshape(4, 4).flip(dims).reshape(-1)  # within-patch permutation
    with torch.no_grad():
        base.layers[0][:, :16] = m.layers[0][:, :16][:, off]
    x = _images(3, seed=6)
    torch.testing.assert_close(m(x), base(x.flip(dims)), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# patches and input checks


@pytest.mark.parametrize("r,c", [(0, 0), (0, 27), (27, 0), (27, 27), (13, 6), (1, 2), (5, 17)])
def test_patch_extraction_single_pixel(r, c):
    x = torch.zeros(2, 1, 28, 28)
    x[1, 0, r, c] = 0.75
    u = image_to_patches(x)
    assert u.shape == (2, 8, 8, 16)
    i, j = (r + 2) // 4, (c + 2) // 4
    off = ((r + 2) % 4) * 4 + (c + 2) % 4
    assert u[1, i, j, off] == 0.75
    assert torch.count_nonzero(u) == 1
    assert torch.equal(image_to_patches(x[:, 0]), u)  # (B, 28, 28) input
    m = RNN2D()
    assert torch.equal(m.patches(x), u)


def test_patch_layout_padded_borders():
    u = image_to_patches(torch.ones(1, 1, 28, 28))
    # border patches have two zero rows / columns of padding
    assert u[0, 0, 0].reshape(4, 4).tolist() == [[0] * 4, [0] * 4, [0, 0, 1, 1], [0, 0, 1, 1]]
    assert u[0, 7, 3].reshape(4, 4).tolist() == [[1] * 4, [1] * 4, [0] * 4, [0] * 4]
    assert torch.all(u[0, 1:7, 1:7] == 1)
    assert u.sum() == 28 * 28


@pytest.mark.parametrize(
    "shape",
    [(28, 28), (2, 3, 28, 28), (2, 1, 28, 27), (2, 30, 30), (2, 29, 29), (2, 1, 36, 36), (2, 784), (1, 1, 1, 28, 28)],
)
def test_bad_shapes_raise(shape):
    m = RNN2D(sizes=(3,))
    x = torch.zeros(shape)
    with pytest.raises(ValueError, match="expected"):
        m(x)
    with pytest.raises(ValueError, match="expected"):
        m.forward_reference(x)


def test_bad_dtype_and_weights_raise():
    m = RNN2D(sizes=(3,))
    with pytest.raises(ValueError, match="floating"):
        m(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shapes"):
        m(torch.zeros(2, 1, 28, 28), weights=[torch.zeros(3, 3)])
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN2D(nonlinearity="softsign")
