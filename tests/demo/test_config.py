"""vaekit.demo.config: what each --schedule name builds."""

from __future__ import annotations

import pytest

from vaekit.demo.config import SCHEDULES, DemoConfig, build_beta
from vaekit.schedules import GECO, Constant, Cyclical, LinearWarmup, Logistic, PIController

CONFIG = DemoConfig(beta=0.5, target_kl=7.0, recon_goal=20.0)


def test_every_name_builds_its_schedule_or_controller():
    built = {name: build_beta(name, CONFIG, total_steps=400) for name in SCHEDULES}
    assert isinstance(built["constant"], Constant)
    assert built["constant"](123) == 0.5
    assert isinstance(built["linear"], LinearWarmup)
    assert [built["linear"](s) for s in (0, 50, 100, 399)] == [0.0, 0.25, 0.5, 0.5]
    assert isinstance(built["logistic"], Logistic)
    assert built["logistic"](100) == pytest.approx(0.25)
    assert built["logistic"](399) < 0.5
    assert isinstance(built["cyclical"], Cyclical)
    assert [built["cyclical"](s) for s in (0, 50, 99, 100)] == [0.0, 0.5, 0.5, 0.0]
    assert isinstance(built["pi"], PIController)
    assert (built["pi"].target_kl, built["pi"].beta_max) == (7.0, 0.5)
    assert isinstance(built["geco"], GECO)
    assert (built["geco"].goal, built["geco"].beta) == (20.0, 0.5)


def test_short_runs_still_build():
    assert build_beta("linear", CONFIG, total_steps=2)(1) == 0.5


def test_unknown_name():
    with pytest.raises(
        ValueError, match=r"^Argument schedule should be one of constant, .*geco, but given 'warm'$"
    ):
        build_beta("warm", CONFIG, total_steps=10)
