"""Checks of the Jupyter Book: configuration, table of contents, notebooks, citations, and
prose that must agree with the numbers the chapters compute.

Nothing here executes a notebook (``pytest --nbval-lax notebooks`` does that, and the
notebooks assert the claims their prose makes) or builds the whole book
(``scripts/build_book.sh``); the static tests catch, in milliseconds, the mistakes that would
make ``jupyter-book build -W -n --keep-going .`` fail or the Colab button break. One test
builds a two-page book and checks in headless Chromium that its math renders with no network
(``scripts/check_offline_math.sh``; skipped only where Chromium is not installed).
The Colab-style run of the chapters' first cells is in tests/test_resources.py.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "_config.yml"
TOC = ROOT / "_toc.yml"
NOTEBOOK_DIR = ROOT / "notebooks"
BOOK_DIR = ROOT / "book"

CHAPTERS = [
    "notebooks/01_criterion",
    "notebooks/02_addition_sgd_vs_psgd",
    "notebooks/03_pathological_suite",
    "notebooks/04_mnist_2d_rnn",
]
PAGES = ["book/intro", "book/notation", "book/results", "book/references"]

# `%pip install -q "psgdlib[extra] @ git+https://github.com/owner/repo@branch"` (or !pip)
INSTALL_RE = re.compile(
    r"""^\s*[%!]pip\s+install\b[^\n]*?["']?psgdlib(?:\[[\w,\s-]+\])?\s*@\s*git\+"""
    r"""(?P<url>https?://[^@"'\s]+?)(?:\.git)?@(?P<branch>[^"'\s#]+)""",
    re.MULTILINE,
)
CITE_RE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
BIB_KEY_RE = re.compile(r"^\s*@(?!comment|string|preamble)\w+\s*\{\s*([^,\s]+)\s*,", re.MULTILINE | re.IGNORECASE)
NEWCOMMAND_RE = re.compile(r"\\newcommand\{\\(\w+)\}\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")
DISPLAY_MATH_RE = re.compile(r"\$\$(.+?)\$\$", re.DOTALL)


# --------------------------------------------------------------------------- helpers
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


def sphinx_config() -> dict:
    return (config().get("sphinx") or {}).get("config") or {}


def toc() -> dict:
    return yaml.safe_load(TOC.read_text(encoding="utf-8"))


def toc_files() -> list[str]:
    """Every document the TOC lists (root first), in order, as written (no suffix)."""
    data = toc()
    out = [data["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(data)
    return out


def resolve(doc: str) -> Path | None:
    """The file behind a TOC entry (``.md`` or ``.ipynb``), or None."""
    path = ROOT / doc
    if path.suffix in (".md", ".ipynb") and path.is_file():
        return path
    for suffix in (".ipynb", ".md"):
        if path.with_suffix(suffix).is_file():
            return path.with_suffix(suffix)
    return None


def notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOK_DIR.glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def load_nb(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def first_code_cell(nb: dict) -> str:
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            return cell_source(cell)
    return ""


def markdown_texts() -> list[tuple[str, str]]:
    """(name, text) of every book page and every markdown cell of every notebook."""
    out = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in sorted(BOOK_DIR.glob("*.md"))]
    for path in notebooks():
        for i, cell in enumerate(load_nb(path).get("cells", [])):
            if cell.get("cell_type") == "markdown":
                out.append((f"{path.relative_to(ROOT)} cell {i}", cell_source(cell)))
    return out


def bib_keys() -> set[str]:
    files = config().get("bibtex_bibfiles") or []
    keys: set[str] = set()
    for f in files:
        keys |= set(BIB_KEY_RE.findall((ROOT / f).read_text(encoding="utf-8")))
    return keys


def repository() -> tuple[str, str]:
    repo = config()["repository"]
    return repo["url"].rstrip("/").removesuffix(".git"), str(repo["branch"])


# --------------------------------------------------------------------------- _config.yml
def test_config_parses_and_names_the_repository():
    cfg = config()
    assert cfg.get("title") and cfg.get("author") == "psgdlib authors"
    url, branch = repository()
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url), url
    assert branch
    # the book sits at the repository root: no path_to_book, else Colab URLs get a "./" segment
    assert cfg["repository"].get("path_to_book") in (None, "")


def test_config_has_colab_launch_button():
    launch = config().get("launch_buttons") or {}
    assert launch.get("colab_url") == "https://colab.research.google.com"


def test_config_makes_no_network_requests():
    """Offline build: no intersphinx inventories to fetch, no Binder/Thebe."""
    sc = sphinx_config()
    assert not sc.get("intersphinx_mapping"), "intersphinx mappings need the network at build time"
    assert "sphinx.ext.intersphinx" not in ((config().get("sphinx") or {}).get("extra_extensions") or [])
    launch = config().get("launch_buttons") or {}
    assert not launch.get("thebe")


def test_config_execution_is_cached_and_errors_fail_the_build():
    cfg, sc = config(), sphinx_config()
    execute = cfg.get("execute") or {}
    assert execute.get("execute_notebooks") == "cache"
    raises = sc.get("nb_execution_raise_on_error") is True or execute.get("raise_on_error") is True
    assert raises, "set sphinx.config.nb_execution_raise_on_error (or execute.raise_on_error) to true"
    assert execute.get("allow_errors", False) is False
    assert sc.get("nb_execution_allow_errors", False) is False
    timeout = sc.get("nb_execution_timeout", execute.get("timeout", 30))
    assert timeout == -1 or timeout >= 600, f"cell timeout {timeout}s is too short for the cpu profile"


def test_config_bibliography_and_excludes():
    cfg = config()
    bibs = cfg.get("bibtex_bibfiles") or []
    assert "book/references.bib" in bibs
    for f in bibs:
        assert (ROOT / f).is_file(), f
    excludes = set(cfg.get("exclude_patterns") or [])
    for needed in ("_build", "results", "benchmarks", "tests", "README.md", ".ci"):
        assert needed in excludes, f"exclude_patterns lacks {needed!r}"


def test_mathjax_macros_match_notebook_definitions():
    """Macros a notebook defines for Jupyter/Colab (\\newcommand) equal the book's."""
    macros = ((sphinx_config().get("mathjax3_config") or {}).get("tex") or {}).get("macros") or {}
    for path in notebooks():
        for cell in load_nb(path).get("cells", []):
            if cell.get("cell_type") != "markdown":
                continue
            for name, body in NEWCOMMAND_RE.findall(cell_source(cell)):
                assert name in macros, f"{path.name}: \\{name} is not defined in _config.yml"
                defined = macros[name][0] if isinstance(macros[name], list) else macros[name]
                assert defined == body, f"{path.name}: \\{name} is {body!r} here, {defined!r} in _config.yml"


# --------------------------------------------------------------------------- _toc.yml
def test_toc_lists_the_book_in_order():
    files = toc_files()
    assert toc()["format"] == "jb-book"
    assert files[0] == "book/intro", "the intro must be the root"
    expected = ["book/intro", "book/notation", *CHAPTERS, "book/results", "book/references"]
    assert [f.removesuffix(".ipynb").removesuffix(".md") for f in files] == expected


def test_toc_files_exist():
    """Every document listed in _toc.yml exists (fails until all four chapters are written)."""
    missing = [f for f in toc_files() if resolve(f) is None]
    assert not missing, f"listed in _toc.yml but missing: {missing}"


def test_book_pages_exist():
    for page in PAGES:
        assert resolve(page) is not None, page


def test_every_notebook_is_in_the_toc():
    listed = {f.removesuffix(".ipynb") for f in toc_files()}
    orphans = [p.name for p in notebooks() if f"notebooks/{p.stem}" not in listed]
    assert not orphans, f"notebooks not in _toc.yml (only_build_toc_files skips them): {orphans}"


# --------------------------------------------------------------------------- notebooks
@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_first_cell_installs_from_the_book_repository(path):
    src = first_code_cell(load_nb(path))
    match = INSTALL_RE.search(src)
    assert match, f"{path.name}: the first code cell has no '%pip install \"psgdlib @ git+URL@BRANCH\"' line"
    url, branch = repository()
    assert match["url"].rstrip("/") == url, f"{path.name}: installs from {match['url']}, _config.yml says {url}"
    assert match["branch"] == branch, f"{path.name}: installs branch {match['branch']}, _config.yml says {branch}"
    assert re.search(r"^\s*import psgdlib\b", src, re.MULTILINE) and "except ImportError" in src, \
        f"{path.name}: install only when psgdlib is missing (try: import psgdlib / except ImportError)"
    assert "setup_notebook(" in src, f"{path.name}: the first code cell must call setup_notebook"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_is_saved_without_outputs(path):
    dirty = [i for i, cell in enumerate(load_nb(path).get("cells", []))
             if cell.get("cell_type") == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: code cells {dirty} hold outputs; clear them (the book executes the notebook)"


def test_there_are_notebooks():
    assert (NOTEBOOK_DIR / "01_criterion.ipynb").is_file()


# --------------------------------------------------------------------------- citations, math
def test_every_citation_is_in_the_bibliography():
    keys = bib_keys()
    assert {"li2016rnn", "li2015psgd"} <= keys
    missing = []
    for name, text in markdown_texts():
        for group in CITE_RE.findall(text):
            missing += [f"{name}: {k.strip()}" for k in group.split(",") if k.strip() not in keys]
    assert not missing, "cited but not in references.bib: " + "; ".join(missing)


def test_bibliography_keys_are_unique():
    for f in config().get("bibtex_bibfiles") or []:
        found = BIB_KEY_RE.findall((ROOT / f).read_text(encoding="utf-8"))
        dupes = sorted({k for k in found if found.count(k) > 1})
        assert not dupes, f"{f}: duplicate keys {dupes}"


def test_tagged_display_math_has_no_line_breaks():
    """Sphinx wraps $$...$$ holding '\\\\' in a split environment, where MathJax rejects \\tag."""
    bad = []
    for name, text in markdown_texts():
        for block in DISPLAY_MATH_RE.findall(text):
            if r"\tag" in block and "\\\\" in block:
                bad.append(name)
    assert not bad, f"use \\begin{{equation*}}...\\end{{equation*}} for tagged multi-line math in: {bad}"


# --------------------------------------------------------------------------- one repository setting
STORED_RESULT_CHAPTERS = ["02_addition_sgd_vs_psgd", "03_pathological_suite", "04_mnist_2d_rnn"]


def test_repository_url_lives_in_config_only():
    """_config.yml holds the setting; the install lines are written from it by
    scripts/sync_repository.py; psgdlib reads it (no copy); no other file types it."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import sync_repository
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert sync_repository.main(["--check"]) == 0, "run: python scripts/sync_repository.py"
    from psgdlib import resources
    url, branch = repository()
    assert resources.config_repository(ROOT) == resources.Repository(url, branch)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True).stdout.split() if shutil.which("git") else []
    typed = []
    for f in files:
        if f.startswith(("results/", "notebooks/")) or f == "_config.yml" or not (ROOT / f).is_file():
            continue
        try:
            if url in (ROOT / f).read_text(encoding="utf-8"):
                typed.append(f)
        except UnicodeDecodeError:
            continue
    assert not typed, f"the repository URL is typed in {typed}; read it from _config.yml (psgdlib.resources)"


@pytest.mark.parametrize("name", STORED_RESULT_CHAPTERS)
def test_first_cell_gets_the_stored_results(name):
    """The chapters with stored runs find them in the first cell (results_dir: the checkout's
    results/, else a clone of the repository psgdlib came from) and look nowhere else."""
    nb = load_nb(NOTEBOOK_DIR / f"{name}.ipynb")
    assert re.search(r"^RESULTS = results_dir\(\)", first_code_cell(nb), re.MULTILINE), name
    for i, cell in enumerate(nb["cells"]):
        src = cell_source(cell)
        if cell["cell_type"] == "code":
            assert not re.search(r"Path\.cwd\(\)\.parents|\"\.\./results|'\.\./results|find_repo_root", src), \
                f"{name} cell {i}: looks for results/ itself; use RESULTS from the first cell"
    tagged = [cell_source(c) for c in nb["cells"] if "stored-results" in c.get("metadata", {}).get("tags", [])]
    assert any("RESULTS /" in s for s in tagged), f"{name}: tag the cells that read stored runs 'stored-results'"


def test_results_page_uses_the_same_lookup():
    assert "resources.results_dir(" in (BOOK_DIR / "results.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- launch buttons, citations, math
def test_launch_buttons_only_on_notebook_pages():
    cfg = config()
    ext = (cfg.get("sphinx") or {}).get("local_extensions") or {}
    assert ext.get("notebook_launch_buttons") == "book/_ext"
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        import notebook_launch_buttons as nlb
    finally:
        sys.path.remove(str(ROOT / "book" / "_ext"))

    class Env:
        all_docs = {"book/results": 0, "notebooks/01_criterion": 0}

        def doc2path(self, doc):
            return ROOT / (doc + (".md" if doc.startswith("book/") else ".ipynb"))

    class App:
        env = Env()

    for page, kept in (("book/results", False), ("notebooks/01_criterion", True)):
        ctx = {"header_buttons": [{"label": nlb.LABEL}, {"label": "download-buttons"}]}
        nlb._only_on_notebooks(App(), page, "page.html", ctx, None)
        assert ({"label": nlb.LABEL} in ctx["header_buttons"]) is kept, page
        assert {"label": "download-buttons"} in ctx["header_buttons"]


def test_citations_render_author_year():
    """Jupyter Book passes bibtex_reference_style only from sphinx.config; a top-level key is
    silently ignored (the book rendered [Li16] then). Plain {cite} is written {cite:p}."""
    assert sphinx_config().get("bibtex_reference_style") == "author_year"
    assert "bibtex_reference_style" not in config(), "put bibtex_reference_style under sphinx: config:"
    bare = [name for name, text in markdown_texts() if re.search(r"\{cite\}`", text)]
    assert not bare, f"use {{cite:p}} or {{cite:t}} instead of {{cite}} in {bare}"


def test_mathjax_is_served_from_the_site():
    sc = sphinx_config()
    path = sc.get("mathjax_path", "")
    assert path and "://" not in path and not path.startswith("/"), f"mathjax_path {path!r} is not local"
    static = sc.get("html_static_path") or []
    assert "_build/_offline_static" in static
    build = (ROOT / "scripts" / "build_book.sh").read_text()
    assert "scripts/fetch_mathjax.sh _build/_offline_static/" + Path(path).parent.as_posix() in build
    clean = build.index("jupyter-book clean")
    assert clean < build.index("bash scripts/fetch_mathjax.sh") < build.index("jupyter-book build")


def _mini_book(tmp: Path) -> Path:
    """The notation page (every macro of the book) and the references, with the book's own
    _config.yml and extension: a book that builds in seconds."""
    book = tmp / "book"
    (book / "book").mkdir(parents=True)
    shutil.copy(CONFIG, book / "_config.yml")
    for f in ("notation.md", "references.md", "references.bib"):
        shutil.copy(BOOK_DIR / f, book / "book" / f)
    shutil.copytree(BOOK_DIR / "_ext", book / "book" / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    (book / "_toc.yml").write_text("format: jb-book\nroot: book/notation\nchapters:\n  - file: book/references\n")
    return book


def test_math_renders_offline_in_headless_chromium(tmp_path):
    """Build a small book with the real configuration, serve it with no network but
    127.0.0.1, and check in headless Chromium that MathJax typeset every formula (and that the
    check fails for a page that loads MathJax from a CDN)."""
    if not any(shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")):
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    jb = shutil.which("jupyter-book") or str(Path(sys.executable).with_name("jupyter-book"))
    book = _mini_book(tmp_path)
    env = {**os.environ, "PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = lambda *cmd: subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)  # noqa: E731
    r = run("bash", "scripts/fetch_mathjax.sh", str(book / "_build" / "_offline_static" / "mathjax"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(jb, "build", "-W", "-n", "--keep-going", str(book))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    html = book / "_build" / "html"
    page = (html / "book" / "notation.html").read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in page and "_static/mathjax/tex-mml-chtml.js" in page
    words = re.sub(r"<[^>]+>", "", page)
    assert re.search(r"\[Li, 2016\]", words) and "[Li16]" not in words, "citations not author_year"
    out = tmp_path / "check"
    r = run("bash", "scripts/check_offline_math.sh", str(html), str(out), "book/notation.html")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^ok book/notation\.html: [1-9]\d* mjx-container", r.stdout, re.MULTILINE), r.stdout
    assert (out / "book_notation.png").stat().st_size > 10_000
    # control: the same page with MathJax from the CDN must fail (no network, no typesetting)
    cdn = page.replace('src="../_static/mathjax/tex-mml-chtml.js',
                       'src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js')
    (html / "book" / "cdn.html").write_text(cdn, encoding="utf-8")
    r = run("bash", "scripts/check_offline_math.sh", str(html), str(out), "book/cdn.html")
    assert r.returncode == 1 and "FAIL book/cdn.html" in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------- prose against numbers
def _cells(name):
    return load_nb(NOTEBOOK_DIR / f"{name}.ipynb")["cells"]


def _section(cells, heading):
    """Index of the markdown cell that starts with ``heading``."""
    hits = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
            and re.search(rf"^{re.escape(heading)}\s*$", cell_source(c), re.MULTILINE)]
    assert len(hits) == 1, f"{heading!r} found {len(hits)} times"
    return hits[0]


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_exercises_have_a_heading_and_every_solution_a_question(path):
    """One '## Exercises' heading after the summary, exercises numbered 1, 2, ... in order,
    and each Solution dropdown right after its question (no orphan solutions)."""
    cells = load_nb(path)["cells"]
    summary, exercises = _section(cells, "## Summary"), _section(cells, "## Exercises")
    assert summary <= exercises
    md = [(i, cell_source(c)) for i, c in enumerate(cells) if c["cell_type"] == "markdown"]
    text = "\n".join(f"<<cell {i}>>\n{s}" for i, s in md if i >= exercises)
    before = "\n".join(s for i, s in md if i < exercises)
    assert "{admonition} Solution" not in before, f"{path.name}: a Solution before '## Exercises'"
    questions = [int(n) for n in re.findall(r"^\*\*(\d+)\.", text, re.MULTILINE)]
    assert questions == list(range(1, len(questions) + 1)) and questions, f"{path.name}: exercises {questions}"
    # between two questions (and after the last) exactly one Solution
    parts = re.split(r"^\*\*\d+\.", text, flags=re.MULTILINE)
    assert "{admonition} Solution" not in parts[0], f"{path.name}: a Solution before exercise 1"
    for k, part in enumerate(parts[1:], 1):
        assert part.count("{admonition} Solution") == 1, f"{path.name}: exercise {k} has {part.count('{admonition} Solution')} solutions"


def test_storage_counts_are_what_the_code_stores():
    """Dense keeps Q as a full n x n matrix, Kron keeps Q1, Q2 as full matrices: the prose
    says n^2 and m^2 + n^2 numbers stored (n(n+1)/2 only for the numbers fitted)."""
    from psgdlib import Dense, Kron
    assert Dense(7).Q.numel() == 49
    k = Kron(3, 5)
    assert k.Q1.numel() + k.Q2.numel() == 3 * 3 + 5 * 5
    bad = []
    for name, text in markdown_texts():
        flat = " ".join(text.split())
        if re.search(r"n\(n\+1\)/2\$? numbers to store|numbers to learn instead of|128 numbers|\b2080\b", flat):
            bad.append(name)
    assert not bad, f"storage counts that the code does not store: {bad}"
    ch2 = " ".join(cell_source(c) for c in _cells("02_addition_sgd_vs_psgd") if c["cell_type"] == "markdown")
    assert "$n^2$ numbers to store" in " ".join(ch2.split())


def test_chapter2_clipping_text_says_what_the_stored_runs_show():
    from psgdlib import fig1, resources
    stored = fig1.load_curves(ROOT / "results" / "fig1_noclip")
    rises = resources.largest_rises(stored)
    cells = _cells("02_addition_sgd_vs_psgd")
    md = " ".join(" ".join(cell_source(c).split()) for c in cells if c["cell_type"] == "markdown")
    if len(rises) and not rises["jump"].any():
        claims = re.findall(r"[^.]*(?:must be clipped|is clipped too|needs? (?:the )?clipping because|"
                            r"exploding steps? (?:throws?|threw)|can throw the weights out)[^.]*\.", md)
        assert not claims, f"chapter 2 claims what its stored runs do not show: {claims}"
    code = [cell_source(c) for c in cells if c["cell_type"] == "code"]
    assert any("resources.clipping_verdict(" in s for s in code)
    assert any("resources.largest_rises(fig1.curves_from_result(r_noclip))" in s for s in code)


@pytest.mark.parametrize("name, calls", [
    ("02_addition_sgd_vs_psgd", ["fig1.plateau_exit(live)", "resources.clipping_verdict("]),
    ("03_pathological_suite", ["resources.table1_verdict(psgd_runs, reruns)", "live_verdict()"]),
    ("04_mnist_2d_rnn", ["live_verdict()", "stored_verdict()"]),
])
def test_summary_results_are_generated_from_the_data(name, calls):
    """The results a summary states are an output cell computed from the runs, right after
    the summary's text."""
    cells = _cells(name)
    i = _section(cells, "## Summary")
    gen = cells[i + 1]
    assert gen["cell_type"] == "code" and "remove-input" in gen.get("metadata", {}).get("tags", [])
    src = cell_source(gen)
    assert "display(Markdown(" in src and all(c in src for c in calls), src


def _allowed_numbers(name):
    """Numbers a chapter's summary may type: equation numbers, small counts, and the settings
    and constants the code defines (computed here, not typed)."""
    import torch
    from psgdlib import experiments, fig1, mnist, pairs, train
    allowed = {str(k) for k in range(11)}
    if name.startswith("02"):
        allowed |= {str(fig1.n_parameters()), "0.01", "24", str(round(-math.log2(pairs.default_fd_scale(torch.float32)))),
                    str(round(-math.log2(pairs.default_fd_scale(torch.float64))))}
    if name.startswith("03"):
        n_test = 10_000
        allowed |= {f"{n_test:,}", f"{round(100 * train.SOLVED)}%", "10", str(round(math.log10(experiments.PAPER_BUDGET))),
                    "8"}
    if name.startswith("04"):
        m = mnist.make_model(seed=0)
        allowed |= {f"{m.num_parameters():,}", "15", "64", "8", "4"}
    return allowed


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_summaries_type_no_results(path):
    """A number typed in a summary is a setting or a constant of the code, never a measured
    result (those come from the generated cell after it)."""
    cells = load_nb(path)["cells"]
    text = cell_source(cells[_section(cells, "## Summary")])
    text = re.sub(r"\(\d\)", "", text)                      # equation numbers (1)..(5)
    found = re.findall(r"(?<![\w.^{-])(\d[\d,]*(?:\.\d+)?%?)", text)
    allowed = _allowed_numbers(path.name)
    typed = sorted({n.rstrip(",") for n in found} - allowed)
    assert not typed, f"{path.name}: the summary types {typed}; generate results from the runs"
