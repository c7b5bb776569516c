"""Tests for vaekit.schedules against formulas written out, the papers' numbers and code."""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vaekit.schedules import (
    GECO,
    Constant,
    Controller,
    Cyclical,
    LinearWarmup,
    Logistic,
    PIController,
    Schedule,
)

finite = st.floats(-1e6, 1e6, allow_nan=False)
shapes = st.sampled_from(["linear", "sigmoid", "cosine"])


# --- references, written out from the papers and the authors' code ---------------------------


def frange_cycle_linear(start: float, stop: float, n_epoch: int, n_cycle: int, ratio: float):
    """Fu et al.'s published ``frange_cycle_linear``, restated: v accumulates, L starts at 1."""
    values = np.ones(n_epoch)
    period = n_epoch / n_cycle
    step = (stop - start) / (period * ratio)
    for c in range(n_cycle):
        v, i = start, 0
        while v <= stop and int(i + c * period) < n_epoch:
            values[int(i + c * period)] = v
            v += step
            i += 1
    return values


def cyclical_by_loop(total, n_cycles, ratio, start, stop, shape):
    """The issue's definition, filled in the reference code's order (later cycles overwrite)."""
    values = [stop] * total
    period = total / n_cycles
    ramp = period * ratio
    f = {
        "sigmoid": lambda v: 1 / (1 + math.exp(-(12 * v - 6))),
        "cosine": lambda v: 0.5 - 0.5 * math.cos(math.pi * v),
    }
    for c in range(n_cycles):
        i = 0
        while int(i + c * period) < total:
            if shape == "linear":
                value = start + i * (stop - start) / ramp
                if not (value <= stop if start <= stop else value >= stop):
                    break
            else:
                if i / ramp > 1:
                    break
                value = start + (stop - start) * f[shape](i / ramp)
            values[int(i + c * period)] = value
            i += 1
    return values


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


# --- reference values from the issue ----------------------------------------------------------


def test_cyclical_reference_values():
    schedule = Cyclical(100, n_cycles=4, ratio=0.5)
    period = 100 / 4  # T = 25, a ramp over T * ratio = 12.5 steps
    expected = [0.0, 1 / 12.5, 12 / 12.5, 1.0, 0.0]  # 13 / 12.5 = 1.04 > 1 holds at 1
    got = [schedule(t) for t in (0, 1, 12, 13, int(period))]
    assert got == expected
    assert got == pytest.approx([0, 0.08, 0.96, 1.0, 0], abs=1e-15)


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


# --- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "n_cycles", "ratio"),
    [(100, 4, 0.5), (10, 3, 0.5), (122, 14, 0.5), (230, 14, 0.5), (126, 26, 1.0), (7, 7, 1.0)],
)
def test_cyclical_matches_published_code(total, n_cycles, ratio):
    # (122, 14) and (230, 14) hit int(i + c*T) != i + int(c*T): the code skips a step there.
    schedule = Cyclical(total, n_cycles=n_cycles, ratio=ratio)
    got = [schedule(t) for t in range(total)]
    np.testing.assert_allclose(
        got, frange_cycle_linear(0.0, 1.0, total, n_cycles, ratio), atol=1e-12
    )


@given(
    st.integers(1, 300),
    st.integers(1, 40),
    st.floats(0.01, 1.0),
    st.floats(-10, 10),
    st.floats(-10, 10),
    shapes,
)
def test_cyclical_matches_definition(total, n_cycles, ratio, start, stop, shape):
    schedule = Cyclical(total, n_cycles=n_cycles, ratio=ratio, start=start, stop=stop, shape=shape)
    got = [schedule(t) for t in range(total + 3)]
    expected = cyclical_by_loop(total, n_cycles, ratio, start, stop, shape) + [stop] * 3
    if shape == "linear":
        assert got == expected
    else:
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_cyclical_shapes_at_known_points():
    # T = 20, ramp over 10 steps: v = 0.5 at offset 5, v = 1 at offset 10.
    sigmoid = Cyclical(40, n_cycles=2, ratio=0.5, shape="sigmoid", start=1.0, stop=3.0)
    cosine = Cyclical(40, n_cycles=2, ratio=0.5, shape="cosine", start=1.0, stop=3.0)
    assert sigmoid(25) == pytest.approx(2.0)
    assert sigmoid(20) == pytest.approx(1 + 2 / (1 + math.exp(6)))
    assert cosine(25) == pytest.approx(2.0)
    assert cosine(30) == pytest.approx(3.0)
    assert cosine(20) == 1.0
    assert sigmoid(31) == cosine(31) == 3.0


@given(st.integers(1, 20), st.integers(1, 20), st.floats(0.01, 1.0), shapes, finite, finite)
def test_cyclical_cycles_repeat(period, n_cycles, ratio, shape, start, stop):
    total = period * n_cycles
    schedule = Cyclical(total, n_cycles=n_cycles, ratio=ratio, shape=shape, start=start, stop=stop)
    for t in range(period * (n_cycles - 1)):
        assert schedule(t) == schedule(t + period)


@given(st.integers(1, 200), st.integers(1, 10), st.floats(0.01, 1.0), shapes)
def test_cyclical_ramp_is_monotone_within_a_cycle(total, n_cycles, ratio, shape):
    schedule = Cyclical(total, n_cycles=n_cycles, ratio=ratio, shape=shape)
    starts = {int(c * total / n_cycles) for c in range(n_cycles)}
    for t in range(1, total):
        if t not in starts:
            assert schedule(t) >= schedule(t - 1)


def test_linear_warmup_matches_formula():
    schedule = LinearWarmup(7, start=0.5, stop=-2.0)
    for t in range(12):
        expected = 0.5 + (-2.0 - 0.5) * min(1.0, t / 7)
        assert schedule(t) == pytest.approx(expected, rel=1e-15, abs=1e-15)
    assert schedule(7) == -2.0


def test_logistic_matches_formula():
    schedule = Logistic(50, 0.2, start=0.1, stop=0.9)
    for t in (0, 10, 49, 50, 51, 90, 400):
        expected = 0.1 + 0.8 / (1 + math.exp(-0.2 * (t - 50)))
        assert schedule(t) == pytest.approx(expected, rel=1e-14)
    assert schedule(50) == 0.5


def test_logistic_far_from_midpoint_does_not_overflow():
    schedule = Logistic(10**6, 1.0)
    assert schedule(0) == 0.0
    assert schedule(10**7) == 1.0


def test_logistic_at_a_step_too_large_for_a_float_is_its_limit():
    assert Logistic(10, 0.5, start=0.2, stop=0.7)(10**400) == 0.7
    assert Logistic(0, 1e-300, start=3.0, stop=-1.0)(10**400) == -1.0


def test_constant():
    assert [Constant(0.25)(t) for t in (0, 1, 10**9)] == [0.25] * 3


def make_schedules(start: float, stop: float) -> list[Schedule]:
    return [
        Constant(start),
        LinearWarmup(13, start=start, stop=stop),
        Logistic(20, 0.3, start=start, stop=stop),
        Cyclical(60, n_cycles=3, ratio=0.7, start=start, stop=stop),
        Cyclical(61, n_cycles=4, start=start, stop=stop, shape="sigmoid"),
        Cyclical(59, n_cycles=2, ratio=1.0, start=start, stop=stop, shape="cosine"),
    ]


@given(finite, finite, st.integers(0, 200))
def test_values_stay_within_start_and_stop(start, stop, step):
    for schedule in make_schedules(start, stop):
        assert min(start, stop) <= schedule(step) <= max(start, stop)


@given(finite, finite)
def test_warmup_and_logistic_ramps_are_monotone(start, stop):
    sign = 1 if stop >= start else -1
    for schedule in (
        LinearWarmup(9, start=start, stop=stop),
        Logistic(30, 0.2, start=start, stop=stop),
    ):
        values = [sign * schedule(t) for t in range(80)]
        assert values == sorted(values)


@pytest.mark.parametrize("schedule", make_schedules(0.1, 0.8), ids=repr)
def test_schedule_pickles_and_reprs(schedule):
    clone = pickle.loads(pickle.dumps(schedule))
    assert repr(clone) == repr(schedule)
    assert [clone(t) for t in range(70)] == [schedule(t) for t in range(70)]
    assert repr(schedule).startswith(type(schedule).__name__ + "(")


def test_reprs_show_arguments():
    assert repr(Constant(2)) == "Constant(value=2.0)"
    assert repr(Logistic(5, 1)) == "Logistic(midpoint=5.0, steepness=1.0, start=0.0, stop=1.0)"
    assert repr(Cyclical(10, shape="cosine")) == (
        "Cyclical(total_steps=10, n_cycles=4, ratio=0.5, start=0.0, stop=1.0, shape='cosine')"
    )
    assert repr(GECO(3.0, speedup=10)) == (
        "GECO(goal=3.0, step_size=0.001, alpha=0.99, beta_init=1.0, speedup=10.0, "
        "beta_min=1e-10, beta_max=10000000000.0)"
    )


@pytest.mark.parametrize("schedule", make_schedules(0.0, 1.0), ids=repr)
def test_step_errors(schedule):
    with pytest.raises(
        ValueError, match=r"Argument step should be a non-negative int, but given -1"
    ):
        schedule(-1)
    with pytest.raises(TypeError, match=r"Argument step should be an int, but given float"):
        schedule(1.0)
    with pytest.raises(TypeError, match=r"Argument step should be an int, but given bool"):
        schedule(True)


SCHEDULE_ERRORS = [
    (
        lambda: Constant(math.inf),
        ValueError,
        "Argument value should be a finite number, but given inf",
    ),
    (lambda: Constant("1"), TypeError, "Argument value should be a float, but given str"),
    (
        lambda: LinearWarmup(0),
        ValueError,
        "Argument warmup_steps should be a positive int, but given 0",
    ),
    (
        lambda: LinearWarmup(2.5),
        TypeError,
        "Argument warmup_steps should be an int, but given float",
    ),
    (
        lambda: LinearWarmup(3, stop=math.nan),
        ValueError,
        "Argument stop should be a finite number, but given nan",
    ),
    (
        lambda: Logistic(-1, 1.0),
        ValueError,
        "Argument midpoint should be a finite number >= 0, but given -1",
    ),
    (
        lambda: Logistic(5, 0.0),
        ValueError,
        "Argument steepness should be a finite number > 0, but given 0.0",
    ),
    (
        lambda: Logistic(5, 1.0, start=None),
        TypeError,
        "Argument start should be a float, but given NoneType",
    ),
    (lambda: Cyclical(0), ValueError, "Argument total_steps should be a positive int, but given 0"),
    (
        lambda: Cyclical(10, n_cycles=0),
        ValueError,
        "Argument n_cycles should be a positive int, but given 0",
    ),
    (
        lambda: Cyclical(10, ratio=0),
        ValueError,
        "Argument ratio should be a finite number > 0, but given 0",
    ),
    (
        lambda: Cyclical(10, ratio=1.5),
        ValueError,
        "Argument ratio should be in (0, 1], but given 1.5",
    ),
    (
        lambda: Cyclical(10, shape="step"),
        ValueError,
        "Argument shape should be one of 'linear', 'sigmoid', 'cosine', but given 'step'",
    ),
]


@pytest.mark.parametrize(("build", "error", "message"), SCHEDULE_ERRORS)
def test_schedule_argument_errors(build, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        build()


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


CONTROLLER_ERRORS = [
    (
        lambda: PIController(-1.0),
        ValueError,
        "Argument target_kl should be a finite number >= 0, but given -1.0",
    ),
    (
        lambda: PIController(1.0, kp=-0.1),
        ValueError,
        "Argument kp should be a finite number >= 0, but given -0.1",
    ),
    (lambda: PIController(1.0, ki="1"), TypeError, "Argument ki should be a float, but given str"),
    (
        lambda: PIController(1.0, beta_min=2.0),
        ValueError,
        "Argument beta_max should be >= beta_min=2.0, but given beta_max=1.0",
    ),
    (lambda: GECO(math.nan), ValueError, "Argument goal should be a finite number, but given nan"),
    (
        lambda: GECO(1.0, step_size=0),
        ValueError,
        "Argument step_size should be a finite number > 0, but given 0",
    ),
    (
        lambda: GECO(1.0, alpha=1.0),
        ValueError,
        "Argument alpha should be a finite number in [0, 1), but given 1.0",
    ),
    (
        lambda: GECO(1.0, speedup=-2),
        ValueError,
        "Argument speedup should be a finite number > 0, but given -2",
    ),
    (
        lambda: GECO(1.0, beta_min=0.0),
        ValueError,
        "Argument beta_min should be a finite number > 0, but given 0.0",
    ),
    (
        lambda: GECO(1.0, beta_init=1e11),
        ValueError,
        "Argument beta_init should be in [beta_min, beta_max] = [1e-10, 10000000000.0], "
        "but given 100000000000.0",
    ),
]


@pytest.mark.parametrize(("build", "error", "message"), CONTROLLER_ERRORS)
def test_controller_argument_errors(build: Callable[[], object], error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        build()
