"""The controllers of vaekit.schedules against the papers' formulas and numbers."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.schedules._refusals import Refusals, assert_refused, cases
from vaekit.schedules import (
    GECO,
    Controller,
    PIController,
)

finite = st.floats(-1e6, 1e6, allow_nan=False)
shapes = st.sampled_from(["linear", "sigmoid", "cosine"])


# --- references, written out from the papers --------------------------------------------------


def pi_paper(target, kls, kp=0.01, ki=1e-4, beta_min=0.0, beta_max=1.0):
    """ControlVAE's PI step as published (its anti-windup never fires): output clip only."""
    integral, betas = 0.0, []
    for kl in kls:
        e = target - kl
        integral -= ki * e
        betas.append(min(max(beta_min + kp / (1 + math.exp(e)) + integral, beta_min), beta_max))
    return betas


def geco_plain(goal, errs, step_size=1e-3, alpha=0.99, beta=1.0, speedup=None, lo=1e-10, hi=1e10):
    ema, betas = None, []
    for err in errs:
        ema = err if ema is None else alpha * ema + (1 - alpha) * err
        eta = step_size * (speedup if speedup is not None and goal > ema else 1.0)
        beta = min(max(beta * math.exp(eta * (goal - ema)), lo), hi)
        betas.append(beta)
    return betas


# --- published reference values --------------------------------------------------------------


def test_pi_reference_values():
    controller = PIController(2.0)
    first = 0.01 / (1 + math.exp(1.5)) - 1e-4 * 1.5
    second = 0.01 / (1 + math.exp(1.0)) - 1e-4 * (1.5 + 1.0)
    assert controller.update(0.5) == pytest.approx(first, rel=1e-14)
    assert controller.update(1.0) == pytest.approx(second, rel=1e-14)
    assert [round(first, 10), round(second, 10)] == [0.0016742552, 0.0024394142]


def test_geco_reference_value():
    beta = GECO(100.0).update(150.0)
    assert beta == pytest.approx(math.exp(-1e-3 * 50), rel=1e-15)
    assert round(beta, 6) == 0.951229


# --- controllers -------------------------------------------------------------------------------


@given(st.lists(st.floats(0.0, 5.0), min_size=1, max_size=100), st.floats(0, 3))
def test_pi_matches_paper_while_unsaturated(excess, target):
    # A KL above the target raises beta from 0, but 100 steps cannot carry it to 1.
    kls = [target + x for x in excess]
    controller = PIController(target)
    got = [controller.update(kl) for kl in kls]
    assert got == pytest.approx(pi_paper(target, kls), rel=1e-12, abs=1e-15)


def test_pi_recovers_from_saturation_within_a_few_steps():
    target, kp, ki = 1.0, 0.01, 1e-4
    controller = PIController(target, kp=kp, ki=ki)
    high = [target + 10.0] * 10_000  # e = -10: beta saturates at 1 after ~1000 steps
    low = [target - 1.0] * 3000
    ours = [controller.update(kl) for kl in high + low]
    paper = pi_paper(target, high + low, kp=kp, ki=ki)
    assert paper[9_999] == 1.0
    assert ours[9_999] == pytest.approx(1.0, abs=1e-15)
    assert ours[10_000] < 1.0  # leaves the bound on the first step of the other sign
    steps_pinned = sum(1 for beta in paper[10_000:] if beta == 1.0)
    assert steps_pinned > 2000  # the paper's integral wound up to ~10 and must unwind


def test_pi_recovers_from_lower_saturation():
    controller = PIController(5.0, beta_min=0.1, beta_max=0.9)
    for _ in range(5000):
        controller.update(0.0)  # KL far below target: beta pinned at beta_min
    assert controller.beta == pytest.approx(0.1, abs=1e-15)
    assert controller.update(6.0) > 0.1
    assert pi_paper(5.0, [0.0] * 5000 + [6.0], beta_min=0.1, beta_max=0.9)[-1] == 0.1


def test_pi_huge_error_does_not_overflow():
    controller = PIController(1e6, kp=1.0, ki=0.0)
    assert controller.update(0.0) == 0.0  # P = kp / (1 + e^(1e6)) = 0
    assert PIController(0.0, kp=1.0, ki=0.0).update(1e6) == 1.0


@given(st.lists(st.floats(0, 300), min_size=1, max_size=50), st.sampled_from([None, 10.0]))
def test_geco_matches_plain_formula(errs, speedup):
    controller = GECO(100.0, step_size=1e-2, alpha=0.9, speedup=speedup, beta_min=1e-3, beta_max=50)
    got = [controller.update(err) for err in errs]
    expected = geco_plain(100.0, errs, step_size=1e-2, alpha=0.9, speedup=speedup, lo=1e-3, hi=50)
    assert got == pytest.approx(expected, rel=1e-12)


def test_geco_speedup_only_while_goal_is_met():
    fast, slow = GECO(10.0, speedup=10.0), GECO(10.0)
    assert fast.update(20.0) == slow.update(20.0) == pytest.approx(math.exp(-1e-3 * 10))
    fast, slow = GECO(10.0, speedup=10.0), GECO(10.0)
    assert fast.update(0.0) == pytest.approx(math.exp(1e-2 * 10))
    assert slow.update(0.0) == pytest.approx(math.exp(1e-3 * 10))


def test_geco_clips_without_overflow():
    assert GECO(1e9, step_size=1.0, beta_max=7.0).update(0.0) == 7.0
    assert GECO(-1e9, step_size=1.0, beta_min=1e-4).update(0.0) == 1e-4


def make_controllers() -> list[Controller]:
    return [PIController(2.0, kp=0.5, ki=0.05), GECO(1.0, step_size=0.1, alpha=0.5, speedup=3)]


@pytest.mark.parametrize("controller", make_controllers(), ids=repr)
def test_non_finite_observation_is_ignored_with_a_warning(controller):
    controller.update(3.0)
    before = controller.state_dict()
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.warns(RuntimeWarning, match=r"ignored the non-finite observation"):
            assert controller.update(bad) == before["beta"]
    assert controller.state_dict() == before


@pytest.mark.parametrize("index", [0, 1])
def test_state_dict_round_trip_resumes_exactly(index, tmp_path):
    observations = [3.0, 0.5, 2.5, 1.0, 4.0, 0.1, 2.0, 1.5]
    uninterrupted = make_controllers()[index]
    expected = [uninterrupted.update(x) for x in observations]

    first = make_controllers()[index]
    head = [first.update(x) for x in observations[:3]]
    torch.save(first.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert all(type(v) in (int, float) for v in state.values())
    second = make_controllers()[index]
    second.load_state_dict(state)
    assert second.beta == first.beta
    assert head + [second.update(x) for x in observations[3:]] == expected


def test_initial_state():
    assert PIController(1.0, beta_min=0.2).state_dict() == {"beta": 0.2, "integral": 0.0}
    assert GECO(1.0, beta_init=0.5).state_dict() == {"beta": 0.5, "ema": 0.0, "num_updates": 0}


def test_load_state_dict_errors():
    controller = PIController(1.0)
    with pytest.raises(TypeError, match=r"Argument state_dict should be a mapping, but given list"):
        controller.load_state_dict([1.0, 2.0])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Argument state_dict should have the keys ['beta', 'integral'], but given ['beta']"
        ),
    ):
        controller.load_state_dict({"beta": 1.0})
    with pytest.raises(
        TypeError, match=r"Argument state_dict\['integral'\] should be a float, but given str"
    ):
        controller.load_state_dict({"beta": 1.0, "integral": "0"})


BAD_STATES = [
    (
        lambda: PIController(1.0),
        {"beta": 5.0, "integral": 0.0},
        ValueError,
        "Argument state_dict['beta'] should be in [beta_min, beta_max] = [0.0, 1.0], but given 5.0",
    ),
    (
        lambda: PIController(1.0, beta_min=0.5),
        {"beta": 0.25, "integral": 0.0},
        ValueError,
        "Argument state_dict['beta'] should be in [beta_min, beta_max] = [0.5, 1.0], "
        "but given 0.25",
    ),
    (
        lambda: PIController(1.0),
        {"beta": 0.5, "integral": math.nan},
        ValueError,
        "Argument state_dict['integral'] should be a finite number, but given nan",
    ),
    (
        lambda: PIController(1.0),
        {"beta": math.inf, "integral": 0.0},
        ValueError,
        "Argument state_dict['beta'] should be a finite number, but given inf",
    ),
    (
        lambda: PIController(1.0),
        {"beta": 0.5, "integral": 10**400},
        ValueError,
        f"Argument state_dict['integral'] should be a finite number, but given {10**400}",
    ),
    (
        lambda: GECO(1.0),
        {"beta": 1.0, "ema": -math.inf, "num_updates": 3},
        ValueError,
        "Argument state_dict['ema'] should be a finite number, but given -inf",
    ),
    (
        lambda: GECO(1.0),
        {"beta": 1.0, "ema": 2.0, "num_updates": 2.7},
        TypeError,
        "Argument state_dict['num_updates'] should be an int, but given float",
    ),
    (
        lambda: GECO(1.0),
        {"beta": 1.0, "ema": 2.0, "num_updates": math.inf},
        TypeError,
        "Argument state_dict['num_updates'] should be an int, but given float",
    ),
    (
        lambda: GECO(1.0),
        {"beta": 1.0, "ema": 2.0, "num_updates": -5},
        ValueError,
        "Argument state_dict['num_updates'] should be a non-negative int, but given -5",
    ),
    (
        lambda: GECO(1.0),
        {"beta": 1.0, "ema": 2.0, "num_updates": True},
        TypeError,
        "Argument state_dict['num_updates'] should be an int, but given bool",
    ),
    (
        lambda: GECO(1.0, beta_max=2.0),
        {"beta": 3.0, "ema": 2.0, "num_updates": 1},
        ValueError,
        "Argument state_dict['beta'] should be in [beta_min, beta_max] = [1e-10, 2.0], "
        "but given 3.0",
    ),
    (
        lambda: GECO(1.0),
        {"beta": 0.0, "ema": 2.0, "num_updates": 1},
        ValueError,
        "Argument state_dict['beta'] should be in [beta_min, beta_max] = "
        "[1e-10, 10000000000.0], but given 0.0",
    ),
]


@pytest.mark.parametrize(("build", "state", "error", "message"), BAD_STATES)
def test_load_state_dict_refuses_a_bad_value_and_changes_nothing(build, state, error, message):
    controller = build()
    for x in (3.0, 0.5, 2.0):
        controller.update(x)
    before = controller.state_dict()
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        controller.load_state_dict(state)
    assert controller.state_dict() == before
    twin = build()
    twin.load_state_dict(before)  # what it would go on with is untouched, too
    assert controller.update(1.5) == twin.update(1.5)


def test_loaded_state_keeps_the_python_types():
    controller = GECO(1.0)
    controller.load_state_dict({"beta": 2, "ema": 3, "num_updates": 4})
    state = controller.state_dict()
    assert state == {"beta": 2.0, "ema": 3.0, "num_updates": 4}
    assert [type(v) for v in state.values()] == [float, float, int]


def test_observation_too_large_for_a_float_is_ignored_with_a_warning():
    controller = PIController(1.0)
    controller.update(2.0)
    before = controller.state_dict()
    with pytest.warns(RuntimeWarning, match=r"ignored the non-finite observation 1000000"):
        assert controller.update(10**400) == before["beta"]
    assert controller.state_dict() == before


def test_update_rejects_non_numbers():
    with pytest.raises(
        TypeError, match=r"Argument observation should be a float, but given Tensor"
    ):
        PIController(1.0).update(torch.tensor(1.0))


def _pi(**kwargs):
    """A call of PIController with a target of 1.0 and ``kwargs``."""
    return lambda: PIController(**{"target_kl": 1.0, **kwargs})


def _geco(**kwargs):
    """A call of GECO with a goal of 1.0 and ``kwargs``."""
    return lambda: GECO(**{"goal": 1.0, **kwargs})


# Every refused argument of the controllers
CONTROLLER_ERRORS: Refusals = {
    ValueError: {
        "Argument target_kl should be a finite number >= 0, but given -1.0": _pi(target_kl=-1.0),
        "Argument kp should be a finite number >= 0, but given -0.1": _pi(kp=-0.1),
        "Argument beta_max should be >= beta_min=2.0, but given beta_max=1.0": _pi(beta_min=2.0),
        "Argument goal should be a finite number, but given nan": _geco(goal=math.nan),
        "Argument step_size should be a finite number > 0, but given 0": _geco(step_size=0),
        "Argument alpha should be a finite number in [0, 1), but given 1.0": _geco(alpha=1.0),
        "Argument speedup should be a finite number > 0, but given -2": _geco(speedup=-2),
        "Argument beta_min should be a finite number > 0, but given 0.0": _geco(beta_min=0.0),
        (
            "Argument beta_init should be in [beta_min, beta_max] = [1e-10, 10000000000.0], "
            "but given 100000000000.0"
        ): _geco(beta_init=1e11),
    },
    TypeError: {"Argument ki should be a float, but given str": _pi(ki="1")},
}


@pytest.mark.parametrize(("error", "message", "build"), cases(CONTROLLER_ERRORS))
def test_controller_argument_errors(error, message, build):
    assert_refused(error, message, build)
