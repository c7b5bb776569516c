"""The checkpoint of a TorchMetricsAdapter: the torchmetrics states of a metric and of every metric
in it, as plain values, checked whole before anything is loaded.

One process's part is ``{"metrics": {name: {"class", "update_count", "states"}}}``, with the
names of :func:`metrics_in`; the adapter keeps one part per process under :data:`PER_RANK`, the
layout of Ignite's own metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from vaekit._private import torchmetrics_set_update_count

if TYPE_CHECKING:
    from torchmetrics import Metric, MetricCollection

__all__: list[str] = []

PER_RANK = "__metric_state_per_rank"
"""The one key of an adapter's state dict: a list of per-process parts, in rank order."""


def metrics_in(metric: Metric | MetricCollection) -> dict[str, Metric]:
    """The torchmetrics metrics in ``metric`` by module name: ``""`` for ``metric`` itself, the
    member names of a collection, the inner metrics of a wrapper or a compositional metric."""
    from torchmetrics import Metric

    return {name: m for name, m in metric.named_modules() if isinstance(m, Metric)}


def save(metric: Metric | MetricCollection) -> dict[str, Any]:
    """This process's part of the checkpoint: CPU copies of every state, and the update counts."""
    return {"metrics": {name: _save(m) for name, m in metrics_in(metric).items()}}


def load(metric: Metric | MetricCollection, part: Any) -> None:
    """Load this process's ``part`` of a checkpoint into ``metric``, or raise and change nothing.

    Each metric is reset (which drops the results its ``compute`` and ``forward`` cached), then
    takes copies of its states through torchmetrics' ``load_state_dict``, on the device and in
    the dtype its states had, and its update count; the members
    of a collection's compute groups then share their first member's states again, as after an
    update.

    Raises:
        ValueError: if ``part`` was not saved from a metric like ``metric`` (other classes,
            collection keys or state names) or holds states of another shape or kind of dtype.
    """
    from torchmetrics import Metric, MetricCollection

    metrics = metrics_in(metric)
    saved = part.get("metrics") if isinstance(part, Mapping) else None
    if not isinstance(saved, Mapping) or not all(
        isinstance(e, Mapping) and {"class", "update_count", "states"} <= set(e)
        for e in saved.values()
    ):
        raise ValueError(
            "Argument state_dict should be a TorchMetricsAdapter.state_dict(), "
            f"but given {summary(part)}"
        )
    ours = {name: type(m).__name__ for name, m in metrics.items()}
    theirs = {name: entry["class"] for name, entry in saved.items()}
    if ours != theirs:
        raise ValueError(
            f"Argument state_dict should hold the states of {_describe(ours)}, "
            f"but given the states of {_describe(theirs)}"
        )
    for name, m in metrics.items():  # all checks before any change
        _check_entry(name, m, saved[name])
    states = {name: _placed(m, saved[name]["states"]) for name, m in metrics.items()}
    modules = [m for m in metric.modules() if isinstance(m, (Metric, MetricCollection))]
    for module in modules:  # a collection's reset also points its groups' members at one state
        module.reset()
    for name, m in metrics.items():
        m.load_state_dict(states[name], strict=False)  # strict=False: the module's own weights
        torchmetrics_set_update_count(m, saved[name]["update_count"])
    for module in modules:
        if isinstance(module, MetricCollection):
            module.values(copy_state=False)  # hands out the members, groups sharing states again


def _to_cpu(value: Any) -> Any:
    """A detached CPU copy of a state (a tensor, or a list state's items), never a view of it."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, list):
        return [_to_cpu(item) for item in value]
    return value


def _save(metric: Metric) -> dict[str, Any]:
    return {
        "class": type(metric).__name__,
        "update_count": metric.update_count,
        "states": {name: _to_cpu(value) for name, value in metric.metric_state.items()},
    }


def summary(value: object) -> str:
    """``value``'s type, and its keys if it is a mapping: ``"dict with keys ['a', 'b']"``."""
    keys = f" with keys {sorted(map(str, value))}" if isinstance(value, Mapping) else ""
    return type(value).__name__ + keys


def _describe(classes: Mapping[str, Any]) -> str:
    """``name=Class`` for each metric, the class alone for the root: ``"ReconKLRatio"``."""
    return ", ".join(f"{name}={cls}" if name else str(cls) for name, cls in sorted(classes.items()))


def _check_entry(name: str, metric: Metric, entry: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``entry``, a saved metric, loads into ``metric``."""
    where = _describe({name: type(metric).__name__})
    states, count = entry["states"], entry["update_count"]
    current = metric.metric_state
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(
            f"Argument state_dict should hold a non-negative int update count for {where}, "
            f"but given {count!r}"
        )
    if not isinstance(states, Mapping) or set(states) != set(current):
        given = sorted(states) if isinstance(states, Mapping) else type(states).__name__
        raise ValueError(
            f"Argument state_dict should hold the states {sorted(current)} of {where}, "
            f"but given {given}"
        )
    for state, value in current.items():
        kind = torch.Tensor if isinstance(value, torch.Tensor) else list
        saved = states[state]
        if not isinstance(saved, kind):
            raise ValueError(
                f"Argument state_dict should hold a {kind.__name__} for the state {state} of "
                f"{where}, but given {type(saved).__name__}"
            )
        if not (isinstance(saved, torch.Tensor) and isinstance(value, torch.Tensor)):
            continue
        if _kind(saved.dtype) != _kind(value.dtype):
            wanted = _kind(value.dtype)
            raise ValueError(
                "Argument state_dict should hold a tensor of "
                f"{'an' if wanted == 'integer' else 'a'} {wanted} dtype for the state {state} of "
                f"{where}, but given dtype {saved.dtype}"
            )
    problem = _shape_problem(metric, states, where)
    if problem is not None:
        raise ValueError(problem)


def _kind(dtype: torch.dtype) -> str:
    """The kind of values ``dtype`` holds; a state loads into its metric's dtype of its kind."""
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating-point"
    return "bool" if dtype == torch.bool else "integer"


def _shape_problem(metric: Metric, states: Mapping[str, Any], where: str) -> str | None:
    """Why the saved tensor states cannot be ``metric``'s by their shapes, or None.

    A vaekit metric knows which of its sums take the latent shape; any other metric's tensor
    states keep the shapes of their defaults, as torchmetrics' sum states do.
    """
    from vaekit.metrics._base import _default_shape_problem, _SumStateMetric

    if isinstance(metric, _SumStateMetric):
        return metric._state_shape_problem(states, where)
    return _default_shape_problem(metric, states, where)


def _placed(metric: Metric, saved: Mapping[str, Any]) -> dict[str, Any]:
    """Copies of the ``saved`` states on the device (and, for a tensor, in the dtype) of
    ``metric``'s states now; a list state's items on the device torchmetrics keeps them on."""
    list_device = torch.device("cpu") if metric.compute_on_cpu else metric.device
    placed: dict[str, Any] = {}
    for state, current in metric.metric_state.items():
        value = saved[state]  # checked: a tensor for a tensor state, a list for a list state
        if isinstance(current, torch.Tensor):
            placed[state] = value.to(device=current.device, dtype=current.dtype, copy=True)
        else:
            placed[state] = [
                item.to(list_device, copy=True) if isinstance(item, torch.Tensor) else item
                for item in value
            ]
    return placed
