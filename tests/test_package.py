"""The package surface: public names, and a core that imports no optional extra."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import vaekit

PACKAGES = [
    "vaekit",
    "vaekit.functional",
    "vaekit.nn",
    "vaekit.schedules",
    "vaekit.metrics",
    "vaekit.handlers",
    "vaekit.lightning",
    "vaekit.demo",
]


def test_all_is_sorted():
    assert list(vaekit.__all__) == sorted(vaekit.__all__)


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_exactly_the_public_names(package):
    module = importlib.import_module(package)
    star: dict[str, object] = {}
    exec(f"from {package} import *", star)  # a listed name the package lacks raises here
    defined_here = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and str(getattr(value, "__module__", "")).startswith("vaekit")
    }
    assert sorted(defined_here - set(module.__all__)) == []  # public, but not listed


def test_import_vaekit_imports_no_optional_extra():
    code = (
        "import sys, vaekit, vaekit.functional, vaekit.nn;"
        "extras = ('ignite', 'torchmetrics', 'lightning', 'pytorch_lightning', 'matplotlib',"
        " 'sklearn');"
        "bad = [m for m in extras if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("package", "dependency", "extra"),
    [
        ("vaekit.metrics", "torchmetrics", "metrics"),
        ("vaekit.handlers", "ignite", "ignite"),
        ("vaekit.lightning", "lightning.pytorch", "lightning"),
    ],
)
def test_a_missing_extra_fails_at_import_with_its_name(package, dependency, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, dependency, None)  # what an uninstalled package imports as
    monkeypatch.delitem(sys.modules, package, raising=False)
    with pytest.raises(
        ImportError, match=rf"^{package} needs .*: pip install 'vaekit\[{extra}\]'$"
    ):
        importlib.import_module(package)


def test_py_typed_is_shipped():
    from importlib.resources import files

    assert files("vaekit").joinpath("py.typed").is_file()
