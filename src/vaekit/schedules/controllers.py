"""Feedback controllers of beta: stateful, with a checkpointable state of plain numbers."""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Mapping

from vaekit._checks import check_int, check_number, check_real, check_state_dict
from vaekit.schedules._common import Repr, sigmoid

__all__ = ["GECO", "Controller", "PIController"]


class Controller(Repr, abc.ABC):
    r"""Base class of the feedback controllers.

    ``update(observation)`` takes one measurement and returns the new :math:`\beta`; a
    non-finite observation leaves the state unchanged and emits a RuntimeWarning.
    ``state_dict()`` holds plain Python numbers only, so a checkpoint of it loads with
    ``torch.load(..., weights_only=True)``.
    """

    _state_keys: tuple[str, ...] = ()
    _beta: float
    beta_min: float
    beta_max: float

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
        if not self.beta_min <= values["beta"] <= self.beta_max:
            raise ValueError(
                f"Argument state_dict['beta'] should be in [beta_min, beta_max] = "
                f"[{self.beta_min}, {self.beta_max}], but given {values['beta']!r}"
            )
        return values


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

    def _update(self, observation: float) -> None:
        error = self.target_kl - observation
        p = self.kp * sigmoid(-error)  # kp / (1 + exp(error)), without overflow
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
