"""Static checks of the Jupyter Book: configuration, table of contents, notebooks, citations.

Nothing here executes a notebook (``pytest --nbval-lax notebooks`` does that) or builds the
book (``scripts/build_book.sh``); these tests catch, in milliseconds, the mistakes that would
make the offline ``jupyter-book build -W -n --keep-going .`` fail or the Colab button break.
"""
from __future__ import annotations

import json
import re
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
