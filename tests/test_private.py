"""The private torchmetrics API that vaekit relies on, pinned on the installed version.

Each test states one assumption of vaekit._private (or of the metrics' overrides of torchmetrics'
hooks) and fails, naming it, on a torchmetrics release that breaks it.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.aggregation import SumMetric

from vaekit._private import (
    torchmetrics_defaults,
    torchmetrics_drop_computed,
    torchmetrics_set_update_count,
)
from vaekit.metrics import KLPerDimension
from vaekit.metrics._base import _SubstitutingSyncFn


def _summed(*values: float) -> SumMetric:
    metric = SumMetric()
    for value in values:
        metric.update(torch.tensor(value))
    return metric


def test_defaults_are_the_values_reset_restores() -> None:
    metric = _summed(2.0, 3.0)
    defaults = torchmetrics_defaults(metric)
    assert set(defaults) == set(metric.metric_state) == {"sum_value"}
    assert torch.equal(defaults["sum_value"], torch.tensor(0.0))  # not the sum of 5
    assert defaults["sum_value"] is not metric.sum_value
    metric.reset()
    assert torch.equal(metric.sum_value, defaults["sum_value"])


def test_set_update_count_is_what_update_count_returns() -> None:
    metric = SumMetric()
    metric.merge_state({"sum_value": torch.tensor(4.0)})  # states, but no update
    assert metric.update_count == 0
    torchmetrics_set_update_count(metric, 3)
    assert metric.update_count == 3
    assert metric.update_called
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "compute before update" warning any more
        assert metric.compute().item() == 4.0
    metric.update(torch.tensor(1.0))
    assert metric.update_count == 4  # torchmetrics counts on from it


def test_drop_computed_makes_compute_compute_again() -> None:
    metric = _summed(2.0)
    first = metric.compute()
    assert metric.compute() is first  # torchmetrics returns the cached result itself
    metric.sum_value = torch.tensor(7.0)  # a change compute() cannot see while it caches
    assert metric.compute().item() == 2.0
    torchmetrics_drop_computed(metric)
    assert metric.compute().item() == 7.0


def test_apply_takes_states_to_leave_alone() -> None:
    # vaekit.metrics._base._SumStateMetric._apply passes its states as exclude_state.
    assert "exclude_state" in inspect.signature(Metric._apply).parameters
    metric = _summed(1.0)
    Metric._apply(metric, lambda t: t.double(), exclude_state=["sum_value"])
    assert metric.sum_value.dtype == torch.float32
    Metric._apply(metric, lambda t: t.double())
    assert metric.sum_value.dtype == torch.float64


class _Recording(SumMetric):
    """A SumMetric that records the functions its ``_apply`` hook receives."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[Any] = []

    def _apply(self, fn: Any, exclude_state: Any = "") -> Any:
        self.applied.append(fn)
        return super()._apply(fn, exclude_state=exclude_state)


@pytest.mark.parametrize(
    "cast",
    [
        lambda m: m.set_dtype(torch.float64),
        lambda m: m.to(torch.float16),
        lambda m: m.to("meta"),
        lambda m: torch.nn.ModuleDict({"m": m}).half(),
    ],
    ids=["set_dtype", "to(dtype)", "to(device)", "parent half()"],
)
def test_set_dtype_and_module_casts_reach_the_apply_hook(cast: Any) -> None:
    metric = _Recording()
    cast(metric)
    assert len(metric.applied) == 1


def test_sync_hands_each_tensor_state_itself_to_dist_sync_fn() -> None:
    # vaekit.metrics._base._substituting recognises the states by identity.
    metric = _summed(2.0)
    seen: list[tuple[Tensor, Any]] = []

    def gather(tensor: Tensor, group: Any = None) -> list[Tensor]:
        seen.append((tensor, group))
        return [tensor, tensor]  # two processes that hold the same

    group, state = object(), metric.sum_value
    metric.sync(dist_sync_fn=gather, process_group=group, distributed_available=lambda: True)
    assert len(seen) == 1
    assert seen[0][0] is state  # the state itself, not a copy
    assert seen[0][1] is group  # passed as group=...
    assert metric.sum_value.item() == 4.0
    metric.unsync()
    assert metric.sum_value.item() == 2.0


def test_a_state_torchmetrics_does_not_gather_itself_fails_loudly() -> None:
    metric = KLPerDimension()
    metric.update(torch.zeros(2, 3), torch.zeros(2, 3))
    sync_fn = _SubstitutingSyncFn(metric, lambda tensor, group=None: [tensor])
    metric._sync_replacements = lambda gather, group: {"kl_sum": torch.ones(3)}  # type: ignore[method-assign]
    torch.testing.assert_close(sync_fn(metric.kl_sum.clone()), [metric.kl_sum])  # as it is
    with pytest.raises(
        RuntimeError,
        match=r"^KLPerDimension.sync expected torchmetrics to gather the metric's states "
        r"themselves, but the states \['kl_sum'\] were not gathered$",
    ):
        sync_fn.check()
    torch.testing.assert_close(sync_fn(metric.kl_sum), [torch.ones(3)])  # the state itself
    sync_fn.check()
