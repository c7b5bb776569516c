"""Every read or write of a dependency's private attributes in vaekit, one function each.

torchmetrics has no public way to do these three things. Each function touches one private
attribute and says which; ``tests/test_private.py`` checks on the installed version that the
attribute exists and behaves as assumed, so a torchmetrics release that changes it fails there,
by name, rather than somewhere downstream. (The vaekit metrics also override torchmetrics'
``Metric._apply`` hook with its ``exclude_state`` argument, in ``vaekit.metrics._base``; the same
test file pins that contract.)

Nothing here imports torchmetrics: the core stays free of the optional extras.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor
    from torchmetrics import Metric

__all__: list[str] = []


def torchmetrics_defaults(metric: Metric) -> Mapping[str, Tensor | list[Tensor]]:
    """The value each state of ``metric`` takes at ``reset()``: torchmetrics' ``Metric._defaults``.

    ``metric_state`` gives the current values; only the defaults tell the shape that a sum state
    keeps whatever the data, which a loaded checkpoint must match.
    """
    defaults: Mapping[str, Tensor | list[Tensor]] = metric._defaults
    return defaults


def torchmetrics_set_update_count(metric: Metric, count: int) -> None:
    """Make ``metric.update_count`` return ``count``: torchmetrics' ``Metric._update_count``.

    ``update_count`` has no setter, and torchmetrics warns in ``compute()`` while it is 0.
    """
    metric._update_count = count


def torchmetrics_drop_computed(metric: Metric) -> None:
    """Drop the result that ``metric.compute()`` cached: torchmetrics' ``Metric._computed``.

    torchmetrics drops it in ``update``, ``forward`` and ``reset``, but not in ``merge_state``
    (1.9.0), after which ``compute()`` would return the value from before the merge.
    """
    metric._computed = None
