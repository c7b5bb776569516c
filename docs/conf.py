"""Sphinx configuration. Figures and tables are drawn by docs/_generate/*.py at build time."""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from sphinx.application import Sphinx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE / "_intersphinx"))
os.environ.setdefault("MPLBACKEND", "Agg")

import make_inventories  # noqa: E402

import vaekit  # noqa: E402

project = "vaekit"
author = "vaekit developers"
copyright = "2026, vaekit developers"
release = vaekit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "members",  # _ext/members.py: each class renders exactly the members its directive lists
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# No default "members": a default of True replaces every directive's own :members: list.
autodoc_default_options = {"show-inheritance": True}
# Each site's inventory is a file of _intersphinx/, written by its make_inventories.py from the
# installed packages: the build links to these sites without fetching anything.
intersphinx_mapping = make_inventories.mapping()
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "alabaster"
# Wide enough for 100-character doctest lines and the benchmark tables (see _static/custom.css).
html_theme_options = {"page_width": "1180px", "body_max_width": "none"}
html_static_path = ["_static"]
exclude_patterns = ["_build", "_generate", "_intersphinx"]

# Every script in _generate/ writes figures or tables into _generated/, from the library itself.
(HERE / "_generated").mkdir(exist_ok=True)
for script in sorted((HERE / "_generate").glob("*.py")):
    runpy.run_path(str(script), run_name="__main__")


def _public_bases(app: Sphinx, name: str, obj: object, options: object, bases: list[type]) -> None:
    """Show a private base (``_WeightedLoss``) as the public bases it stands for."""
    public: list[type] = []
    pending = list(bases)
    while pending:
        base = pending.pop(0)
        if base.__name__.startswith("_"):
            pending[:0] = base.__bases__
        elif base not in public:
            public.append(base)
    bases[:] = public


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-bases", _public_bases)
