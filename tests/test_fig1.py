"""Fast tests of psgdlib.fig1 (Experiment 1 / Fig. 1 grid, loader and plots)."""
from __future__ import annotations

import json
from dataclasses import asdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from psgdlib import experiments, fig1, runner  # noqa: E402
from psgdlib import tasks as _tasks  # noqa: E402
from psgdlib.results import RunResult  # noqa: E402
from psgdlib.train import TrainConfig, build_model  # noqa: E402


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_configs_share_init_and_step_size(profile):
    configs = fig1.experiment1_configs(profile)
    s = fig1.PROFILE_SETTINGS[profile]
    assert {c["optimizer"] for c in configs} == set(fig1.OPTIMIZERS)
    assert len(configs) == len(fig1.OPTIMIZERS) * len(s["seeds"])
    for c in configs:
        assert c["problem"] == "addition_variable" and c["T"] == 100 and c["hidden"] == 50
        assert TrainConfig(**c).resolved().lr == 0.01 and c["stop_when_solved"] is False
        assert c["pairs"] == "finite_difference" and c["dtype"] == "float32"
        assert c["n_test"] == s["n_test"]
        assert c["eval_every"] == (s["eval_every"] if c["optimizer"] != "psgd_dense"
                                   else min(s["eval_every"], c["iterations"] // 5))
    for opt in fig1.OPTIMIZERS:   # the same seeds (initial weights, minibatches) for every optimizer
        assert sorted(c["seed"] for c in configs if c["optimizer"] == opt) == sorted(s["seeds"])
    budgets = {c["optimizer"]: c["iterations"] for c in configs}
    assert budgets["sgd"] == budgets["psgd_kron"] == s["iterations"]
    assert budgets["psgd_dense"] <= s["iterations"]
    # the same clipping threshold for all: SGD's g (paper), PSGD's P g (author's code)
    for c in configs:
        r = TrainConfig(**c).resolved()
        assert r.clip == 1.0 and r.batch_size == 100


def test_equal_budgets_and_overrides():
    configs = fig1.experiment1_configs("cpu", seeds=[3, 4], equal_budgets=True)
    assert {c["problem"] for c in fig1.experiment1_configs("smoke", problem="addition")} == {"addition"}
    assert {c["iterations"] for c in configs} == {fig1.PROFILE_SETTINGS["cpu"]["iterations"]}
    assert sorted({c["seed"] for c in configs}) == [3, 4]
    configs = fig1.experiment1_configs("smoke", iterations=7)
    assert {c["iterations"] for c in configs} == {7}
    with pytest.raises(ValueError):
        fig1.experiment1_configs("nope")


def test_same_initial_weights_and_parameter_count():
    task = _tasks.get(fig1.PROBLEM, fig1.T)
    models = [build_model(task, c["hidden"], c["seed"]) for c in fig1.experiment1_configs("smoke")]
    for m in models[1:]:
        for a, b in zip(models[0].parameters(), m.parameters()):
            assert torch.equal(a, b)
    n = sum(p.numel() for p in models[0].parameters())
    assert n == fig1.n_parameters() == 2701
    assert fig1.kron_factor_dims() == (50, 53, 1, 51)


def test_clipping_default_and_paper_literal_variant():
    for c in fig1.experiment1_configs("cpu"):
        assert c["clip"] == 1.0                                   # SGD: g, PSGD: P g, both at norm 1
    for c in fig1.experiment1_configs("cpu", clip=None):
        assert TrainConfig(**c).resolved().clip == (1.0 if c["optimizer"] == "sgd" else None)


def test_runner_command_is_the_unclipped_grid(monkeypatch, tmp_path):
    """`python -m psgdlib.experiments <experiments_argv>` runs experiment1_configs(equal budgets, clip=None)."""
    seen = {}

    def fake_run_grid(configs, out_dir, **kw):
        seen["configs"], seen["out"] = configs, out_dir
        return []

    monkeypatch.setattr(runner, "run_grid", fake_run_grid)
    out = str(tmp_path / "fig1")
    for profile in ("smoke", "paper"):
        assert experiments.main(fig1.experiments_argv(profile, out)) == 0
        assert seen["out"] == out
        assert seen["configs"] == fig1.experiment1_configs(profile, equal_budgets=True, clip=None)
        # the runner has --clip: with it, its command is the clipped grid of `python -m psgdlib.fig1 run`
        assert experiments.main(fig1.experiments_argv(profile, out, clip=1.0)) == 0
        assert seen["configs"] == fig1.experiment1_configs(profile, equal_budgets=True)
        assert {experiments.run_name(c) for c in seen["configs"]} == {
            experiments.run_name(c) for c in fig1.experiment1_configs(profile, equal_budgets=True)}
    cmd = fig1.long_run_command(clip=False)
    assert cmd.startswith("python -m psgdlib.experiments run --problems addition_variable --T 100 --hidden 50 "
                          "--optimizers sgd,psgd_kron,psgd_dense --seeds 0-2 --iterations ")
    assert "--no-stop" in cmd and cmd.endswith("--out results/fig1_noclip")
    assert fig1.long_run_command() == "python -m psgdlib.fig1 run --profile paper --out results/fig1"


def test_run_goes_through_run_grid(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run_grid(configs, out_dir, **kw):
        seen["configs"], seen["kw"] = configs, kw
        return []

    monkeypatch.setattr(runner, "run_grid", fake_run_grid)
    assert fig1.main(["run", "--profile", "paper", "--out", str(tmp_path), "--jobs", "2"]) == 0
    assert seen["configs"] == fig1.experiment1_configs("paper", equal_budgets=True)
    assert seen["kw"]["jobs"] == 2
    assert fig1.main(["run", "--profile", "smoke", "--out", str(tmp_path), "--no-clip", "--seeds", "4,5"]) == 0
    assert seen["configs"] == fig1.experiment1_configs("smoke", seeds=[4, 5], equal_budgets=True, clip=None)
    seen.clear()
    assert fig1.main(["run", "--profile", "paper", "--out", str(tmp_path), "--dry-run"]) == 0
    assert not seen and "9 runs" in capsys.readouterr().out


def test_run_writes_files_and_refuses_to_mix_grids(tmp_path):
    kw = dict(seeds=[0], iterations=2, eval_every=1, n_test=10, progress=False)
    paths = fig1.run("smoke", tmp_path, command="python -m psgdlib.fig1 run (test)", **kw)
    assert len(paths) == 3 and all(p.exists() for p in paths)
    r = json.loads(paths[0].read_text())
    assert r["provenance"]["command"] == "python -m psgdlib.fig1 run (test)"
    df = fig1.load_curves(tmp_path)
    assert set(df["optimizer"]) == set(fig1.OPTIMIZERS) and set(df["clip"]) == {1.0}
    fig1.run("smoke", tmp_path, **kw)                             # resumable: nothing to do
    assert len(list(tmp_path.glob("*.json"))) == 3
    other = fig1.run("smoke", tmp_path, clip=None, **kw)          # other settings: other file names
    assert not set(other) & set(paths) and len(list(tmp_path.glob("*.json"))) == 6
    with pytest.raises(ValueError, match="n_test"):               # same names, other settings
        fig1.run("smoke", tmp_path, **dict(kw, n_test=20))
    for p in paths:                         # files written before TrainConfig had a `model` field
        r = json.loads(p.read_text())
        del r["config"]["model"]
        p.write_text(json.dumps(r))
    assert fig1.run("smoke", tmp_path, **kw) == paths                # still the same grid: nothing to do


# ------------------------------------------------------------------ fake result files
def _write_result(d, optimizer, seed, iters, losses, problem="addition_variable", hidden=50, curve=True):
    """A result file as experiments.run_file writes it (psgdlib.results.RunResult)."""
    cfg = asdict(TrainConfig(problem=problem, T=100, hidden=hidden, optimizer=optimizer, seed=seed,
                             iterations=iters[-1], eval_every=iters[0], stop_when_solved=False).resolved())
    n = len(iters)
    path = d / experiments.run_name(cfg)
    return RunResult(
        config=cfg, solved=False, iterations_to_solve=None, iterations_to_strict=None,
        iterations_run=iters[-1], stopped="budget", final_test_error=0.8, wall_time=0.01 * iters[-1],
        seconds_per_iteration=0.01,
        curve={"iteration": list(iters), "train_loss": [l * 1.1 for l in losses], "test_loss": list(losses),
               "test_error": [0.8] * n, "wall_time": [0.01 * i for i in iters], "n_test": [1000] * n}
        if curve else None,
        provenance={"command": "test", "git_commit": "x", "hardware": "cpu"}).write(path)


@pytest.fixture
def result_dir(tmp_path):
    d = tmp_path / "fig1"
    d.mkdir()
    _write_result(d, "sgd", 0, [10, 20, 30], [0.04, 0.039, 0.038])
    _write_result(d, "sgd", 1, [10, 20, 30], [0.042, 0.040, 0.036])
    _write_result(d, "psgd_kron", 0, [10, 20, 30], [0.04, 0.01, 0.001])
    _write_result(d, "psgd_dense", 0, [10, 20], [0.04, 0.005])
    _write_result(d, "psgd_kron", 5, [10], [0.5], problem="addition")        # other problem: skipped
    _write_result(d, "psgd_kron", 6, [10], [0.5], hidden=100)                # other size: skipped
    _write_result(d, "psgd_kron", 7, [10], [0.5], curve=False)               # non-finite run: skipped
    (d / "notes.json").write_text(json.dumps({"hello": 1}))                   # not a result file
    (d / "broken.json").write_text("{")                                        # half-written: skipped
    return d


def test_load_curves(result_dir, tmp_path):
    df = fig1.load_curves(result_dir)
    assert len(df) == 3 + 3 + 3 + 2
    assert set(df["optimizer"]) == {"sgd", "psgd_kron", "psgd_dense"}
    assert {"optimizer", "seed", "iteration", "train_loss", "test_loss", "test_error",
            "wall_time", "source"} <= set(df.columns)
    assert df[(df.optimizer == "psgd_kron")]["test_loss"].tolist() == [0.04, 0.01, 0.001]
    # missing or empty folders give an empty table with the same columns
    empty = fig1.load_curves(tmp_path / "does_not_exist")
    assert empty.empty and list(empty.columns) == list(df.columns)
    assert len(fig1.load_curves(result_dir, problem=None, hidden=None)) == len(df) + 2


def test_load_curves_keeps_the_longest_copy_of_a_run(result_dir):
    """A run stored again with a longer budget (another file name) is drawn once, the long one."""
    _write_result(result_dir, "psgd_kron", 0, [10, 20, 30, 40, 50], [0.04, 0.01, 0.001, 5e-4, 1e-4])
    _write_result(result_dir, "psgd_dense", 0, [10], [0.04])                  # shorter copy: dropped
    df = fig1.load_curves(result_dir)
    kron = df[(df.optimizer == "psgd_kron") & (df.seed == 0)]
    assert kron["iteration"].tolist() == [10, 20, 30, 40, 50] and kron["source"].nunique() == 1
    assert df[df.optimizer == "psgd_dense"]["iteration"].tolist() == [10, 20]
    assert len(df) == 3 + 3 + 5 + 2


def test_load_curves_reads_a_real_run_file(tmp_path):
    cfg = fig1.experiment1_configs("smoke", optimizers=["sgd"], iterations=4, eval_every=2, n_test=20)[0]
    path = experiments.run_file(cfg, tmp_path, device="cpu")
    df = fig1.load_curves(tmp_path)
    assert df["iteration"].tolist() == [2, 4] and df["source"].tolist() == [str(path)] * 2
    assert df["test_loss"].map(lambda v: v == v and v < 1).all()


def test_final_table(result_dir):
    t = fig1.final_table(fig1.load_curves(result_dir))
    assert t["optimizer"].tolist() == ["sgd", "sgd", "psgd_kron", "psgd_dense"]
    row = t[t.optimizer == "psgd_dense"].iloc[0]
    assert row["iterations"] == 20 and row["final_test_loss"] == 0.005
    assert row["ms_per_iteration"] == pytest.approx(10.0)
    assert fig1.final_table(fig1.load_curves(result_dir / "nope")).empty


def test_plateau_exit(result_dir):
    """Exit = first evaluation with test MSE below half the MSE of predicting 0.5 (1/48)."""
    t = fig1.plateau_exit(fig1.load_curves(result_dir))
    assert t["optimizer"].tolist() == ["sgd", "sgd", "psgd_kron", "psgd_dense"]
    assert t["left_plateau"].tolist() == [False, False, True, True]
    kron = t[t.optimizer == "psgd_kron"].iloc[0]
    assert kron["iteration"] == 20 and kron["wall_time_s"] == pytest.approx(0.2)   # 0.01 < 1/48
    assert kron["iterations_run"] == 30 and kron["final_test_loss"] == 0.001
    sgd = t[t.optimizer == "sgd"]
    assert sgd["iteration"].isna().all() and sgd["iterations_run"].tolist() == [30, 30]
    # a stricter threshold: 0.005 < 0.2/24 but 0.01 is not
    strict = fig1.plateau_exit(fig1.load_curves(result_dir), fraction=0.2).set_index("optimizer")
    assert strict.loc["psgd_kron", "iteration"] == 30 and strict.loc["psgd_dense", "iteration"] == 20
    assert fig1.plateau_exit(fig1.load_curves(result_dir / "nope")).empty
    with pytest.raises(ValueError, match="fraction"):
        fig1.plateau_exit(fig1.load_curves(result_dir), fraction=1.5)


@pytest.mark.parametrize("x", ["iteration", "wall_time"])
def test_plot_curves(result_dir, x):
    df = fig1.load_curves(result_dir)
    fig, ax = plt.subplots()
    out = fig1.plot_curves(df, x=x, ax=ax, chance=1 / 24)
    assert out is ax and ax.get_yscale() == "log"
    assert ax.get_xlabel() and ax.get_ylabel()
    # sgd: 2 faint seed lines + median; kron and dense: one line each; plus the chance line
    assert len(ax.get_lines()) == 2 + 1 + 1 + 1 + 1
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("SGD" in s and "2 seeds" in s for s in labels)
    sgd_mid = [l for l in ax.get_lines() if "SGD (clipped" in str(l.get_label())][0]
    assert list(sgd_mid.get_ydata()) == pytest.approx([0.041, 0.0395, 0.037])
    plt.close(fig)
    # three seeds, one of which falls by decades: the bold line is the median run, not the mean
    _write_result(result_dir, "sgd", 2, [10, 20, 30], [0.041, 1e-4, 1e-5])
    fig, ax = plt.subplots()
    fig1.plot_curves(fig1.load_curves(result_dir), x=x, ax=ax)
    sgd_mid = [l for l in ax.get_lines() if "median of 3 seeds" in str(l.get_label())][0]
    assert list(sgd_mid.get_ydata()) == pytest.approx([0.041, 0.039, 0.036])
    plt.close(fig)
    with pytest.raises(ValueError):
        fig1.plot_curves(df, x="epoch")


def test_plot_curves_from_train_output_and_subset(result_dir):
    r = json.loads(next(result_dir.glob("*psgd_kron*_s0.json")).read_text())
    df = fig1.curves_from_result(r)
    fig, ax = plt.subplots()
    fig1.plot_curves(df, y="train_loss", ax=ax, optimizers=["psgd_kron", "sgd"], logy=False)
    assert ax.get_yscale() == "linear" and len(ax.get_lines()) == 1
    plt.close(fig)


def test_cli_summarize_and_plot(result_dir, tmp_path, capsys):
    assert fig1.main(["summarize", "--out", str(result_dir)]) == 0
    assert "psgd_dense" in capsys.readouterr().out
    png = tmp_path / "f.png"
    assert fig1.main(["plot", "--out", str(result_dir), "--save", str(png)]) == 0
    assert png.stat().st_size > 1000
    assert fig1.main(["summarize", "--out", str(tmp_path / "empty")]) == 1
