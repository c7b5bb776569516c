r"""Schedules and feedback controllers for the KL weight :math:`\beta`, in plain Python.

A schedule is a pure, picklable callable ``schedule(step) -> float`` with step 0 the first; a
controller is a stateful object whose ``update(observation)`` returns the next :math:`\beta`.
Neither needs Ignite: :mod:`vaekit.handlers` drives them from an engine, and a plain training
loop or a Lightning module calls them directly.
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Mapping

from vaekit._checks import check_int, check_number, check_real, check_state_dict

__all__ = [
    "GECO",
    "Constant",
    "Controller",
    "Cyclical",
    "LinearWarmup",
    "Logistic",
    "PIController",
    "Schedule",
]

_SHAPES = ("linear", "sigmoid", "cosine")


class _Repr:
    """``repr`` as ``Name(arg=value, ...)`` over the attributes listed in ``_fields``."""

    _fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({args})"


class Schedule(_Repr, abc.ABC):
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
        return _lerp(self.start, self.stop, _sigmoid(self.steepness * offset))


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
        self._period = total_steps / n_cycles
        self._ramp_steps = self._period * self.ratio
        self._ramp_len = self._count_ramp()

    def _value_at(self, i: int) -> float:
        """The ramp's value at offset ``i`` of a cycle."""
        if self.shape == "linear":
            return self.start + i * (self.stop - self.start) / self._ramp_steps
        v = i / self._ramp_steps
        f = _sigmoid(12 * v - 6) if self.shape == "sigmoid" else 0.5 - 0.5 * math.cos(math.pi * v)
        return _lerp(self.start, self.stop, f)

    def _in_ramp(self, i: int) -> bool:
        if self.shape == "linear":  # the reference compares the value itself with stop
            value = self._value_at(i)
            return value <= self.stop if self.start <= self.stop else value >= self.stop
        return i / self._ramp_steps <= 1

    def _count_ramp(self) -> int:
        # The ramp condition is monotone in i and flips near i = T * ratio: search from there.
        # Offsets past total_steps never matter (and a flat ramp never ends): stop there.
        n = min(max(int(self._ramp_steps) - 1, 0), self.total_steps)
        while n < self.total_steps and self._in_ramp(n):
            n += 1
        while n > 0 and not self._in_ramp(n - 1):
            n -= 1
        return n

    def _value(self, step: int) -> float:
        if step >= self.total_steps:
            return self.stop
        # The last cycle with int(c * T) <= step, plus one for rounding.
        top = min(self.n_cycles - 1, int((step + 1) / self._period) + 1)
        for c in range(top, -1, -1):  # a later cycle overwrites an earlier one
            origin = c * self._period
            if int(origin) + self._ramp_len < step:
                break  # this and every earlier cycle ramp before step
            # int(i + origin) is i + int(origin), or one more where rounding carries.
            for i in (step - int(origin), step - int(origin) - 1):
                if 0 <= i < self._ramp_len and int(i + origin) == step:
                    return self._value_at(i)
        return self.stop


class Controller(_Repr, abc.ABC):
    r"""Base class of the feedback controllers.

    ``update(observation)`` takes one measurement and returns the new :math:`\beta`; a
    non-finite observation leaves the state unchanged and emits a RuntimeWarning.
    ``state_dict()`` holds plain Python numbers only, so a checkpoint of it loads with
    ``torch.load(..., weights_only=True)``.
    """

    _state_keys: tuple[str, ...] = ()
    _beta: float

    @property
    def beta(self) -> float:
        r"""The current :math:`\beta`."""
        return self._beta

    def update(self, observation: float) -> float:
        r"""Feed one observation and return the new :math:`\beta`.

        Args:
            observation: the measured quantity (the KL, or GECO's reconstruction error).

        Returns:
            The new :math:`\beta`, unchanged if ``observation`` is not finite.

        Raises:
            TypeError: if ``observation`` is not a number.
        """
        value = check_real("observation", observation)
        if math.isfinite(value):
            self._update(value)
        else:
            warnings.warn(
                f"{type(self).__name__} ignored the non-finite observation {observation!r}; "
                "its state is unchanged",
                RuntimeWarning,
                stacklevel=2,
            )
        return self._beta

    @abc.abstractmethod
    def _update(self, observation: float) -> None: ...

    def state_dict(self) -> dict[str, float]:
        """The controller's state as a dict of plain Python numbers."""
        return {key: getattr(self, f"_{key}") for key in self._state_keys}

    def load_state_dict(self, state_dict: Mapping[str, float]) -> None:
        """Restore the state returned by :meth:`state_dict`.

        Every entry is checked before any is set: a refused state leaves the controller as it
        was. An int entry (a count) must be an int, any other a finite number, and ``beta``
        must lie within the controller's clip.

        Raises:
            TypeError: if ``state_dict`` is not a mapping or holds a value of the wrong type.
            ValueError: if its keys are not those of :meth:`state_dict`, or a value is not
                finite or out of its range.
        """
        check_state_dict(state_dict, self._state_keys)
        for key, value in self._validated(state_dict).items():
            setattr(self, f"_{key}", value)

    def _validated(self, state_dict: Mapping[str, object]) -> dict[str, float]:
        """The entries of ``state_dict``, checked; each keeps the Python type of the state."""
        values: dict[str, float] = {}
        for key in self._state_keys:
            if isinstance(getattr(self, f"_{key}"), int):
                values[key] = check_int(f"state_dict[{key!r}]", state_dict[key])
            else:
                values[key] = check_number(f"state_dict[{key!r}]", state_dict[key])
        return values

    def _check_beta(self, values: Mapping[str, float], low: float, high: float) -> None:
        if not low <= values["beta"] <= high:
            raise ValueError(
                f"Argument state_dict['beta'] should be in [beta_min, beta_max] = "
                f"[{low}, {high}], but given {values['beta']!r}"
            )


class PIController(Controller):
    r"""The PI controller of ControlVAE (Shao et al., 2020), which holds the KL at a target.

    With the error :math:`e_t = \mathrm{KL}^* - \mathrm{KL}_t`,

    .. math::
        P_t = \frac{K_p}{1 + e^{e_t}}, \qquad
        I_t = I_{t-1} - K_i\, e_t, \qquad
        \beta_t = \mathrm{clip}(\beta_{\min} + P_t + I_t,\ \beta_{\min},\ \beta_{\max}).

    A KL above the target makes :math:`e_t < 0`, which raises both terms and so :math:`\beta`.
    Both gains are non-negative here; the paper's code writes :math:`K_i` with the opposite
    sign. Its anti-windup check can never fire, so after a long saturation the integral has run
    far past the clip and :math:`\beta` stays pinned for thousands of steps. This controller
    integrates conditionally instead: the integral moves towards a clip only until the output
    reaches it, so :math:`\beta` leaves the bound as soon as the error changes sign. Before the
    first observation :math:`\beta = \beta_{\min}`. Shao et al., 2020, "ControlVAE:
    controllable variational autoencoder" (ICML).

    Args:
        target_kl: the KL to hold, :math:`\mathrm{KL}^* \ge 0`.
        kp: the proportional gain :math:`K_p \ge 0`.
        ki: the integral gain :math:`K_i \ge 0`.
        beta_min: the lower clip, ``>= 0``.
        beta_max: the upper clip, ``>= beta_min``.

    Raises:
        TypeError: if an argument is not a number.
        ValueError: if a number is negative or not finite, or ``beta_max < beta_min``.

    Example:
        >>> from vaekit.schedules import PIController
        >>> controller = PIController(target_kl=2.0)
        >>> round(controller.update(0.5), 10), round(controller.update(1.0), 10)
        (0.0016742552, 0.0024394142)
        >>> controller.state_dict()  # doctest: +ELLIPSIS
        {'beta': 0.00243941..., 'integral': -0.00025}
    """

    _fields = ("target_kl", "kp", "ki", "beta_min", "beta_max")
    _state_keys = ("beta", "integral")

    def __init__(
        self,
        target_kl: float,
        *,
        kp: float = 0.01,
        ki: float = 1e-4,
        beta_min: float = 0.0,
        beta_max: float = 1.0,
    ) -> None:
        self.target_kl = check_number("target_kl", target_kl, low=0.0)
        self.kp = check_number("kp", kp, low=0.0)
        self.ki = check_number("ki", ki, low=0.0)
        self.beta_min, self.beta_max = _check_bounds(beta_min, beta_max)
        self._beta = self.beta_min
        self._integral = 0.0

    def _validated(self, state_dict: Mapping[str, object]) -> dict[str, float]:
        values = super()._validated(state_dict)
        self._check_beta(values, self.beta_min, self.beta_max)
        return values

    def _update(self, observation: float) -> None:
        error = self.target_kl - observation
        p = self.kp * _sigmoid(-error)  # kp / (1 + exp(error)), without overflow
        delta = -self.ki * error
        base = self.beta_min + p
        integral = self._integral + delta
        # Conditional integration: integrate up to the clip the output saturates at, no further.
        if delta > 0 and base + integral > self.beta_max:
            integral = max(self._integral, self.beta_max - base)
        elif delta < 0 and base + integral < self.beta_min:
            integral = min(self._integral, self.beta_min - base)
        self._integral = integral
        self._beta = min(max(base + integral, self.beta_min), self.beta_max)


class GECO(Controller):
    r"""GECO (Rezende & Viola, 2018): :math:`\beta` rises while the reconstruction beats a goal.

    The multiplicative form used by GENESIS. The reconstruction error :math:`r_t` is smoothed,
    :math:`\bar r_1 = r_1` and :math:`\bar r_t = \alpha \bar r_{t-1} + (1 - \alpha) r_t`, and

    .. math::
        \beta_t = \mathrm{clip}\big(\beta_{t-1}\, e^{\eta (\mathrm{goal} - \bar r_t)},\
        \beta_{\min},\ \beta_{\max}\big),

    with :math:`\eta` = ``step_size``, times ``speedup`` while :math:`\mathrm{goal} > \bar r_t`
    (the constraint is met, so :math:`\beta` may grow faster). Feed it the reconstruction term,
    not the KL. Rezende & Viola, 2018, "Taming VAEs"; Engelcke et al., 2020, "GENESIS:
    generative scene inference and sampling with object-centric latent representations"
    (ICLR).

    Args:
        goal: the reconstruction error to reach, in the units of the observations.
        step_size: :math:`\eta > 0`.
        alpha: the smoothing factor, in :math:`[0, 1)`.
        beta_init: :math:`\beta` before the first observation, within the clip.
        speedup: factor on :math:`\eta` while the goal is met, ``> 0``; ``None`` for 1.
        beta_min: the lower clip, ``> 0``.
        beta_max: the upper clip, ``>= beta_min``.

    Raises:
        TypeError: if an argument is not a number.
        ValueError: if a number is out of its range or not finite.

    Example:
        >>> from vaekit.schedules import GECO
        >>> controller = GECO(goal=100.0)
        >>> round(controller.update(150.0), 6)
        0.951229
        >>> controller.state_dict()  # doctest: +ELLIPSIS
        {'beta': 0.951229..., 'ema': 150.0, 'num_updates': 1}
    """

    _fields = ("goal", "step_size", "alpha", "beta_init", "speedup", "beta_min", "beta_max")
    _state_keys = ("beta", "ema", "num_updates")

    def __init__(
        self,
        goal: float,
        *,
        step_size: float = 1e-3,
        alpha: float = 0.99,
        beta_init: float = 1.0,
        speedup: float | None = None,
        beta_min: float = 1e-10,
        beta_max: float = 1e10,
    ) -> None:
        self.goal = check_number("goal", goal)
        self.step_size = check_number("step_size", step_size, low=0.0, low_open=True)
        self.alpha = check_number("alpha", alpha, low=0.0, high=1.0, high_open=True)
        self.speedup = None
        if speedup is not None:
            self.speedup = check_number("speedup", speedup, low=0.0, low_open=True)
        # beta_min > 0: a multiplicative beta sticks at 0
        beta_min = check_number("beta_min", beta_min, low=0.0, low_open=True)
        self.beta_min, self.beta_max = _check_bounds(beta_min, beta_max)
        self.beta_init = check_number("beta_init", beta_init)
        if not self.beta_min <= self.beta_init <= self.beta_max:
            raise ValueError(
                f"Argument beta_init should be in [beta_min, beta_max] = "
                f"[{self.beta_min}, {self.beta_max}], but given {beta_init!r}"
            )
        self._beta = self.beta_init
        self._ema = 0.0
        self._num_updates = 0

    def _validated(self, state_dict: Mapping[str, object]) -> dict[str, float]:
        values = super()._validated(state_dict)
        self._check_beta(values, self.beta_min, self.beta_max)
        return values

    def _update(self, observation: float) -> None:
        if self._num_updates == 0:
            self._ema = observation
        else:
            self._ema = self.alpha * self._ema + (1 - self.alpha) * observation
        self._num_updates += 1
        constraint = self.goal - self._ema
        eta = self.step_size
        if self.speedup is not None and constraint > 0:
            eta *= self.speedup
        # exp overflows past ~709; any factor that large sends beta to beta_max anyway.
        factor = math.exp(min(eta * constraint, 700.0))
        self._beta = min(max(self._beta * factor, self.beta_min), self.beta_max)


def _check_bounds(beta_min: object, beta_max: object) -> tuple[float, float]:
    low = check_number("beta_min", beta_min, low=0.0)
    high = check_number("beta_max", beta_max, low=0.0)
    if high < low:
        raise ValueError(
            f"Argument beta_max should be >= beta_min={low}, but given beta_max={beta_max!r}"
        )
    return low, high


def _sigmoid(x: float) -> float:
    # Two branches so that exp never overflows.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _lerp(start: float, stop: float, t: float) -> float:
    # Rounding can carry start + (stop - start) * t one ulp past stop: clip into the range.
    value = start + (stop - start) * t
    return min(max(value, min(start, stop)), max(start, stop))
