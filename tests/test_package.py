"""The package surface: public names, and a core that imports no optional extra."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import vaekit


def test_all_is_sorted_and_importable():
    assert list(vaekit.__all__) == sorted(vaekit.__all__)
    for name in vaekit.__all__:
        assert getattr(vaekit, name) is not None


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
