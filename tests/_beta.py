"""What the Ignite and the Lightning BetaController refuse alike, checked once for both."""

from __future__ import annotations

from typing import Any

import pytest

from vaekit import VAELoss
from vaekit.schedules import LinearWarmup, PIController


def assert_controller_arguments_are_checked(beta_controller: type[Any]) -> None:
    """``beta_controller`` (either framework's class) refuses a schedule for a controller, and
    a target without the attribute it is to drive."""
    with pytest.raises(
        TypeError,
        match=r"Argument controller should be a vaekit.schedules.Controller, "
        r"but given LinearWarmup",
    ):
        beta_controller(LinearWarmup(3))
    with pytest.raises(ValueError, match=r"Argument target should have an attribute 'gamma'"):
        beta_controller(PIController(1.0), target=VAELoss(), attr="gamma")
