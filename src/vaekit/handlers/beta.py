r"""Ignite handlers that drive :math:`\beta` from a schedule or a feedback controller."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import ignite.distributed as idist
from ignite.engine import CallableEventWithFilter, Engine, Events, EventsList
from ignite.handlers.state_param_scheduler import StateParamScheduler
from torch import Tensor

from vaekit._checks import (
    check_callable,
    check_instance,
    check_int,
    check_state_dict,
    check_target,
)
from vaekit._observation import entry_of, observation_to_float
from vaekit.schedules import Controller

__all__ = ["BetaController", "BetaScheduler"]

_Event = str | Events | CallableEventWithFilter | EventsList


class BetaScheduler(StateParamScheduler):
    r"""Sets :math:`\beta` from a schedule on each firing: on engine state and on a target.

    A :class:`~ignite.handlers.state_param_scheduler.StateParamScheduler` whose :math:`k`-th
    firing (:math:`k = 0, 1, \dots`) sets ``engine.state.<param_name>`` and, when given,
    ``target.<attr>`` to ``schedule(k)``. It fires on ``ITERATION_STARTED`` by default, so the
    first iteration's process function already sees ``schedule(0)`` (Ignite's own state
    schedulers start counting at 1). Attach it to ``EPOCH_STARTED`` for a per-epoch schedule.

    ``state_dict()`` holds only the number of firings, so a
    :class:`~ignite.handlers.checkpoint.Checkpoint` of it loads with ``weights_only=True`` and a
    resumed run continues the schedule where it stopped. :meth:`simulate_values` and
    :meth:`plot_values` work as in Ignite, with ``schedule=`` among their keyword arguments.

    Args:
        schedule: a callable ``step -> float``, such as those of :mod:`vaekit.schedules`.
        target: an object whose attribute ``attr`` to set, such as a :class:`vaekit.VAELoss`.
        attr: the attribute of ``target``.
        param_name: the attribute of ``engine.state``.
        save_history: also append each value to ``engine.state.param_history[param_name]``.

    Raises:
        TypeError: if ``schedule`` is not callable or a name is not a str; at
            ``load_state_dict``, if the saved number of firings is not an int.
        ValueError: if ``target`` has no attribute ``attr``, on ``attach`` if
            ``engine.state`` already has ``param_name``, or at ``load_state_dict`` if the state
            has other keys or a negative number of firings.

    Example:
        >>> from ignite.engine import Engine
        >>> from vaekit.handlers import BetaScheduler
        >>> from vaekit.schedules import LinearWarmup
        >>> seen = []
        >>> trainer = Engine(lambda engine, batch: seen.append(engine.state.beta))
        >>> BetaScheduler(LinearWarmup(4)).attach(trainer)
        >>> _ = trainer.run(range(3), max_epochs=2)
        >>> seen
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
        >>> BetaScheduler.simulate_values(3, schedule=LinearWarmup(4))
        [[0, 0.0], [1, 0.25], [2, 0.5]]
    """

    def __init__(
        self,
        schedule: Callable[[int], float],
        *,
        target: object | None = None,
        attr: str = "beta",
        param_name: str = "beta",
        save_history: bool = False,
    ) -> None:
        check_callable("schedule", schedule)
        check_target(target, attr)
        check_instance("param_name", param_name, str, "a str")
        super().__init__(param_name=param_name, save_history=save_history, create_new=True)
        self.schedule = schedule
        self.target = target
        self.attr = attr
        # The position is the state; the settings come from the constructor.
        self._state_attrs = ["event_index"]

    def attach(self, engine: Engine, event: _Event = Events.ITERATION_STARTED) -> None:
        """Set :math:`\\beta` on each ``event`` (default: before each iteration)."""
        super().attach(engine, event)

    def get_param(self) -> float:
        """The value of the firing in progress: Ignite counts it in ``event_index`` first, so
        firing ``k`` (0 the first) sets ``schedule(event_index - 1) = schedule(k)``."""
        return self.schedule(self.event_index - 1)

    def __call__(self, engine: Engine) -> None:
        """Ignite's firing (count, ``get_param``, set the state, the history), then the
        target."""
        super().__call__(engine)
        if self.target is not None:
            setattr(self.target, self.attr, getattr(engine.state, self.param_name))

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the number of firings saved by ``state_dict()``; a refused state changes nothing.

        Raises:
            TypeError: if ``state_dict`` is not a mapping or its ``event_index`` is not an int.
            ValueError: if its keys are not ``['event_index']`` or ``event_index`` is negative.
        """
        check_state_dict(state_dict, self._state_attrs)
        check_int("state_dict['event_index']", state_dict["event_index"])
        super().load_state_dict(state_dict)

    @classmethod
    def simulate_values(cls, num_events: int, **scheduler_kwargs: Any) -> list[list[int]]:
        """``[[k, schedule(k)] for k in range(num_events)]``, through a throw-away engine."""
        scheduler_kwargs.setdefault("param_name", "beta")
        return super().simulate_values(num_events, **scheduler_kwargs)

    @classmethod
    def plot_values(cls, num_events: int, **scheduler_kwargs: Any) -> Any:
        """Plot :meth:`simulate_values` with matplotlib, labelled with ``param_name``."""
        scheduler_kwargs.setdefault("param_name", "beta")
        return super().plot_values(num_events, **scheduler_kwargs)


class BetaController:
    r"""Feeds a controller one observation per iteration and sets the :math:`\beta` it returns.

    ``attach(engine)`` publishes the controller's current :math:`\beta` on
    ``engine.state.<param_name>`` and, when given, ``target.<attr>``, again when the engine
    starts a run (so a state loaded from a checkpoint after ``attach`` is published too, and
    never reset), and after each iteration feeds the controller
    ``output_transform(engine.state.output)`` and publishes the new :math:`\beta`. Under
    ``torch.distributed`` the observation is first averaged across ranks, so that every rank
    uses the same :math:`\beta`.

    ``state_dict()`` is the controller's: plain Python numbers, which a
    :class:`~ignite.handlers.checkpoint.Checkpoint` loads with ``weights_only=True``.

    Args:
        controller: a :class:`vaekit.schedules.Controller`.
        output_transform: maps ``engine.state.output`` to the observation, a number or a
            one-element tensor. The default takes the ``kl`` entry of a mapping or the ``kl``
            attribute of a :class:`vaekit.VAELossOutput`; GECO users select the reconstruction.
        target: an object whose attribute ``attr`` to set, such as a :class:`vaekit.VAELoss`.
        attr: the attribute of ``target``.
        param_name: the attribute of ``engine.state``.

    Raises:
        TypeError: if an argument is of the wrong type, or an output has no usable observation.
        ValueError: if ``target`` has no attribute ``attr``, on ``attach`` if ``engine.state``
            already has ``param_name``, or if an observation tensor has more than one element.

    Example:
        >>> from ignite.engine import Engine
        >>> from vaekit.handlers import BetaController
        >>> from vaekit.schedules import PIController
        >>> trainer = Engine(lambda engine, batch: {"kl": batch})
        >>> BetaController(PIController(target_kl=2.0)).attach(trainer)
        >>> _ = trainer.run([0.5, 1.0])
        >>> round(trainer.state.beta, 10)
        0.0024394142
    """

    def __init__(
        self,
        controller: Controller,
        *,
        output_transform: Callable[[Any], float | Tensor] | None = None,
        target: object | None = None,
        attr: str = "beta",
        param_name: str = "beta",
    ) -> None:
        check_instance("controller", controller, Controller, "a vaekit.schedules.Controller")
        if output_transform is not None:
            check_callable("output_transform", output_transform)
        check_target(target, attr)
        check_instance("param_name", param_name, str, "a str")
        self.controller = controller
        self.output_transform = output_transform or _kl_of
        self.target = target
        self.attr = attr
        self.param_name = param_name

    def attach(self, engine: Engine, event: _Event = Events.ITERATION_COMPLETED) -> None:
        """Publish :math:`\\beta` now and at each run's start; update it on each ``event``."""
        if hasattr(engine.state, self.param_name):
            raise ValueError(
                f"Attribute '{self.param_name}' already exists in the engine.state. "
                "This may be a conflict between multiple handlers. Please choose another name."
            )
        self._publish(engine)
        engine.add_event_handler(Events.STARTED, self._publish)
        engine.add_event_handler(event, self)

    def __call__(self, engine: Engine) -> None:
        observation = observation_to_float(self.output_transform(engine.state.output))
        world_size = idist.get_world_size()
        if world_size > 1:
            observation = float(idist.all_reduce(observation)) / world_size
        self.controller.update(observation)
        self._publish(engine)

    def _publish(self, engine: Engine) -> None:
        beta = self.controller.beta
        setattr(engine.state, self.param_name, beta)
        if self.target is not None:
            setattr(self.target, self.attr, beta)

    def state_dict(self) -> dict[str, float]:
        """The controller's state: plain Python numbers."""
        return self.controller.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, float]) -> None:
        """Restore the controller's state; it is published when the engine next starts."""
        self.controller.load_state_dict(state_dict)


def _kl_of(output: Any) -> Any:
    try:
        return entry_of(output, "kl")
    except LookupError:
        raise TypeError(
            "Argument output_transform is needed: engine.state.output should have a 'kl' entry "
            f"or attribute, but given {type(output).__name__}"
        ) from None
