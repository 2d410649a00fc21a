"""Sphinx extension: launch buttons (Colab) only on pages whose source is a Jupyter notebook.

sphinx-book-theme adds its launch buttons to every page that myst-nb executes, including
MyST-markdown pages such as book/results.md, whose Colab link would point at a ``.md`` file
that Colab cannot open. This drops the button group from every page that is not an
``.ipynb`` file. Registered in _config.yml (``sphinx: local_extensions``).
"""
from __future__ import annotations

from pathlib import Path

LABEL = "launch-buttons"   # the label sphinx-book-theme gives its launch button group


def _only_on_notebooks(app, pagename, templatename, context, doctree):
    if pagename not in app.env.all_docs or Path(app.env.doc2path(pagename)).suffix == ".ipynb":
        return
    buttons = context.get("header_buttons")
    if buttons:
        context["header_buttons"] = [b for b in buttons if b.get("label") != LABEL]


def setup(app):
    # after sphinx-book-theme's add_launch_buttons (priority 501), before the page is rendered
    app.connect("html-page-context", _only_on_notebooks, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
