"""The docs' Sphinx extensions and inventories, on throwaway Sphinx projects: the members check
(docs/_ext/members.py) and the offline intersphinx inventories (docs/_intersphinx/)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sphinx.application import Sphinx
from sphinx.util.docutils import docutils_namespace

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXT = DOCS / "_ext"

SAMPLE = '''
class Base:
    def forward(self) -> None:
        """The base's forward."""


class _Mixin:
    def helper(self) -> None:
        """A private base's method: a member of every class that has the base."""


class Matching(Base):
    """Lists what it renders, excludes a member, and inherits one from a public base."""

    def run(self) -> None:
        """Run."""

    def stop(self) -> None:
        """Stop."""

    def __call__(self) -> None:
        """Call."""


class Everything:
    """Asks for all its members."""

    def run(self) -> None:
        """Run."""

    def stop(self) -> None:
        """Stop."""


class Partial(_Mixin):
    """Leaves documented members out of its list."""

    def run(self) -> None:
        """Run."""

    def stop(self) -> None:
        """Stop."""


class Missing:
    """Lists a member it does not have."""

    def run(self) -> None:
        """Run."""


class Unlisted:
    """Renders a member its directive does not list.

    .. py:method:: extra_repr()

       Drawn by this docstring.
    """

    def run(self) -> None:
        """Run."""


class Undocumented:
    """Lists a member without a docstring."""

    def run(self) -> None:
        """Run."""

    def quiet(self) -> None:
        pass


class Inheriting(Base):
    """Overrides a documented method without a docstring."""

    def forward(self) -> None:
        pass
'''

CASES = {
    "matching": (
        "Matching",
        ":members: run\n   :special-members: __call__\n   :exclude-members: stop",
    ),
    "everything": ("Everything", ":members:"),
    "partial": ("Partial", ":members: run"),
    "missing": ("Missing", ":members: run, halt"),
    "unlisted": ("Unlisted", ":members: run"),
    "undocumented": ("Undocumented", ":members: run, quiet"),
    "inheriting": ("Inheriting", ":members: forward"),
}


@pytest.fixture(scope="module")
def warnings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Build a project with one page per case; return each page's warnings."""
    src = tmp_path_factory.mktemp("members")
    (src / "members_sample.py").write_text(SAMPLE)
    (src / "conf.py").write_text("extensions = ['members']\n")
    (src / "index.rst").write_text(".. toctree::\n\n   " + "\n   ".join(CASES) + "\n")
    for page, (cls, options) in CASES.items():
        (src / f"{page}.rst").write_text(
            f"{page}\n{'=' * len(page)}\n\n.. autoclass:: members_sample.{cls}\n   {options}\n"
        )
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, docutils_namespace():
        patch.syspath_prepend(str(EXT))
        patch.syspath_prepend(str(src))
        app = Sphinx(
            src, src, src / "_build", src / "_doctrees", "dummy", status=None, warning=stream
        )
        app.build()
    lines = stream.getvalue().splitlines()
    return {page: [line for line in lines if f"{page}.rst" in line] for page in CASES}


@pytest.mark.parametrize("page", ["matching", "everything"])
def test_matching_list_passes(warnings: dict[str, list[str]], page: str) -> None:
    assert warnings[page] == []


@pytest.mark.parametrize(
    ("page", "message"),
    [
        ("missing", "members_sample.Missing: listed member 'halt' does not exist"),
        ("unlisted", "members_sample.Unlisted: member 'extra_repr' is rendered but not listed"),
        (
            "undocumented",
            "members_sample.Undocumented: listed member 'quiet' is not rendered: it has no "
            "docstring",
        ),
        (
            "inheriting",
            "members_sample.Inheriting: listed member 'forward' has no docstring of its own",
        ),
    ],
)
def test_mismatch_warns(warnings: dict[str, list[str]], page: str, message: str) -> None:
    assert len(warnings[page]) == 1, warnings[page]
    assert message in warnings[page][0]
    assert "[members]" in warnings[page][0]


def test_unlisted_documented_members_warn(warnings: dict[str, list[str]]) -> None:
    assert len(warnings["partial"]) == 2, warnings["partial"]
    for name in ("helper", "stop"):
        message = f"members_sample.Partial: public member {name!r} is documented but not listed"
        assert any(message in line for line in warnings["partial"])


LINKS = {
    ":class:`torch.Tensor`": "https://pytorch.org/docs/stable/tensors.html#torch.Tensor",
    ":class:`torch.nn.modules.module.Module`": (
        "https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module"
    ),
    ":class:`torchmetrics.Metric`": (
        "https://lightning.ai/docs/torchmetrics/stable/references/metric.html#torchmetrics.Metric"
    ),
    ":class:`ignite.engine.Engine`": (
        "https://pytorch.org/ignite/generated/ignite.engine.engine.Engine.html"
        "#ignite.engine.engine.Engine"
    ),
    ":class:`lightning.pytorch.Callback`": (
        "https://lightning.ai/docs/pytorch/stable/api/lightning.pytorch.callbacks.Callback.html"
        "#lightning.pytorch.callbacks.Callback"
    ),
    ":meth:`lightning.pytorch.LightningModule.log`": (
        "https://lightning.ai/docs/pytorch/stable/api/lightning.pytorch.core.LightningModule.html"
        "#lightning.pytorch.core.LightningModule.log"
    ),
    ":class:`pathlib.Path`": "https://docs.python.org/3/library/pathlib.html#pathlib.Path",
    # a type in a signature
    ".. py:function:: f(x: torch.Generator) -> float": (
        "https://pytorch.org/docs/stable/generated/torch.Generator.html#torch.Generator"
    ),
}


def test_inventories_link_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DOCS / "_intersphinx"))
    from make_inventories import mapping

    inventories = mapping()
    assert all(Path(path).is_file() for _, path in inventories.values())  # nothing to fetch
    (tmp_path / "conf.py").write_text(
        f"extensions = ['sphinx.ext.intersphinx']\nintersphinx_mapping = {inventories!r}\n"
    )
    (tmp_path / "index.rst").write_text("index\n=====\n\n" + "\n\n".join(LINKS) + "\n")
    stream = io.StringIO()
    with docutils_namespace():
        app = Sphinx(
            tmp_path,
            tmp_path,
            tmp_path / "_build",
            tmp_path / "_doctrees",
            "html",
            status=None,
            warning=stream,
        )
        app.build()
    html = (tmp_path / "_build" / "index.html").read_text()
    assert stream.getvalue() == ""
    assert [url for url in LINKS.values() if f'href="{url}"' not in html] == []
