r"""Schedules and feedback controllers for the KL weight :math:`\beta`, in plain Python.

A schedule is a pure, picklable callable ``schedule(step) -> float`` with step 0 the first; a
controller is a stateful object whose ``update(observation)`` returns the next :math:`\beta`.
Neither needs Ignite: :mod:`vaekit.handlers` drives them from an engine, and a plain training
loop or a Lightning module calls them directly.
"""

from vaekit.schedules.annealing import Constant, Cyclical, LinearWarmup, Logistic, Schedule
from vaekit.schedules.controllers import GECO, Controller, PIController

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
