"""Shared test configuration: hypothesis profiles, and the device and dtype of the numerics tests.

A test that takes a ``device`` or a ``dtype`` argument runs once for each device of
``--device`` and each dtype of ``--dtype``::

    python -m pytest tests/functional --device all --dtype float32,float64

``--device`` takes a comma-separated list (``cpu,cuda``) or ``all``: the CPU and each
accelerator torch sees. It defaults to ``cpu``, so that a machine with a GPU runs the suite as
CI does unless asked. ``--dtype`` takes ``float32``, ``float64`` or both (the default), the
precisions whose accuracy the numerics tests state. A test of other dtypes (half precision
computed in float32, say) parametrizes ``dtype`` itself, which overrides the option.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# CI machines are shared and noisy: no per-example deadline there.
settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile(
    "dev", deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vaekit", "vaekit's numerics tests")
    group.addoption(
        "--device",
        default="cpu",
        help="devices of the numerics tests: a comma-separated list (cpu,cuda) or 'all' for "
        "the CPU and each available accelerator (default: cpu)",
    )
    group.addoption(
        "--dtype",
        default="float32,float64",
        help="dtypes of the numerics tests: float32, float64 or float32,float64 (the default)",
    )


def _accelerators() -> list[str]:
    found = ["cuda"] if torch.cuda.is_available() else []
    return found + (["mps"] if torch.backends.mps.is_available() else [])


def _devices(option: str) -> list[str]:
    names = ["cpu", *_accelerators()] if option == "all" else option.split(",")
    for name in names:
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise pytest.UsageError(f"--device {option}: {err}") from None
        if device.type != "cpu" and device.type not in _accelerators():
            raise pytest.UsageError(f"--device {option}: torch sees no {device.type} device")
    return names


def _dtypes(option: str) -> list[str]:
    names = option.split(",")
    unknown = [name for name in names if name not in DTYPES]
    if unknown:
        raise pytest.UsageError(
            f"--dtype {option}: {', '.join(unknown)} is not one of {', '.join(DTYPES)}"
        )
    return names


DEVICE_NAMES = pytest.StashKey[list[str]]()
DTYPE_NAMES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[DEVICE_NAMES] = _devices(config.getoption("device"))
    config.stash[DTYPE_NAMES] = _dtypes(config.getoption("dtype"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The fixtures below take these names, so that a test's own parametrization of ``device``
    # or ``dtype`` overrides them.
    if "device_name" in metafunc.fixturenames:
        metafunc.parametrize("device_name", metafunc.config.stash[DEVICE_NAMES])
    if "dtype_name" in metafunc.fixturenames:
        metafunc.parametrize("dtype_name", metafunc.config.stash[DTYPE_NAMES])


@pytest.fixture
def device(device_name: str) -> torch.device:
    """A device of ``--device``."""
    return torch.device(device_name)


@pytest.fixture
def dtype(dtype_name: str) -> torch.dtype:
    """A floating-point dtype of ``--dtype``."""
    return DTYPES[dtype_name]
