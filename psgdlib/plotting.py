"""Plot style shared by the chapters and figures: one colour and one label per optimizer, log
axes, chance lines, and the learning curves of Fig. 1 (:func:`plot_curves`).

matplotlib is imported only when something is drawn.
"""
from __future__ import annotations

from typing import Mapping, Sequence

__all__ = ["ORDER", "COLORS", "LABELS", "XLABELS", "YLABELS", "color", "chance_line", "log_axes",
           "plot_curves"]

#: The order optimizers are listed and drawn in (SGD first, the PSGD variants, then Adam).
ORDER = ("sgd", "psgd_kron", "psgd_dense", "psgd_diag", "psgd", "adam")
#: One colour per optimizer, the same in every chapter (``psgd`` is MNIST's Kronecker PSGD).
COLORS = {"sgd": "tab:gray", "psgd_kron": "tab:blue", "psgd_dense": "tab:red", "psgd_diag": "tab:green",
          "psgd": "tab:blue", "adam": "tab:orange"}
#: One legend label per optimizer.
LABELS = {"sgd": "SGD (clipped at 1)", "psgd_kron": "PSGD, sparse (Kron, eq. 5)", "psgd_dense": "PSGD, dense",
          "psgd_diag": "PSGD, diagonal", "psgd": "PSGD (Kron)", "adam": "Adam"}
XLABELS = {"iteration": "iteration", "wall_time": "wall time (s, training only)"}
YLABELS = {"test_loss": "test loss", "train_loss": "training loss", "test_error": "test error rate"}


def color(optimizer: str) -> str | None:
    """The colour of ``optimizer`` (None, i.e. matplotlib's next, for an unknown one)."""
    return COLORS.get(optimizer)


def chance_line(ax, value: float, label: str = "chance"):
    """A dotted horizontal reference line at ``value`` (e.g. the loss of a no-memory
    predictor); returns the line."""
    return ax.axhline(value, color="k", ls=":", lw=1, label=label)


def log_axes(ax, x: bool = False, y: bool = True):
    """Logarithmic ``x`` and/or ``y`` axes, with a light grid on both decades and minor ticks."""
    if x:
        ax.set_xscale("log")
    if y:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    return ax


def plot_curves(df, x: str = "iteration", y: str = "test_loss", ax=None,
                optimizers: Sequence[str] | None = None, logy: bool = True, chance: float | None = None,
                title: str | None = None, xlabels: Mapping[str, str] = XLABELS,
                ylabels: Mapping[str, str] = YLABELS, labels: Mapping[str, str] = LABELS,
                chance_label: str = "chance"):
    """Learning curves of ``df`` (from :func:`load_curves`): the median over seeds as a bold line
    (robust when one seed stays on the plateau while the others fall by decades), every seed as a
    faint line.

    ``x``: a key of ``xlabels`` (``"iteration"`` or ``"wall_time"``); ``y``: a key of ``ylabels``
    (``"test_loss"``, ``"train_loss"`` or ``"test_error"``); ``labels`` names the optimizers.
    The median is taken at the evaluation points every seed reached (the median of the wall
    times too).  ``chance`` draws a dotted reference line (e.g. 1/24 for the
    test MSE of predicting 0.5).  Returns the axes.
    """
    import matplotlib.pyplot as plt
    if x not in xlabels:
        raise ValueError(f"x must be one of {tuple(xlabels)}, got {x!r}")
    if y not in ylabels:
        raise ValueError(f"y must be one of {tuple(ylabels)}, got {y!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0))
    present = list(dict.fromkeys(df["optimizer"])) if len(df) else []
    opts = [o for o in (optimizers or ORDER) if o in present]
    opts += [o for o in present if o not in opts and optimizers is None]
    for opt in opts:
        d = df[df["optimizer"] == opt]
        c = color(opt)
        seeds = sorted(set(d["seed"]))
        if len(seeds) > 1:
            for _, g in d.groupby("seed"):
                g = g.sort_values("iteration")
                ax.plot(g[x], g[y], color=c, alpha=0.25, lw=0.8)
        common = set.intersection(*(set(g["iteration"]) for _, g in d.groupby("seed")))
        m = (d[d["iteration"].isin(common)].groupby("iteration")[[x, y] if x != "iteration" else [y]]
             .median().reset_index().sort_values("iteration"))
        label = labels.get(opt, opt) + (f" (median of {len(seeds)} seeds)" if len(seeds) > 1 else "")
        ax.plot(m[x], m[y], color=c, lw=2, label=label)
    if chance is not None:
        chance_line(ax, chance, chance_label)
    if logy:
        log_axes(ax, y=True)
    ax.set_xlabel(xlabels[x])
    ax.set_ylabel(ylabels[y])
    if title:
        ax.set_title(title)
    if opts or chance is not None:
        ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    return ax

