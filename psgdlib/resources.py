"""The book's repository setting and its stored results, on a checkout and on Colab.

The repository setting lives in one place, the ``repository:`` block (``url``, ``branch``) of the
book's ``_config.yml``; Jupyter Book builds the launch buttons from it, and
``scripts/sync_repository.py`` writes it into the install line of every chapter's first cell.
psgdlib itself holds no copy: it reads the setting from

1. ``$PSGD_REPOSITORY`` (``URL`` or ``URL@REF``), when set;
2. the ``_config.yml`` of the checkout it runs in (the working directory or one of its parents,
   or the folder above the installed package);
3. the record pip keeps of where psgdlib was installed from (``direct_url.json``, PEP 610): on
   Colab the first cell installs ``psgdlib @ git+URL@BRANCH``, so the package knows that URL,
   that branch and the exact commit.

:func:`results_dir` finds the stored results: ``$PSGD_RESULTS``, else ``results/`` of the
checkout, else (Colab, or any folder outside the repository) a shallow clone of the repository
psgdlib came from, at the commit it was installed from, kept in a cache folder
(``$PSGD_CACHE``, default ``~/.cache/psgdlib``).

The second half of the module turns stored runs into the verdicts that the chapters state in
words (:func:`table1_verdict`, :func:`largest_rises`), so that the text is generated from the
data and cannot drift from it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["Repository", "REPOSITORY_ENV", "RESULTS_ENV", "CACHE_ENV", "book_root", "config_repository",
           "installed_repository", "repository", "find_results", "fetch_repository", "results_dir",
           "table1_verdict", "table1_verdict_markdown", "largest_rises", "clipping_verdict"]

REPOSITORY_ENV = "PSGD_REPOSITORY"
RESULTS_ENV = "PSGD_RESULTS"
CACHE_ENV = "PSGD_CACHE"
CONFIG_FILE = "_config.yml"
TOC_FILE = "_toc.yml"
RESULTS = "results"


# --------------------------------------------------------------------------- the setting
@dataclass(frozen=True)
class Repository:
    """A git repository: ``url``, the ``branch`` (or tag) to use, optionally an exact ``commit``."""

    url: str
    branch: str = "main"
    commit: str | None = None

    @classmethod
    def parse(cls, spec: str, branch: str = "main") -> "Repository":
        """``URL`` or ``URL@REF`` (the form of a pip ``git+`` requirement, without ``git+``)."""
        spec = spec.strip().removeprefix("git+")
        m = re.fullmatch(r"(?P<url>.+?://[^@]+?|[^@:]+)(?:@(?P<ref>[^@/]+))?", spec)
        if not m:
            raise ValueError(f"not a repository URL[@REF]: {spec!r}")
        return cls(m["url"].rstrip("/"), m["ref"] or branch)

    @property
    def spec(self) -> str:
        return f"{self.url}@{self.branch}"

    def requirement(self, extras: str = "") -> str:
        """The pip requirement that installs psgdlib from this repository."""
        return f"psgdlib{f'[{extras}]' if extras else ''} @ git+{self.url}@{self.branch}"


def _is_book_root(p: Path) -> bool:
    return (p / CONFIG_FILE).is_file() and (p / TOC_FILE).is_file()


def _package_parent() -> Path:
    """The folder above the imported psgdlib (a checkout for an editable install or a run from
    the repository; site-packages for an ordinary install)."""
    return Path(__file__).resolve().parent.parent


def book_root(start: str | os.PathLike | None = None) -> Path | None:
    """The checkout of the book: the first folder holding ``_config.yml`` and ``_toc.yml``
    among ``start`` (default: the working directory) and its parents, else the folder above
    this package when that is one (an editable install or a run from the checkout)."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for p in (here, *here.parents):
        if _is_book_root(p):
            return p
    pkg_parent = _package_parent()
    return pkg_parent if _is_book_root(pkg_parent) else None


def _repository_block(text: str) -> dict[str, str]:
    """``url`` and ``branch`` of the top-level ``repository:`` block of a YAML file
    (a few lines of parsing, so that psgdlib needs no YAML library)."""
    out: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if re.match(r"^repository:\s*(#.*)?$", line):
            inside = True
            continue
        if inside:
            if line.strip() == "" or line.lstrip().startswith("#"):
                continue
            if not line[:1].isspace():
                break
            m = re.match(r"^\s+(\w+):\s*(.*?)\s*(?:#.*)?$", line)
            if m:
                out[m[1]] = m[2].strip("'\"")
    return out


def config_repository(root: str | os.PathLike | None = None) -> Repository | None:
    """The ``repository:`` setting of the book's ``_config.yml`` (``root``: the checkout,
    default :func:`book_root`), or None outside a checkout."""
    root = Path(root) if root is not None else book_root()
    if root is None or not (root / CONFIG_FILE).is_file():
        return None
    block = _repository_block((root / CONFIG_FILE).read_text(encoding="utf-8"))
    if not block.get("url"):
        return None
    return Repository(block["url"].rstrip("/").removesuffix(".git"), str(block.get("branch") or "main"))


def installed_repository(distribution: str = "psgdlib") -> Repository | None:
    """The git repository, branch and commit that pip installed ``distribution`` from
    (PEP 610 ``direct_url.json``), or None (not installed from git)."""
    from importlib import metadata
    try:
        text = metadata.distribution(distribution).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    info = json.loads(text)
    vcs = info.get("vcs_info") or {}
    if vcs.get("vcs") != "git" or not info.get("url"):
        return None
    return Repository(info["url"].rstrip("/").removesuffix(".git"), vcs.get("requested_revision") or "main",
                      vcs.get("commit_id"))


def repository(root: str | os.PathLike | None = None) -> Repository:
    """The repository setting: ``$PSGD_REPOSITORY``, else the checkout's ``_config.yml``,
    else where pip installed psgdlib from (see the module docstring)."""
    env = os.environ.get(REPOSITORY_ENV, "").strip()
    if env:
        return Repository.parse(env)
    for found in (config_repository(root), installed_repository()):
        if found is not None:
            return found
    raise LookupError("no repository setting: not in a checkout of the book, psgdlib was not installed from "
                      f"git, and ${REPOSITORY_ENV} is not set (give it as URL@BRANCH)")


# --------------------------------------------------------------------------- stored results
def find_results(start: str | os.PathLike | None = None) -> Path | None:
    """``$PSGD_RESULTS``, else ``results/`` of the checkout (:func:`book_root`); None if neither
    exists. Looks only on this machine."""
    env = os.environ.get(RESULTS_ENV, "").strip()
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    root = book_root(start)
    if root is not None and (root / RESULTS).is_dir():
        return root / RESULTS
    return None


def cache_dir() -> Path:
    """Where fetched repositories are kept: ``$PSGD_CACHE`` or ``~/.cache/psgdlib``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "psgdlib"


def _slug(repo: Repository) -> str:
    name = re.sub(r"^[a-z+]+://", "", repo.url)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[-80:]
    return f"{name}-{repo.commit[:12] if repo.commit else repo.branch}"


def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def fetch_repository(repo: Repository, cache: str | os.PathLike | None = None, quiet: bool = False) -> Path:
    """A shallow clone of ``repo`` (its ``commit`` when known, else the tip of its branch) in
    the cache folder; reused when it is already there. Returns the clone's folder."""
    if shutil.which("git") is None:
        raise RuntimeError("fetching the stored results needs git (Colab has it); or set "
                           f"${RESULTS_ENV} to a results/ folder")
    dest = Path(cache) if cache is not None else cache_dir()
    dest = dest / "repos" / _slug(repo)
    if (dest / ".git").is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        if not quiet:
            print(f"fetching the stored results: shallow clone of {repo.spec}"
                  + (f" at {repo.commit[:12]}" if repo.commit else "") + " ...", flush=True)
        r = _git("clone", "-q", "--depth", "1", "--branch", repo.branch, repo.url, str(tmp / "repo"))
        if r.returncode != 0:
            raise RuntimeError(f"git clone {repo.url} (branch {repo.branch}) failed: {r.stderr.strip()}")
        work = tmp / "repo"
        if repo.commit:
            head = _git("rev-parse", "HEAD", cwd=work).stdout.strip()
            if head != repo.commit:
                ok = (_git("fetch", "-q", "--depth", "1", "origin", repo.commit, cwd=work).returncode == 0
                      and _git("checkout", "-q", "--detach", repo.commit, cwd=work).returncode == 0)
                if not ok and not quiet:
                    print(f"note: commit {repo.commit[:12]} is not on {repo.branch} any more; using "
                          f"its tip {head[:12]}", flush=True)
        try:
            os.replace(work, dest)
        except OSError:  # another process got there first
            if not (dest / ".git").is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def results_dir(repo: Repository | str | None = None, *, start: str | os.PathLike | None = None,
                cache: str | os.PathLike | None = None, fetch: bool = True, quiet: bool = False) -> Path | None:
    """The folder of stored results: on this machine (:func:`find_results`), else, when
    ``fetch``, ``results/`` of a shallow clone of ``repo`` (default: :func:`repository`).
    Returns None only when ``fetch`` is false and nothing is found here."""
    found = find_results(start)
    if found is not None:
        if not quiet:
            print(f"stored results: {found}")
        return found
    if not fetch:
        return None
    if isinstance(repo, str):
        repo = Repository.parse(repo)
    repo = repo if repo is not None else repository(start)
    path = fetch_repository(repo, cache=cache, quiet=quiet) / RESULTS
    if not path.is_dir():
        raise FileNotFoundError(f"{repo.spec} has no {RESULTS}/ folder")
    if not quiet:
        print(f"stored results: {path} (from {repo.spec})")
    return path


# --------------------------------------------------------------------------- verdicts
def _failed_total(cell: str) -> tuple[int, int]:
    m = re.match(r"\s*(\d+)\s*/\s*(\d+)", cell)
    if not m:
        raise ValueError(f"not a failed/total cell: {cell!r}")
    return int(m[1]), int(m[2])


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _range(values: Iterable[float], fmt=_pct) -> str:
    v = sorted(values)
    return fmt(v[0]) if len(v) == 1 or fmt(v[0]) == fmt(v[-1]) else f"{fmt(v[0])}-{fmt(v[-1])}"


def _why_unsolved(g, chance: float, budget: int) -> str:
    """How the unsolved runs of one cell ended, from their stored outcome."""
    parts = []
    nan = g[g["final_test_error"].isna() | (g["stopped"] == "non_finite")]
    if len(nan):
        parts.append(f"{len(nan)} diverged (non-finite loss)")
    rest = g.drop(nan.index)
    near = rest[rest["final_test_error"] >= 0.8 * chance]
    below = rest.drop(near.index)
    if len(near):
        parts.append(f"{len(near)} ended near chance ({_range(near['final_test_error'])} wrong; "
                     f"chance {_pct(chance)})")
    if len(below):
        parts.append(f"{len(below)} ended between chance and the 1% threshold "
                     f"({_range(below['final_test_error'])} wrong)")
    cut = g[g["budget"] < budget]
    if len(cut):
        parts.append(f"{len(cut)} stopped by a time limit before {budget:,} iterations "
                     f"(at {_range(cut['budget'], lambda b: f'{int(b):,}')})")
    return "; ".join(parts)


def _setting(lr: float, clip) -> str:
    clip = None if clip is None or clip != clip else clip  # NaN: no clipping
    return f"step {lr:g}" + (f", P g clipped at {clip:g}" if clip else ", no clipping")


def table1_verdict(runs, reruns=None, optimizer: str = "psgd_kron", model: str = "rnn",
                   paper: Mapping[str, Mapping[int, str]] | None = None):
    """Each stored Table I cell against the paper's.

    One row per (problem, T): failed and total runs here and in the paper, the ``verdict``
    (``reproduced``: no larger a share of failed runs than the paper's; ``not reproduced``:
    a larger one), the ``setting`` of the runs (step size, clipping) and ``why`` a cell is not
    reproduced, from the stored runs: how its unsolved runs ended and, with ``reruns`` (e.g.
    ``results/step_size``), how many of their seeds a rerun with other settings solved
    (``reruns``, ``reruns solved``, ``rerun setting``)."""
    import pandas as pd
    from . import tasks
    from .experiments import PAPER_BUDGET, PAPER_TABLE1, _paper_order
    paper = PAPER_TABLE1 if paper is None else paper
    d = runs[(runs["optimizer"] == optimizer) & (runs["model"] == model)]
    rows = []
    for p in _paper_order(d["problem"]):
        for T in sorted(set(d.loc[d["problem"] == p, "T"])):
            g = d[(d["problem"] == p) & (d["T"] == T)]
            failed, total = int((~g["solved"]).sum()), len(g)
            cell = paper.get(p, {}).get(int(T))
            p_failed, p_total = _failed_total(cell) if cell else (None, None)
            row = {"problem": p, "T": int(T), "failed": failed, "runs": total,
                   "paper failed": p_failed, "paper runs": p_total,
                   "setting": "; ".join(sorted({_setting(lr, c) for lr, c in zip(g["lr"], g["clip"])})),
                   "verdict": "reproduced", "why": "", "reruns": 0, "reruns solved": 0, "rerun setting": ""}
            if cell is None:
                row["verdict"] = "not in the paper"
            elif failed * p_total > p_failed * total:
                unsolved = g[~g["solved"]]
                row["verdict"] = "not reproduced"
                row["why"] = _why_unsolved(unsolved, tasks.get(p, int(T)).chance_wrong, PAPER_BUDGET)
                if reruns is not None and len(reruns):
                    r = reruns[(reruns["problem"] == p) & (reruns["T"] == T) & reruns["seed"].isin(unsolved["seed"])]
                    if len(r):
                        row["reruns"], row["reruns solved"] = len(r), int(r["solved"].sum())
                        row["rerun setting"] = "; ".join(sorted({_setting(lr, c) for lr, c in zip(r["lr"], r["clip"])}))
                        row["why"] += (f"; a rerun of {len(r)} of these seeds ({row['rerun setting']}) "
                                       f"solved {row['reruns solved']} of them")
            rows.append(row)
    return pd.DataFrame(rows, columns=["problem", "T", "failed", "runs", "paper failed", "paper runs", "setting",
                                       "verdict", "why", "reruns", "reruns solved", "rerun setting"])


def table1_verdict_markdown(verdict, names: Mapping[str, str] | None = None) -> str:
    """The verdict of :func:`table1_verdict` in words (Markdown)."""
    from .experiments import PAPER_BUDGET
    names = names or {}
    name = lambda p: names.get(p, p)  # noqa: E731
    ok = verdict[verdict["verdict"] == "reproduced"]
    bad = verdict[verdict["verdict"] == "not reproduced"]
    settings = sorted(set(verdict["setting"]))
    head = (f"**Table I, verdict from the stored runs** ({'; '.join(settings)}, the paper's settings): "
            f"{len(ok)} of {len(ok) + len(bad)} cells reproduce the paper (no larger a share of failed "
            f"runs than the paper's), {len(bad)} do not.")
    out = [head]
    if len(ok):
        by_problem = ok.groupby("problem", sort=False)["T"].apply(lambda s: ", ".join(str(t) for t in s))
        out.append("Reproduced: " + "; ".join(f"{name(p)} (T = {ts})" for p, ts in by_problem.items()) + ".")
    if len(bad):
        out.append("")
        for _, r in bad.iterrows():
            out.append(f"* Not reproduced: {name(r['problem'])} at T = {r['T']}, {r['failed']}/{r['runs']} failed "
                       f"against the paper's {r['paper failed']}/{r['paper runs']}. Of the unsolved runs, {r['why']}.")
        rescued = bad[(bad["reruns"] > 0) & (bad["reruns solved"] == bad["reruns"])]
        if len(rescued):
            out.append("")
            out.append("Where every rerun solved (" + ", ".join(f"{name(p)} T = {T}" for p, T in
                                                               zip(rescued["problem"], rescued["T"]))
                       + f"), the step size, not the method, limits the cell within {PAPER_BUDGET:,} iterations: "
                       f"with {'; '.join(sorted(set(rescued['rerun setting'])))}, PSGD solves it. The other cells "
                       "not reproduced have no such rerun, or their reruns did not solve.")
    return "\n".join(out)


def largest_rises(curves, column: str = "train_loss", by: Iterable[str] = ("optimizer", "seed")):
    """Per run of ``curves`` (one row per evaluation): the largest factor by which ``column``
    rose from one evaluation to the next, and where. A factor above 2 is what the book calls a
    jump (an exploding step that threw the run out)."""
    import pandas as pd
    rows = []
    for key, g in curves.sort_values("iteration").groupby(list(by)):
        v, it = g[column].to_numpy(dtype=float), g["iteration"].to_numpy()
        if len(v) < 2:
            continue
        ratio = v[1:] / v[:-1]
        k = int(ratio.argmax()) + 1
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "iterations": int(it[-1]),
                     "rise": float(ratio[k - 1]), "from_iteration": int(it[k - 1]), "to_iteration": int(it[k]),
                     "before": float(v[k - 1]), "after": float(v[k])})
    out = pd.DataFrame(rows)
    if len(out):
        out["jump"] = out["rise"] > 2
    return out


def clipping_verdict(unclipped, clipped=None, fraction: float = 0.5, chance: float | None = None) -> str:
    """What the stored paper-literal runs of Experiment 1 (PSGD, ``P g`` unclipped) say about
    clipping, in words: did any of them meet an exploding step (:func:`largest_rises`), and,
    with ``clipped`` (curves of the same seeds with ``P g`` clipped), how many of each left the
    plateau (:func:`psgdlib.fig1.plateau_exit`) within the unclipped runs' iterations."""
    from . import fig1
    chance = fig1.CHANCE_MSE if chance is None else chance
    rises = largest_rises(unclipped)
    if rises.empty:
        return "No stored paper-literal runs."
    n, jumps = len(rises), rises[rises["jump"]]
    budget = int(rises["iterations"].max())
    out = [f"{n} stored paper-literal run{'s' * (n > 1)} (PSGD unclipped, up to {budget:,} iterations):"]
    if jumps.empty:
        out.append(f"none met an exploding step; the largest rise of the training MSE from one evaluation "
                   f"to the next was {rises['rise'].max():.2f}x (a jump would be more than 2x).")
    else:
        out.append(f"{len(jumps)} of them jumped: " + "; ".join(
            f"seed {int(r.seed)} rose {r.rise:.1f}x at iteration {r.to_iteration:,} "
            f"({r.before:.3g} -> {r.after:.3g})" for r in jumps.itertuples()) + ".")
    if clipped is not None and len(clipped):
        keys = rises[["optimizer", "seed", "iterations"]]
        twins = clipped.merge(keys, on=["optimizer", "seed"])
        twins = twins[twins["iteration"] <= twins["iterations"]].drop(columns="iterations")
        if len(twins):
            ex_u = fig1.plateau_exit(unclipped, fraction, chance)
            ex_c = fig1.plateau_exit(twins, fraction, chance)
            def told(ex, what):
                left = ex[ex["left_plateau"]]
                where = (f" (at iteration {_range(left['iteration'], lambda v: f'{int(v):,}')})" if len(left) else "")
                return f"{len(left)} of {len(ex)} {what}{where}"
            out.append(f"Within those iterations {told(ex_u, 'unclipped runs')} left the plateau (test MSE below "
                       f"{fraction:g} times that of the constant prediction), against "
                       f"{told(ex_c, 'clipped runs from the same seeds and minibatches')}.")
            a = ex_u["left_plateau"].sum() / len(ex_u)
            b = ex_c["left_plateau"].sum() / len(ex_c)
            if jumps.empty and a >= b:
                out.append("These runs give no evidence that PSGD's step needs clipping, and clipping did "
                           "not make more of them leave the plateau.")
            elif jumps.empty:
                out.append("No run jumped, but the clipped runs left the plateau more often.")
            else:
                out.append("Clipping P g at norm 1 rules such steps out.")
    return " ".join(out)
