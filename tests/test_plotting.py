"""psgdlib.plotting: one colour per optimizer everywhere, log axes, chance lines, median curves."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from psgdlib import fig1, plotting  # noqa: E402


def test_every_optimizer_has_its_own_colour_and_fig1_uses_them():
    synthetic = [o for o in plotting.ORDER if o != "psgd"]        # "psgd" is MNIST's Kron PSGD
    assert len({plotting.COLORS[o] for o in synthetic}) == len(synthetic)
    assert plotting.COLORS["psgd"] == plotting.COLORS["psgd_kron"]
    assert fig1.COLORS == {o: plotting.COLORS[o] for o in fig1.OPTIMIZERS}
    assert set(plotting.LABELS) == set(plotting.COLORS) == set(plotting.ORDER)


def test_chance_line_and_log_axes():
    fig, ax = plt.subplots()
    line = plotting.chance_line(ax, 1 / 24, "predict 0.5")
    assert list(line.get_ydata()) == [1 / 24, 1 / 24] and line.get_label() == "predict 0.5"
    plotting.log_axes(ax, x=True)
    assert ax.get_xscale() == ax.get_yscale() == "log"
    plt.close(fig)


def test_plot_curves_draws_the_median_over_seeds_in_the_optimizer_colour():
    rows = [dict(optimizer=o, seed=s, iteration=i, test_loss=v * (s + 1), wall_time=i / 10.0)
            for o, v in (("sgd", 1.0), ("psgd_kron", 0.1)) for s in range(3) for i in (10, 20)]
    fig, ax = plt.subplots()
    plotting.plot_curves(pd.DataFrame(rows), chance=0.5, ax=ax)
    bold = [ln for ln in ax.lines if ln.get_linewidth() == 2]
    assert [ln.get_label() for ln in bold] == [plotting.LABELS[o] + " (median of 3 seeds)" for o in ("sgd", "psgd_kron")]
    for ln, o, v in zip(bold, ("sgd", "psgd_kron"), (1.0, 0.1)):
        assert mcolors.same_color(ln.get_color(), plotting.COLORS[o])
        assert list(ln.get_ydata()) == [2 * v, 2 * v]              # median of v, 2v, 3v
    assert ax.get_yscale() == "log" and any(ln.get_linestyle() == ":" for ln in ax.lines)
    plt.close(fig)
