"""The argument-error tables of the schedule and controller tests, and their one check."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest

# exception -> the whole message -> a call that raises exactly it
Refusals = Mapping[type[Exception], Mapping[str, Callable[[], Any]]]


def cases(table: Refusals) -> list[Any]:
    """The rows of ``table`` as ``(error, message, build)`` parameters, named by the message."""
    return [
        pytest.param(error, message, build, id=message)
        for error, calls in table.items()
        for message, build in calls.items()
    ]


def assert_refused(error: type[Exception], message: str, build: Callable[[], Any]) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        build()
