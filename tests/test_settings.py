"""Named run settings (psgdlib.settings), Table I side by side, and the runner's input checks."""
import json
import os

import pytest

from psgdlib import experiments as ex
from psgdlib.settings import SETTINGS, setting, setting_of


def test_settings_are_the_papers_and_li_rnn():
    assert SETTINGS == ("paper", "li_rnn")
    assert setting("paper", "addition") == {"lr": None, "clip": None}
    assert setting("li_rnn", "addition") == setting("li_rnn", "multiplication") == {"lr": 0.05, "clip": 1.0}
    for p in ("xor", "temporal_order_2bit", "random_permutation", "memorization_20bit"):
        assert setting("li_rnn", p) == {"lr": 0.01, "clip": 1.0}
    assert setting_of("addition", 0.01, None) == setting_of("xor", None, float("nan")) == "paper"
    assert setting_of("addition", 0.05, 1.0) == setting_of("xor", 0.01, 1.0) == "li_rnn"
    assert setting_of("xor", 0.05, 1.0) is None        # an ablation, in neither setting
    with pytest.raises(ValueError, match="unknown setting 'fast'"):
        setting("fast", "xor")
    with pytest.raises(ValueError, match="PSGD optimizers, not 'sgd'"):
        setting("li_rnn", "xor", "sgd")


def _fake(d, problem, T, seed, solved, lr, clip):
    cfg = dict(problem=problem, T=T, optimizer="psgd_kron", pairs="finite_difference", hidden=100,
               seed=seed, iterations=100_000, lr=lr, clip=clip, model="rnn")
    r = dict(config=cfg, solved=solved, iterations_to_solve=1000 if solved else None,
             iterations_run=1000 if solved else 100_000, stopped="solved" if solved else "budget",
             final_test_error=0.005 if solved else 0.3, wall_time=1.0, provenance={})
    (d / f"{problem}_{T}_{seed}_{lr}_{clip}.json").write_text(json.dumps(r))


def test_table1_shows_both_settings_next_to_the_paper(tmp_path):
    for s in range(5):
        _fake(tmp_path, "addition", 50, s, s < 2, 0.01, None)      # paper setting: 3/5 failed
        _fake(tmp_path, "addition", 50, s, True, 0.05, 1.0)        # li_rnn: 0/5
    _fake(tmp_path, "xor", 100, 0, True, 0.05, 1.0)                # neither setting: not counted
    df = ex.load_results(tmp_path)
    assert sorted(df["setting"].fillna("-").value_counts().items()) == [("-", 1), ("li_rnn", 5), ("paper", 5)]
    t = ex.table1_settings(df)
    row = t.loc["Addition"]
    assert (row[("T=50", "paper")], row[("T=50", "li_rnn")], row[("T=50", "Li 2016")]) == ("3/5", "0/5", "0/5")
    assert t.loc["XOR", ("T=100", "li_rnn")] == "-" and t.loc["XOR", ("T=100", "Li 2016")] == "3/5"
    assert list(t.index)[:3] == ["Addition", "Multiplication", "XOR"]


@pytest.mark.parametrize("args,match", [
    (["--iterations", "0"], "--iterations must be >= 1, got 0"),
    (["--hidden", "0"], "--hidden must be >= 1"),
    (["--eval-every", "0"], "--eval-every must be >= 1"),
    (["--n-test", "0"], "--n-test must be >= 1"),
    (["--seeds", "3-1"], "range '3-1' is empty"),
    (["--seeds", "a"], "--seeds 'a'"),
    (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["--lr", "-0.1"], "--lr must be a positive finite number"),
    (["--clip", "inf"], "--clip must be a positive finite number"),
    (["--setting", "li_rnn", "--lr", "0.1"], "give one"),
    (["--setting", "li_rnn", "--optimizers", "sgd"], "not 'sgd'"),
])
def test_cli_rejects_bad_numbers_before_running(tmp_path, capsys, args, match):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        ex.main(["run", "--profile", "smoke", "--problems", "addition", "--T", "10", "--out", str(out), *args])
    assert e.value.code == 2
    assert match in capsys.readouterr().err
    assert not list(out.glob("*.json")) if out.exists() else True    # nothing stored


def test_cli_checks_the_output_folder_before_training(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit):
        ex.main(["run", "--profile", "smoke", "--problems", "addition", "--out", str(f)])
    assert "is a file, not a folder" in capsys.readouterr().err
    if os.geteuid() != 0:   # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(SystemExit):
            ex.main(["run", "--profile", "smoke", "--problems", "addition", "--out", str(ro)])
        assert "is not writable" in capsys.readouterr().err


def test_truncated_result_is_redone_and_named(tmp_path, capsys):
    args = ["run", "--profile", "smoke", "--problems", "addition", "--T", "10", "--iterations", "50",
            "--out", str(tmp_path)]
    assert ex.main(args) == 0
    (f,) = tmp_path.glob("*.json")
    good = json.loads(f.read_text())
    f.write_text(f.read_text()[:50])                        # truncated
    with pytest.raises(ValueError, match=f"{f.name}: not a readable result file"):
        ex.load_results(tmp_path)
    assert ex.main(args) == 0                               # set aside and redone
    assert "unreadable result file" in capsys.readouterr().err
    assert json.loads(f.read_text())["curve"]["test_error"] == good["curve"]["test_error"]
    assert (tmp_path / (f.name + ".corrupt")).exists()


def test_a_stored_run_with_other_settings_is_refused(tmp_path):
    args = ["run", "--profile", "smoke", "--problems", "addition", "--T", "10", "--iterations", "50",
            "--out", str(tmp_path)]
    assert ex.main(args) == 0
    (f,) = tmp_path.glob("*.json")
    r = json.loads(f.read_text())
    r["config"]["n_test"] = 123                             # a setting the file name leaves out
    f.write_text(json.dumps(r))
    with pytest.raises(SystemExit):
        ex.main(args)
