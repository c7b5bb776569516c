"""The schedules of vaekit.schedules against formulas written out and the authors' code."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.schedules._refusals import Refusals, assert_refused, cases
from vaekit.schedules import (
    GECO,
    Constant,
    Cyclical,
    LinearWarmup,
    Logistic,
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
    """The documented definition, filled in the reference code's order (later cycles overwrite)."""
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


# --- published reference values --------------------------------------------------------------


def test_cyclical_reference_values():
    schedule = Cyclical(100, n_cycles=4, ratio=0.5)
    period = 100 / 4  # T = 25, a ramp over T * ratio = 12.5 steps
    expected = [0.0, 1 / 12.5, 12 / 12.5, 1.0, 0.0]  # 13 / 12.5 = 1.04 > 1 holds at 1
    got = [schedule(t) for t in (0, 1, 12, 13, int(period))]
    assert got == expected
    assert got == pytest.approx([0, 0.08, 0.96, 1.0, 0], abs=1e-15)


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


# Every refused argument of the schedules
SCHEDULE_ERRORS: Refusals = {
    ValueError: {
        "Argument value should be a finite number, but given inf": lambda: Constant(math.inf),
        "Argument warmup_steps should be a positive int, but given 0": lambda: LinearWarmup(0),
        "Argument stop should be a finite number, but given nan": lambda: LinearWarmup(
            3, stop=math.nan
        ),
        "Argument midpoint should be a finite number >= 0, but given -1": lambda: Logistic(-1, 1.0),
        "Argument steepness should be a finite number > 0, but given 0.0": lambda: Logistic(5, 0.0),
        "Argument total_steps should be a positive int, but given 0": lambda: Cyclical(0),
        "Argument n_cycles should be a positive int, but given 0": lambda: Cyclical(10, n_cycles=0),
        "Argument ratio should be a finite number > 0, but given 0": lambda: Cyclical(10, ratio=0),
        "Argument ratio should be in (0, 1], but given 1.5": lambda: Cyclical(10, ratio=1.5),
        "Argument shape should be one of 'linear', 'sigmoid', 'cosine', but given 'step'": lambda: (
            Cyclical(10, shape="step")
        ),
    },
    TypeError: {
        "Argument value should be a float, but given str": lambda: Constant("1"),
        "Argument warmup_steps should be an int, but given float": lambda: LinearWarmup(2.5),
        "Argument start should be a float, but given NoneType": lambda: Logistic(
            5, 1.0, start=None
        ),
    },
}


@pytest.mark.parametrize(("error", "message", "build"), cases(SCHEDULE_ERRORS))
def test_schedule_argument_errors(error, message, build):
    assert_refused(error, message, build)
