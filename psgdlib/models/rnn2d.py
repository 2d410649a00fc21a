"""Two-dimensional RNN for MNIST (Li 2016, Experiment 3, Fig. 2).

The image is zero-padded to ``(patch * grid) x (patch * grid)`` pixels (32x32 by default)
and cut into a ``grid x grid`` array (8x8) of non-overlapping ``patch x patch`` (4x4) patches;
``u(i, j)`` is the row-major flattened patch in grid row ``i`` and column ``j`` (dim 16).

Layer ``l = 1..L`` (state size ``d_l``, ``d_0 = patch**2``) computes on the same grid::

    h_l(i, j) = tanh(W_l [h_{l-1}(i, j); h_l(i-1, j); h_l(i, j-1); 1]),   h_0 = u,

with zero state outside the grid. ``W_l`` has shape ``(d_l, d_{l-1} + 2 d_l + 1)``: the
input block, the "row" recurrent block (neighbour one row back along the sweep), the
"column" recurrent block (neighbour one column back along the sweep) and the bias column.
The output is ``W_out [h_L(last cell); 1]`` (logits, shape ``(B, n_classes)``), where the
last cell is the final cell of the last layer's sweep; ``W_out`` has shape
``(n_classes, d_L + 1)``. Default sizes ``(16, 32, 48, 64, 80)`` give 39,706 parameters.

Sweep directions
----------------
Every layer sweeps from one corner of the grid to the opposite one. The corners are named
``"tl"`` (top-left to bottom-right; the equation above, the default for every layer),
``"tr"`` (top-right to bottom-left: neighbours ``(i-1, j)`` and ``(i, j+1)``), ``"bl"``
(bottom-left to top-right: ``(i+1, j)`` and ``(i, j-1)``) and ``"br"`` (bottom-right to
top-left: ``(i+1, j)`` and ``(i, j+1)``). A sweep from another corner is the ``"tl"`` sweep
applied to the grid flipped vertically and/or horizontally (and flipped back). The
``directions`` argument takes ``None`` (all ``"tl"``), ``"alternate"`` (layer ``l`` uses
``("tl", "br", "tr", "bl")[(l - 1) % 4]``, so consecutive layers sweep from opposite
corners and, with five layers, the last layer sweeps ``"tl"`` again and ends at the
bottom-right cell), a single corner name for every layer, or a sequence with one corner
name per layer. In each layer's weight matrix the first recurrent block always acts on
the neighbour that precedes the cell along the grid rows in that layer's sweep, the second
on the one that precedes it along the columns.

Computation
-----------
Cells on one anti-diagonal (in sweep coordinates) are independent, so :meth:`RNN2D.forward`
runs ``2 * grid - 1`` (15) sequential wavefront steps per layer, each one batched matmul
over all cells of the diagonal and the whole minibatch. The input projection of a layer
is one matmul over all cells. :meth:`RNN2D.forward_reference` is a plain cell-by-cell
loop (64 steps per layer), kept as the reference implementation for tests. Both use only
differentiable, out-of-place torch ops, so double backward (Hessian-vector products)
works for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rnn import positive_int

__all__ = ["RNN2D", "DIRECTIONS", "ALTERNATE_CYCLE", "resolve_directions", "image_to_patches"]

#: Sweep corner names and their (flip rows, flip columns) flags.
DIRECTIONS: dict[str, tuple[bool, bool]] = {
    "tl": (False, False),
    "tr": (False, True),
    "bl": (True, False),
    "br": (True, True),
}

#: Per-layer cycle used by ``directions="alternate"``.
ALTERNATE_CYCLE: tuple[str, ...] = ("tl", "br", "tr", "bl")

def _identity(z: Tensor) -> Tensor:
    return z


_NONLINEARITIES: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "linear": _identity,
}


def resolve_directions(directions: str | Sequence[str] | None, n_layers: int) -> tuple[str, ...]:
    """Turn the ``directions`` argument of :class:`RNN2D` into one corner name per layer."""
    if directions is None:
        return ("tl",) * n_layers
    if isinstance(directions, str):
        if directions == "alternate":
            return tuple(ALTERNATE_CYCLE[l % len(ALTERNATE_CYCLE)] for l in range(n_layers))
        if directions in DIRECTIONS:
            return (directions,) * n_layers
        raise ValueError(
            f"unknown directions {directions!r}: use None, 'alternate', one of "
            f"{sorted(DIRECTIONS)} or a sequence of those, one per layer"
        )
    dirs = tuple(directions)
    if len(dirs) != n_layers:
        raise ValueError(f"directions has {len(dirs)} entries but the model has {n_layers} layers")
    for d in dirs:
        if d not in DIRECTIONS:
            raise ValueError(f"unknown direction {d!r}: use one of {sorted(DIRECTIONS)}")
    return dirs


def image_to_patches(x: Tensor, patch: int = 4, grid: int = 8) -> Tensor:
    """Zero-pad square images and cut them into a grid of non-overlapping patches.

    Args:
        x: ``(B, 1, S, S)`` or ``(B, S, S)`` floating images, ``S = 28`` (MNIST) or
            ``S = patch * grid`` (already padded; 32 by default).
    Returns:
        ``(B, grid, grid, patch * patch)``: entry ``[b, i, j]`` is the row-major flattened
        patch covering padded rows ``patch*i .. patch*i + patch - 1`` and columns
        ``patch*j .. patch*j + patch - 1``. Pixel ``(r, c)`` of the unpadded image lands in
        cell ``((r + p) // patch, (c + p) // patch)`` at offset
        ``((r + p) % patch) * patch + (c + p) % patch``, with ``p = (patch * grid - S) // 2``.
    Raises:
        ValueError: for any other shape or a non-floating dtype.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"expected a torch.Tensor of images, got {type(x).__name__}")
    full = patch * grid
    if x.dim() == 4:
        if x.shape[1] != 1:
            raise ValueError(
                f"expected images of shape (B, 1, H, W) with one channel, got {tuple(x.shape)}"
            )
        x = x[:, 0]
    elif x.dim() != 3:
        raise ValueError(
            f"expected images of shape (B, 1, 28, 28), (B, 28, 28) "
            f"or with side {full}, got a {x.dim()}-d tensor of shape {tuple(x.shape)}"
        )
    b, h, w = x.shape
    sides = sorted({28, full}) if full >= 28 and (full - 28) % 2 == 0 else [full]
    if h != w or h not in sides:
        raise ValueError(
            f"expected square images of side {' or '.join(map(str, sides))} "
            f"(zero-padded to {full}x{full}), got {h}x{w} (input shape {tuple(x.shape)})"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"expected floating-point images (e.g. pixels / 255), got dtype {x.dtype}"
        )
    p = (full - h) // 2
    if p:
        x = F.pad(x, (p, p, p, p))
    # (B, grid, patch, grid, patch) -> (B, grid, grid, patch, patch)
    x = x.reshape(b, grid, patch, grid, patch).permute(0, 1, 3, 2, 4)
    return x.reshape(b, grid, grid, patch * patch)


def _random_orthogonal(n: int, generator: torch.Generator | None) -> Tensor:
    """Haar-random ``n x n`` orthogonal matrix (float64, CPU)."""
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    s = torch.sign(torch.diagonal(r))
    s[s == 0] = 1.0
    return q * s


class RNN2D(nn.Module):
    """Deep two-dimensional RNN classifier (see the module docstring for the equations).

    Args:
        sizes: state sizes ``d_1 .. d_L`` of the recurrent layers.
        patch: patch side (input dim ``d_0 = patch**2``).
        grid: number of patches per side (the padded image has side ``patch * grid``).
        n_classes: number of output logits.
        directions: sweep direction per layer: ``None`` (all ``"tl"``), ``"alternate"``,
            a corner name, or a sequence of corner names (see the module docstring).
        nonlinearity: ``"tanh"`` (default), ``"sigmoid"``, ``"relu"`` or ``"linear"``.
        dtype, device: of the parameters.
        generator: CPU ``torch.Generator`` for the initialisation (weights are drawn on the
            CPU in float64 and then cast, so the same seed gives the same model on any
            device and in any dtype, up to rounding).
        init_std: standard deviation of the non-recurrent weights.

    Parameters (``weight_matrices()``, in order): ``W_1 .. W_L`` with ``W_l`` of shape
    ``(d_l, d_{l-1} + 2 d_l + 1)`` (blocks: input, row recurrent, column recurrent, bias),
    then ``W_out`` of shape ``(n_classes, d_L + 1)``. Initialisation: both recurrent blocks
    random orthogonal, other weights ``N(0, init_std^2)``, biases zero.
    """

    def __init__(
        self,
        sizes: Sequence[int] = (16, 32, 48, 64, 80),
        patch: int = 4,
        grid: int = 8,
        n_classes: int = 10,
        directions: str | Sequence[str] | None = None,
        nonlinearity: str = "tanh",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        sizes = tuple(sizes)
        if not sizes:
            raise ValueError(f"sizes must be a non-empty sequence of positive ints, got {sizes}")
        sizes = tuple(positive_int(f"sizes[{l}]", s) for l, s in enumerate(sizes))
        patch, grid, n_classes = (positive_int(name, v) for name, v in (
            ("patch", patch), ("grid", grid), ("n_classes", n_classes)))
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(
                f"unknown nonlinearity {nonlinearity!r}: use one of {sorted(_NONLINEARITIES)}"
            )
        self.sizes = sizes
        self.patch = int(patch)
        self.grid = int(grid)
        self.n_classes = int(n_classes)
        self.input_size = self.patch * self.patch
        self.nonlinearity = nonlinearity
        self._act = _NONLINEARITIES[nonlinearity]
        self.directions = resolve_directions(directions, len(sizes))
        factory = {"dtype": dtype if dtype is not None else torch.get_default_dtype(), "device": device}

        # ---- parameters -------------------------------------------------------------
        self.layers = nn.ParameterList()
        d_in = self.input_size
        for d in sizes:
            w = torch.randn(d, d_in + 2 * d + 1, generator=generator, dtype=torch.float64) * init_std
            w[:, d_in : d_in + d] = _random_orthogonal(d, generator)
            w[:, d_in + d : d_in + 2 * d] = _random_orthogonal(d, generator)
            w[:, -1] = 0.0
            self.layers.append(nn.Parameter(w.to(**factory)))
            d_in = d
        w = torch.randn(self.n_classes, d_in + 1, generator=generator, dtype=torch.float64) * init_std
        w[:, -1] = 0.0
        self.W_out = nn.Parameter(w.to(**factory))

        # ---- wavefront index tables -------------------------------------------------
        g = self.grid
        # diagonal k (in sweep coordinates) holds rows lo_k .. hi_k, column k - row
        self._diag_lo = [max(0, k - (g - 1)) for k in range(2 * g - 1)]
        self._diag_hi = [min(g - 1, k) for k in range(2 * g - 1)]
        self._diag_sizes = [hi - lo + 1 for lo, hi in zip(self._diag_lo, self._diag_hi)]
        perms = []
        for name in sorted(DIRECTIONS):
            fr, fc = DIRECTIONS[name]
            order = []
            for k in range(2 * g - 1):
                for vi in range(self._diag_lo[k], self._diag_hi[k] + 1):
                    vj = k - vi
                    i = g - 1 - vi if fr else vi
                    j = g - 1 - vj if fc else vj
                    order.append(i * g + j)
            perms.append(order)
        perm = torch.tensor(perms, dtype=torch.long, device=device)  # (4, g*g)
        pos = torch.argsort(perm, dim=1)  # inverse permutations
        self._dir_index = {name: n for n, name in enumerate(sorted(DIRECTIONS))}
        # perm[d][p]: grid (row-major) index of the p-th cell of direction d's diagonal order
        self.register_buffer("_perm", perm, persistent=False)
        # pos[d][c]: position of grid cell c in direction d's diagonal order
        self.register_buffer("_pos", pos, persistent=False)

    # ------------------------------------------------------------------------------------
    def weight_matrices(self) -> list[nn.Parameter]:
        """``[W_1, ..., W_L, W_out]`` (every parameter of the model, in order)."""
        return [*self.layers, self.W_out]

    def num_parameters(self) -> int:
        """Total number of scalar parameters (39,706 at the default sizes)."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return (
            f"sizes={self.sizes}, patch={self.patch}, grid={self.grid}, "
            f"n_classes={self.n_classes}, directions={self.directions}, "
            f"nonlinearity={self.nonlinearity!r}"
        )

    def patches(self, x: Tensor) -> Tensor:
        """``(B, 1, S, S)`` or ``(B, S, S)`` images -> ``(B, grid, grid, patch**2)`` (see
        :func:`image_to_patches`), cast to the parameters' dtype."""
        u = image_to_patches(x, self.patch, self.grid)
        return u.to(self.W_out.dtype)

    def _weights(self, weights: Sequence[Tensor] | None) -> list[Tensor]:
        if weights is None:
            return self.weight_matrices()
        weights = list(weights)
        expected = [tuple(w.shape) for w in self.weight_matrices()]
        got = [tuple(w.shape) for w in weights]
        if got != expected:
            raise ValueError(f"weights must have shapes {expected}, got {got}")
        return weights

    # ------------------------------------------------------------------------------------
    def forward(self, x: Tensor, weights: Sequence[Tensor] | None = None) -> Tensor:
        """Wavefront forward pass.

        Args:
            x: images ``(B, 1, 28, 28)``, ``(B, 28, 28)``, ``(B, 1, 32, 32)`` or ``(B, 32, 32)``.
            weights: optional replacement for ``weight_matrices()`` (same shapes), e.g. for
                functional evaluation at perturbed parameters.
        Returns:
            logits ``(B, n_classes)``.
        """
        ws = self._weights(weights)
        u = image_to_patches(x, self.patch, self.grid).to(ws[-1].dtype)
        b = u.shape[0]
        g2 = self.grid * self.grid
        # cell-major layout (cells, B, features): the cells of one diagonal are contiguous
        h = u.reshape(b, g2, self.input_size).transpose(0, 1)
        order: str | None = None  # None: row-major grid order, else a direction's diagonal order
        d_in = self.input_size
        for w, d, direction in zip(ws[:-1], self.sizes, self.directions):
            if direction != order:
                idx = self._perm[self._dir_index[direction]]
                if order is not None:
                    idx = self._pos[self._dir_index[order]][idx]
                h = h.index_select(0, idx)
                order = direction
            h = self._layer_wavefront(h, w, d_in, d)
            d_in = d
        last = h[-1]  # final cell of the last layer's sweep, (B, d_L)
        w_out = ws[-1]
        return F.linear(last, w_out[:, :-1], w_out[:, -1])

    def _layer_wavefront(self, inp: Tensor, w: Tensor, d_in: int, d: int) -> Tensor:
        """One layer. ``inp``: ``(grid**2, B, d_in)``, cells in the layer's diagonal order;
        returns ``(grid**2, B, d)`` in the same order."""
        g2, b, _ = inp.shape
        g = self.grid
        act = self._act
        # input projection and bias for all cells at once: (g2 * B, d)
        proj = torch.addmm(w[:, -1], inp.reshape(g2 * b, d_in), w[:, :d_in].t())
        chunks = proj.split([n * b for n in self._diag_sizes], dim=0)
        w_rec_t = w[:, d_in : d_in + 2 * d].t()  # rows: [row block; column block]
        outs: list[Tensor] = []
        prev: Tensor | None = None  # previous diagonal, (n_prev, B, d)
        for k, n in enumerate(self._diag_sizes):
            if prev is None:
                hk = act(chunks[k])
            else:
                if k < g:
                    # growing: rows 0..k; row r's neighbours are prev rows r-1 (along rows)
                    # and r (along columns), zero outside the grid
                    rec = torch.cat(
                        (F.pad(prev, (0, 0, 0, 0, 1, 0)), F.pad(prev, (0, 0, 0, 0, 0, 1))), dim=-1
                    )
                else:
                    # shrinking: rows k-g+1..g-1, previous diagonal holds rows k-g..g-1
                    rec = torch.cat((prev[:-1], prev[1:]), dim=-1)
                hk = act(torch.addmm(chunks[k], rec.reshape(n * b, 2 * d), w_rec_t))
            outs.append(hk)
            prev = hk.reshape(n, b, d)
        return torch.cat(outs, dim=0).reshape(g2, b, d)

    # ------------------------------------------------------------------------------------
    def forward_reference(self, x: Tensor, weights: Sequence[Tensor] | None = None) -> Tensor:
        """Reference forward pass: plain cell-by-cell loops (``grid**2`` steps per layer).

        Same arguments and result as :meth:`forward`; much slower, for tests.
        """
        ws = self._weights(weights)
        u = image_to_patches(x, self.patch, self.grid).to(ws[-1].dtype)
        b = u.shape[0]
        g = self.grid
        ones = u.new_ones(b, 1)
        cells = [[u[:, i, j] for j in range(g)] for i in range(g)]
        last = None
        for w, d, direction in zip(ws[:-1], self.sizes, self.directions):
            fr, fc = DIRECTIONS[direction]
            zero = u.new_zeros(b, d)
            new: list[list[Tensor | None]] = [[None] * g for _ in range(g)]
            di = -1 if fr else 1  # sweep step along rows / columns in grid coordinates
            dj = -1 if fc else 1
            rows = range(g - 1, -1, -1) if fr else range(g)
            cols = range(g - 1, -1, -1) if fc else range(g)
            for i in rows:
                for j in cols:
                    pi, pj = i - di, j - dj
                    h_row = new[pi][j] if 0 <= pi < g else zero
                    h_col = new[i][pj] if 0 <= pj < g else zero
                    z = torch.cat((cells[i][j], h_row, h_col, ones), dim=1) @ w.t()
                    new[i][j] = self._act(z)
                    last = new[i][j]
            cells = new  # type: ignore[assignment]
        assert last is not None
        return torch.cat((last, ones), dim=1) @ ws[-1].t()


def _expected_num_parameters(sizes: Sequence[int], patch: int = 4, n_classes: int = 10) -> int:
    """Closed form: ``sum_l d_l (d_{l-1} + 2 d_l + 1) + n_classes (d_L + 1)``."""
    total, d_in = 0, patch * patch
    for d in sizes:
        total += d * (d_in + 2 * d + 1)
        d_in = d
    return total + n_classes * (d_in + 1)

