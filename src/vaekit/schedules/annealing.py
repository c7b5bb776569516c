"""Beta schedules: pure, picklable functions of the step."""

from __future__ import annotations

import abc
import math
from array import array

from vaekit._checks import check_int, check_number, check_real
from vaekit.schedules._common import Repr, sigmoid

__all__ = ["Constant", "Cyclical", "LinearWarmup", "Logistic", "Schedule"]

_SHAPES = ("linear", "sigmoid", "cosine")


class Schedule(Repr, abc.ABC):
    """Base class of the schedules: validates the step and evaluates :meth:`_value`."""

    def __call__(self, step: int) -> float:
        """The value at ``step``.

        Args:
            step: the step, 0 for the first.

        Returns:
            The scheduled value, a float.

        Raises:
            TypeError: if ``step`` is not an int.
            ValueError: if ``step`` is negative.
        """
        return self._value(check_int("step", step))

    @abc.abstractmethod
    def _value(self, step: int) -> float: ...


class Constant(Schedule):
    """The same value at every step.

    Args:
        value: the value, a finite number.

    Raises:
        TypeError: if ``value`` is not a number.
        ValueError: if ``value`` is not finite.

    Example:
        >>> from vaekit.schedules import Constant
        >>> Constant(0.5)(0), Constant(0.5)(10_000)
        (0.5, 0.5)
    """

    _fields = ("value",)

    def __init__(self, value: float) -> None:
        self.value = check_number("value", value)

    def _value(self, step: int) -> float:
        return self.value


class LinearWarmup(Schedule):
    r"""A linear ramp from ``start`` to ``stop`` over ``warmup_steps`` steps, then ``stop``.

    .. math::
        \beta(t) = \mathrm{start} + (\mathrm{stop} - \mathrm{start})
        \min\Big(1, \frac{t}{\mathrm{warmup\_steps}}\Big)

    Args:
        warmup_steps: the first step at which the value is ``stop``, ``>= 1``.
        start: the value at step 0.
        stop: the value from step ``warmup_steps`` on.

    Raises:
        TypeError: if an argument is of the wrong type.
        ValueError: if ``warmup_steps < 1`` or ``start``/``stop`` is not finite.

    Example:
        >>> from vaekit.schedules import LinearWarmup
        >>> schedule = LinearWarmup(4)
        >>> [schedule(t) for t in range(6)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
        >>> schedule
        LinearWarmup(warmup_steps=4, start=0.0, stop=1.0)
    """

    _fields = ("warmup_steps", "start", "stop")

    def __init__(self, warmup_steps: int, *, start: float = 0.0, stop: float = 1.0) -> None:
        self.warmup_steps = check_int("warmup_steps", warmup_steps, low=1)
        self.start = check_number("start", start)
        self.stop = check_number("stop", stop)

    def _value(self, step: int) -> float:
        if step >= self.warmup_steps:
            return self.stop
        return _lerp(self.start, self.stop, step / self.warmup_steps)


class Logistic(Schedule):
    r"""A logistic (sigmoid) ramp from ``start`` to ``stop``, as in Bowman et al. (2016).

    .. math::
        \beta(t) = \mathrm{start}
        + \frac{\mathrm{stop} - \mathrm{start}}{1 + e^{-k (t - t_0)}}

    with midpoint :math:`t_0` and steepness :math:`k`. Bowman et al., 2016, "Generating
    sentences from a continuous space" (CoNLL).

    Args:
        midpoint: the step :math:`t_0` at which the value is halfway, ``>= 0``.
        steepness: :math:`k > 0`; the ramp takes about :math:`10/k` steps.
        start: the limit before the midpoint.
        stop: the limit after the midpoint.

    Raises:
        TypeError: if an argument is not a number.
        ValueError: if ``midpoint`` is negative, ``steepness`` is not positive, or a number is
            not finite.

    Example:
        >>> from vaekit.schedules import Logistic
        >>> schedule = Logistic(1000, 0.01)
        >>> [round(schedule(t), 4) for t in (0, 500, 1000, 1500, 2000)]
        [0.0, 0.0067, 0.5, 0.9933, 1.0]
    """

    _fields = ("midpoint", "steepness", "start", "stop")

    def __init__(
        self, midpoint: float, steepness: float, *, start: float = 0.0, stop: float = 1.0
    ) -> None:
        self.midpoint = check_number("midpoint", midpoint, low=0.0)
        self.steepness = check_number("steepness", steepness, low=0.0, low_open=True)
        self.start = check_number("start", start)
        self.stop = check_number("stop", stop)

    def _value(self, step: int) -> float:
        # A step too large for a float is past any midpoint: the ramp has saturated.
        offset = check_real("step", step) - self.midpoint
        return _lerp(self.start, self.stop, sigmoid(self.steepness * offset))


class Cyclical(Schedule):
    r"""Cyclical annealing (Fu et al., 2019): ``n_cycles`` ramps from ``start`` to ``stop``.

    The ``total_steps`` steps are split into ``n_cycles`` cycles of period
    :math:`T = \mathrm{total\_steps} / \mathrm{n\_cycles}`. Within a cycle, at offset
    :math:`i`, the value ramps for the first ``ratio`` of the cycle and then holds at ``stop``:

    .. math::
        \beta = \begin{cases}
            \mathrm{start} + (\mathrm{stop} - \mathrm{start})\, f(v) & v \le 1 \\
            \mathrm{stop} & v > 1
        \end{cases}, \qquad v = \frac{i}{T \cdot \mathrm{ratio}},

    with :math:`f(v) = v` (``"linear"``), :math:`1 / (1 + e^{-(12 v - 6)})` (``"sigmoid"``) or
    :math:`\tfrac12 - \tfrac12 \cos(\pi v)` (``"cosine"``). From ``total_steps`` on the value
    is ``stop``.

    This reproduces ``frange_cycle_linear`` of the authors' code (github.com/haofuml/
    cyclical_annealing), including a period that is not an integer: the offset-:math:`i` step
    of cycle :math:`c` is ``int(i + c * T)`` computed in floating point, so cycle :math:`c`
    starts at :math:`\lfloor cT \rfloor`, a later cycle overwrites an earlier one, and the
    linear ramp is :math:`\mathrm{start} + i\,(\mathrm{stop} - \mathrm{start}) / (T \cdot
    \mathrm{ratio})` while that does not pass ``stop``. Fu et al., 2019, "Cyclical annealing
    schedule: a simple approach to mitigating KL vanishing" (NAACL).

    Args:
        total_steps: the number of steps the cycles span, ``>= 1``.
        n_cycles: the number of cycles, ``>= 1``.
        ratio: the fraction of each cycle spent ramping, in :math:`(0, 1]`.
        start: the value at the start of each cycle.
        stop: the value held after each ramp and from ``total_steps`` on.
        shape: ``"linear"`` | ``"sigmoid"`` | ``"cosine"``, the ramp :math:`f`.

    Raises:
        TypeError: if an argument is of the wrong type.
        ValueError: if a count is below 1, ``ratio`` is outside :math:`(0, 1]`, a number is not
            finite, or ``shape`` is unknown.

    Example:
        >>> from vaekit.schedules import Cyclical
        >>> schedule = Cyclical(100, n_cycles=4, ratio=0.5)
        >>> [round(schedule(t), 4) for t in (0, 1, 12, 13, 24, 25, 100)]
        [0.0, 0.08, 0.96, 1.0, 1.0, 0.0, 1.0]
    """

    _fields = ("total_steps", "n_cycles", "ratio", "start", "stop", "shape")

    def __init__(
        self,
        total_steps: int,
        *,
        n_cycles: int = 4,
        ratio: float = 0.5,
        start: float = 0.0,
        stop: float = 1.0,
        shape: str = "linear",
    ) -> None:
        self.total_steps = check_int("total_steps", total_steps, low=1)
        self.n_cycles = check_int("n_cycles", n_cycles, low=1)
        self.ratio = check_number("ratio", ratio, low=0.0, low_open=True)
        if self.ratio > 1:
            raise ValueError(f"Argument ratio should be in (0, 1], but given {ratio!r}")
        self.start = check_number("start", start)
        self.stop = check_number("stop", stop)
        if shape not in _SHAPES:
            choices = ", ".join(repr(s) for s in _SHAPES)
            raise ValueError(f"Argument shape should be one of {choices}, but given {shape!r}")
        self.shape = shape
        self._table: array[float] | None = None

    def _ramp(self, i: int, ramp_steps: float) -> float | None:
        """The ramp's value at offset ``i`` of a cycle, or None once the ramp is over."""
        if self.shape == "linear":  # the reference compares the value itself with stop
            value = self.start + i * (self.stop - self.start) / ramp_steps
            ended = value > self.stop if self.start <= self.stop else value < self.stop
            return None if ended else value
        v = i / ramp_steps
        if v > 1:
            return None
        f = sigmoid(12 * v - 6) if self.shape == "sigmoid" else 0.5 - 0.5 * math.cos(math.pi * v)
        return _lerp(self.start, self.stop, f)

    def _build_table(self) -> array[float]:
        """Every step's value, filled by the authors' loop: cycle by cycle, a later cycle
        overwriting an earlier one, at the step ``int(i + c * T)`` computed in floating point."""
        table = array("d", [self.stop]) * self.total_steps
        period = self.total_steps / self.n_cycles
        for c in range(self.n_cycles):
            origin, i = c * period, 0
            while int(i + origin) < self.total_steps:
                value = self._ramp(i, period * self.ratio)
                if value is None:
                    break
                table[int(i + origin)] = value
                i += 1
        return table

    def _value(self, step: int) -> float:
        if step >= self.total_steps:
            return self.stop
        if self._table is None:  # built at the first call, and not pickled
            self._table = self._build_table()
        return self._table[step]

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_table": None}


def _lerp(start: float, stop: float, t: float) -> float:
    # Rounding can carry start + (stop - start) * t one ulp past stop: clip into the range.
    value = start + (stop - start) * t
    return min(max(value, min(start, stop)), max(start, stop))
