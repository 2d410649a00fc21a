"""psgdlib.resources: the repository setting, finding and fetching the stored results, the
verdicts the chapters state; and a Colab-style run of every chapter's first cells in a fresh
folder outside the repository, where the stored-run sections must still find their files.

Nothing is downloaded: the "repository" is a local git repository made from this working
tree and addressed by a file:// URL.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from psgdlib import experiments, fig1, resources
from psgdlib.resources import Repository

ROOT = Path(__file__).resolve().parent.parent
yaml = pytest.importorskip("yaml")
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main",
                    *args], cwd=cwd, check=True, capture_output=True, text=True)


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """A working directory outside any checkout, with no environment overrides, and psgdlib
    looking like an ordinary (non-checkout) install."""
    for var in (resources.REPOSITORY_ENV, resources.RESULTS_ENV, resources.CACHE_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(resources, "_package_parent", lambda: tmp_path / "site-packages")
    monkeypatch.setattr(resources, "installed_repository", lambda distribution="psgdlib": None)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def make_origin(path: Path, files: dict[str, str]) -> str:
    """A git repository at ``path`` (branch main) holding ``files``; returns its HEAD commit."""
    path.mkdir(parents=True)
    git("init", "-q", cwd=path)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git("add", ".", cwd=path)
    git("commit", "-q", "-m", "one", cwd=path)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=path)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True).stdout.strip()


# --------------------------------------------------------------------------- the setting
def test_repository_parse_and_requirement():
    r = Repository.parse("https://github.com/o/r@dev")
    assert (r.url, r.branch, r.commit) == ("https://github.com/o/r", "dev", None)
    assert Repository.parse("git+https://github.com/o/r/").spec == "https://github.com/o/r@main"
    assert Repository.parse("file:///tmp/x@main").url == "file:///tmp/x"
    assert r.requirement("mnist") == "psgdlib[mnist] @ git+https://github.com/o/r@dev"


def test_config_repository_reads_the_books_setting():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    repo = resources.config_repository(ROOT)
    assert repo == Repository(cfg["url"].rstrip("/").removesuffix(".git"), str(cfg["branch"]))


def test_repository_block_parser_handles_comments_and_quotes():
    text = "title: x\nrepository:  # the setting\n  url: 'https://h/o/r'  # where\n\n  branch: \"b\"\nhtml:\n  url: no\n"
    assert resources._repository_block(text) == {"url": "https://h/o/r", "branch": "b"}


def test_psgdlib_holds_no_copy_of_the_repository_url():
    url = resources.config_repository(ROOT).url
    copies = [p.name for p in (ROOT / "psgdlib").rglob("*.py") if url in p.read_text()]
    assert not copies, f"the repository URL is typed in {copies}; read it with psgdlib.resources.repository()"


def test_repository_order_env_then_config_then_installed(outside, monkeypatch):
    with pytest.raises(LookupError):
        resources.repository()
    monkeypatch.setattr(resources, "installed_repository",
                        lambda distribution="psgdlib": Repository("https://h/o/installed", "main", "abc"))
    assert resources.repository().url.endswith("installed")
    (outside / "_config.yml").write_text("repository:\n  url: https://h/o/config\n  branch: dev\n")
    (outside / "_toc.yml").write_text("format: jb-book\nroot: x\n")
    assert resources.repository() == Repository("https://h/o/config", "dev")
    monkeypatch.setenv(resources.REPOSITORY_ENV, "https://h/o/env@feature")
    assert resources.repository() == Repository("https://h/o/env", "feature")


def test_installed_repository_reads_pep610_direct_url(monkeypatch):
    from importlib import metadata

    class Dist:
        def __init__(self, text):
            self.text = text

        def read_text(self, name):
            return self.text if name == "direct_url.json" else None

    info = {"url": "https://github.com/o/r.git",
            "vcs_info": {"vcs": "git", "commit_id": "0123456789abcdef", "requested_revision": "main"}}
    monkeypatch.setattr(metadata, "distribution", lambda name: Dist(json.dumps(info)))
    assert resources.installed_repository() == Repository("https://github.com/o/r", "main", "0123456789abcdef")
    monkeypatch.setattr(metadata, "distribution", lambda name: Dist(json.dumps({"url": "file:///x",
                                                                                "dir_info": {"editable": True}})))
    assert resources.installed_repository() is None


# --------------------------------------------------------------------------- finding results
def test_find_results_in_this_checkout():
    assert resources.find_results(ROOT / "notebooks") == ROOT / "results"
    assert resources.results_dir(start=ROOT / "notebooks", fetch=False, quiet=True) == ROOT / "results"


def test_find_results_outside_a_checkout(outside, monkeypatch, tmp_path):
    assert resources.find_results() is None
    assert resources.results_dir(fetch=False, quiet=True) is None
    stored = tmp_path / "elsewhere"
    stored.mkdir()
    monkeypatch.setenv(resources.RESULTS_ENV, str(stored))
    assert resources.find_results() == stored


@needs_git
def test_results_dir_fetches_a_shallow_clone_at_the_installed_commit(outside, tmp_path, monkeypatch, capsys):
    origin = tmp_path / "origin"
    first = make_origin(origin, {"results/a/run.json": "{}", "_config.yml": "x", "_toc.yml": "y"})
    (origin / "results" / "b.json").write_text("{}")
    git("add", ".", cwd=origin)
    git("commit", "-q", "-m", "two", cwd=origin)
    cache = tmp_path / "cache"
    monkeypatch.setenv(resources.CACHE_ENV, str(cache))
    # pinned to the first commit, as pip records it for `psgdlib @ git+URL@main`
    monkeypatch.setattr(resources, "installed_repository",
                        lambda distribution="psgdlib": Repository(f"file://{origin}", "main", first))
    got = resources.results_dir()
    assert got.is_relative_to(cache) and (got / "a" / "run.json").is_file()
    assert not (got / "b.json").exists(), "not checked out at the installed commit"
    assert "stored results:" in capsys.readouterr().out
    assert resources.results_dir(quiet=True) == got            # reused, not cloned again
    # no commit known: the tip of the branch
    tip = resources.results_dir(Repository(f"file://{origin}", "main"), quiet=True)
    assert (tip / "b.json").is_file() and tip != got


@needs_git
def test_fetch_reports_a_bad_repository(outside, tmp_path):
    with pytest.raises(RuntimeError, match="git clone"):
        resources.fetch_repository(Repository(f"file://{tmp_path}/nothing", "main"), cache=tmp_path / "c", quiet=True)


# --------------------------------------------------------------------------- verdicts
def _cell(s):
    f, t = map(int, re.match(r"(\d+)/(\d+)", s).groups())
    return f, t


def test_table1_verdict_matches_the_stored_runs_and_the_paper():
    runs = experiments.load_results([ROOT / "results" / "table1"])
    reruns = experiments.load_results([ROOT / "results" / "step_size"])
    v = resources.table1_verdict(runs, reruns)
    psgd = runs[runs["optimizer"] == "psgd_kron"]
    for (p, T), g in psgd.groupby(["problem", "T"]):
        row = v[(v["problem"] == p) & (v["T"] == T)].iloc[0]
        failed, total = int((~g["solved"]).sum()), len(g)
        pf, pt = _cell(experiments.PAPER_TABLE1[p][T])
        assert (row["failed"], row["runs"], row["paper failed"], row["paper runs"]) == (failed, total, pf, pt)
        assert row["verdict"] == ("not reproduced" if failed / total > pf / pt else "reproduced"), (p, T)
        if row["verdict"] == "not reproduced":
            twins = reruns[(reruns["problem"] == p) & (reruns["T"] == T) & reruns["seed"].isin(g.loc[~g["solved"], "seed"])]
            assert (row["reruns"], row["reruns solved"]) == (len(twins), int(twins["solved"].sum()))
    text = resources.table1_verdict_markdown(v)
    bad = v[v["verdict"] == "not reproduced"]
    assert f"{len(v) - len(bad)} of {len(v)} cells reproduce" in text
    for p, T in zip(bad["problem"], bad["T"]):
        assert f"Not reproduced: {p} at T = {T}," in text
    rescued = bad[(bad["reruns"] > 0) & (bad["reruns"] == bad["reruns solved"])]
    for p, T in zip(rescued["problem"], rescued["T"]):
        assert f"{p} T = {T}" in text.split("Where every rerun solved")[1]


def test_table1_verdict_on_a_made_up_table():
    import pandas as pd
    rows = [dict(problem="addition", T=30, model="rnn", optimizer="psgd_kron", seed=s, solved=s < 3, lr=0.01,
                 clip=None, budget=100_000, stopped="budget", final_test_error=0.02) for s in range(5)]
    rows += [dict(problem="xor", T=30, model="rnn", optimizer="psgd_kron", seed=s, solved=True, lr=0.01, clip=None,
                  budget=100_000, stopped="solved", final_test_error=0.0) for s in range(5)]
    runs = pd.DataFrame(rows)
    rerun = pd.DataFrame([dict(problem="addition", T=30, seed=s, solved=True, lr=0.05, clip=1.0) for s in (3, 4)])
    v = resources.table1_verdict(runs, rerun).set_index("problem")
    assert v.loc["addition", "verdict"] == "not reproduced" and v.loc["xor", "verdict"] == "reproduced"
    assert "2 ended between chance and the 1% threshold (2.0% wrong)" in v.loc["addition", "why"]
    assert (v.loc["addition", "reruns"], v.loc["addition", "reruns solved"]) == (2, 2)
    assert "step 0.05, P g clipped at 1" in resources.table1_verdict_markdown(v.reset_index())


def test_largest_rises_and_clipping_verdict():
    import pandas as pd
    curve = pd.DataFrame({"optimizer": "psgd_kron", "seed": 0, "iteration": [100, 200, 300, 400],
                          "train_loss": [0.04, 0.03, 0.09, 0.02], "test_loss": [0.04, 0.03, 0.05, 0.01]})
    r = resources.largest_rises(curve).iloc[0]
    assert r["rise"] == pytest.approx(3.0) and r["jump"] and r["to_iteration"] == 300
    assert "1 of them jumped: seed 0 rose 3.0x at iteration 300" in resources.clipping_verdict(curve)
    # the stored paper-literal runs: no jump (what chapter 2 now says)
    stored = fig1.load_curves(ROOT / "results" / "fig1_noclip")
    rises = resources.largest_rises(stored)
    assert len(rises) and not rises["jump"].any()
    text = resources.clipping_verdict(stored, fig1.load_curves(ROOT / "results" / "fig1"))
    assert text.startswith(f"{len(rises)} stored paper-literal runs") and "none met an exploding step" in text


# --------------------------------------------------------------------------- Colab, simulated
def _working_tree_origin(dest: Path) -> str:
    """A git repository holding this working tree (tracked and untracked, not ignored files)
    on branch main: what GitHub would serve. Returns its file:// URL."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    dest.mkdir(parents=True)
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", "working tree", cwd=dest)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=dest)
    return f"file://{dest}"


STORED_RESULT_CHAPTERS = ["02_addition_sgd_vs_psgd", "03_pathological_suite", "04_mnist_2d_rnn"]
MISSING = re.compile(r"no (result|stored|experiment-1 result)[\w -]*(files|runs)|NOTE: no stored|No stored runs", re.I)


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """psgdlib installed the way a chapter's first cell installs it on Colab, from a git URL
    (here a file:// repository made from this working tree), into its own folder."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    base = tmp_path_factory.mktemp("colab")
    url = _working_tree_origin(base / "origin")
    site = base / "site"
    # `psgdlib @ git+URL@main` as in the first cell; pip's requirement parser wants a host in a
    # git+file URL, so the equivalent `git+URL@main#egg=psgdlib` form is used here
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(site), f"git+{url}@main#egg=psgdlib"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    direct = json.loads(next(site.glob("psgdlib-*.dist-info")).joinpath("direct_url.json").read_text())
    assert direct["vcs_info"]["vcs"] == "git" and direct["url"] == url
    return {"url": url, "site": site, "base": base}


@pytest.mark.parametrize("chapter", STORED_RESULT_CHAPTERS)
def test_colab_first_cells_find_the_stored_results(chapter, colab, tmp_path, monkeypatch):
    """Run the chapter's first cell and its stored-run sections (cells tagged
    ``stored-results``) in a fresh folder, psgdlib installed from the repository, results/
    nowhere near: the first cell must fetch the stored results and every section find them."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = code[0]
    config_url = resources.config_repository(ROOT).url
    assert config_url in first.source
    first.source = first.source.replace(config_url, colab["url"])  # the repository setting, pointed here
    stored = [c for c in code[1:] if "stored-results" in c.metadata.get("tags", [])]
    assert stored, f"{chapter}: no cell is tagged stored-results"
    check = nbformat.v4.new_code_cell(
        "import json, pathlib, psgdlib\n"
        "print(json.dumps({'psgdlib': psgdlib.__file__, 'results': str(RESULTS), 'cwd': str(pathlib.Path.cwd())}))")
    nb.cells = [first, *stored, check]
    fresh = tmp_path / "content"          # Colab's working directory: nothing of the repository in it
    fresh.mkdir()
    cache = tmp_path / "cache"
    monkeypatch.setenv("PYTHONPATH", str(colab["site"]))
    monkeypatch.setenv(resources.CACHE_ENV, str(cache))
    monkeypatch.setenv("PSGD_PROFILE", "smoke")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for var in (resources.REPOSITORY_ENV, resources.RESULTS_ENV):
        monkeypatch.delenv(var, raising=False)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(fresh)}})
    client.execute()
    text = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            assert o.output_type != "error", f"{o.get('ename')}: {o.get('evalue')}"
            text.append(o.get("text", "") + "".join(str(v) for k, v in o.get("data", {}).items()
                                                   if k in ("text/plain", "text/markdown")))
    out = "\n".join(text)
    info = json.loads(next(line for line in out.splitlines() if line.startswith('{"psgdlib"')))
    assert Path(info["psgdlib"]).is_relative_to(colab["site"]), "psgdlib did not come from the install"
    assert Path(info["results"]).is_relative_to(cache), "results/ was not fetched into the cache"
    assert not (fresh / "results").exists()
    assert "stored results:" in out and colab["url"] in out
    missing = MISSING.findall(out)
    assert not missing, f"{chapter}: a stored-run section found no files: {missing}"
