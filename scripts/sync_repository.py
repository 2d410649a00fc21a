#!/usr/bin/env python3
"""Write the repository setting of _config.yml into the install line of every chapter.

The repository URL and branch live in one place, the ``repository:`` block of ``_config.yml``
(Jupyter Book builds the Colab buttons from it; psgdlib.resources reads it in a checkout). A
notebook opened on Colab has nothing but itself, so its first cell must name the repository to
install psgdlib from; this script writes that line from _config.yml:

    python scripts/sync_repository.py          # rewrite the notebooks' install lines
    python scripts/sync_repository.py --check  # exit 1 if a notebook differs (tests/test_book.py)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from psgdlib.resources import config_repository  # noqa: E402

# %pip install -q "psgdlib[mnist] @ git+https://github.com/owner/repo@branch"
INSTALL = re.compile(r"""(?P<head>[%!]pip\s+install\b[^\n"']*["']psgdlib(?P<extras>\[[\w,\s-]+\])?\s*@\s*git\+)"""
                     r"""(?P<url>[^@"'\s]+)@(?P<branch>[^"'\s#]+)(?P<tail>["'])""")


def sync(path: Path, url: str, branch: str, write: bool) -> bool:
    """True if ``path`` already installs from ``url@branch`` (after writing, when ``write``)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    changed = False
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = cell["source"] if isinstance(cell["source"], list) else cell["source"].splitlines(True)
        new = [INSTALL.sub(lambda m: f"{m['head']}{url}@{branch}{m['tail']}", line) for line in lines]
        if new != lines:
            changed = True
            cell["source"] = new
        break  # the first code cell only
    if changed and write:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return not changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report notebooks that differ")
    args = ap.parse_args(argv)
    repo = config_repository(ROOT)
    if repo is None:
        print("_config.yml has no repository: url", file=sys.stderr)
        return 2
    bad = [p for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
           if not sync(p, repo.url, repo.branch, write=not args.check)]
    for p in bad:
        print(f"{p.relative_to(ROOT)}: {'differs from' if args.check else 'updated to'} {repo.spec}")
    return 1 if (bad and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
