"""The bridge that attaches any torchmetrics metric to a PyTorch-Ignite engine."""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric as IgniteMetric

if TYPE_CHECKING:
    from torchmetrics import Metric, MetricCollection

__all__ = ["TorchMetricsAdapter"]


def _identity(output: Any) -> Any:
    return output


def _metrics_in(metric: Metric | MetricCollection) -> dict[str, Metric]:
    """The torchmetrics metrics in ``metric`` by module name: ``""`` for ``metric`` itself, the
    member names of a collection, the inner metrics of a wrapper or a compositional metric."""
    from torchmetrics import Metric

    return {name: m for name, m in metric.named_modules() if isinstance(m, Metric)}


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


def _arguments(output: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A transformed output as the arguments of ``update``: a tuple's items, a mapping's items
    as keywords, anything else as the single argument."""
    if isinstance(output, tuple):
        return output, {}
    if isinstance(output, Mapping):
        return (), dict(output)
    return (output,), {}


def _call_problem(metric: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Python's reason why ``metric.update`` cannot take ``args`` and ``kwargs``, or None."""
    try:
        inspect.signature(metric.update).bind(*args, **kwargs)
    except TypeError as err:
        return str(err)
    return None


def _summary_of(output: Any) -> str:
    if isinstance(output, tuple):
        return f"a tuple of {len(output)} items"
    if isinstance(output, Mapping):
        return f"a {type(output).__name__} with keys {sorted(map(str, output))}"
    return f"a {type(output).__name__}"


def _summary(value: object) -> str:
    keys = f" with keys {sorted(map(str, value))}" if isinstance(value, Mapping) else ""
    return type(value).__name__ + keys


def _describe(classes: Mapping[str, Any]) -> str:
    """``name=Class`` for each metric, the class alone for the root: ``"ReconKLRatio"``."""
    return ", ".join(f"{name}={cls}" if name else str(cls) for name, cls in sorted(classes.items()))


def _check_entry(name: str, metric: Metric, entry: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``entry``, a saved metric, loads into ``metric``."""
    where = _describe({name: type(metric).__name__})
    states, count = entry["states"], entry["update_count"]
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(
            f"Argument state_dict should hold a non-negative int update count for {where}, "
            f"but given {count!r}"
        )
    if not isinstance(states, Mapping) or set(states) != set(metric._defaults):
        given = sorted(states) if isinstance(states, Mapping) else type(states).__name__
        raise ValueError(
            f"Argument state_dict should hold the states {sorted(metric._defaults)} of {where}, "
            f"but given {given}"
        )
    for state, default in metric._defaults.items():
        kind = torch.Tensor if isinstance(default, torch.Tensor) else list
        if not isinstance(states[state], kind):
            raise ValueError(
                f"Argument state_dict should hold a {kind.__name__} for the state {state} of "
                f"{where}, but given {type(states[state]).__name__}"
            )
        saved, current = states[state], getattr(metric, state)
        if isinstance(saved, torch.Tensor) and _kind(saved.dtype) != _kind(current.dtype):
            wanted = _kind(current.dtype)
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


def _load(metric: Metric, entry: Mapping[str, Any]) -> None:
    """Put the saved states, copied, on the device (and, for a tensor, the dtype) they have now."""
    list_device = torch.device("cpu") if metric.compute_on_cpu else metric.device
    for state, saved in entry["states"].items():
        current = getattr(metric, state)
        if isinstance(saved, torch.Tensor):
            value: Any = saved.to(device=current.device, dtype=current.dtype, copy=True)
        else:
            value = [
                item.to(list_device, copy=True) if isinstance(item, torch.Tensor) else item
                for item in saved
            ]
        setattr(metric, state, value)
    metric._update_count = entry["update_count"]
    metric._computed = None  # a result cached before the load
    metric._forward_cache = None


def _resumes_inside_usage(engine: Engine) -> bool:
    """Whether ``engine`` starts its run or epoch part-way through: a run resumed from a checkpoint.

    Ignite fires ``STARTED`` and ``EPOCH_STARTED`` again when a run resumes; a metric started by
    one of them keeps the states loaded for the interrupted run or epoch.
    """
    state = engine.state
    if engine.last_event_name == Events.STARTED:
        return state.iteration > 0
    if engine.last_event_name == Events.EPOCH_STARTED:
        return state.epoch_length is not None and state.iteration % state.epoch_length != 0
    return False


class TorchMetricsAdapter(IgniteMetric):
    """An Ignite metric that runs a torchmetrics metric: attach any torchmetrics metric in one line.

    ``TorchMetricsAdapter(metric, output_transform=f).attach(engine, name)`` resets ``metric`` when
    the usage starts, feeds it ``f(engine.state.output)`` after every iteration and puts
    ``metric.compute()`` into ``engine.state.metrics[name]`` when the usage completes. The usage
    is Ignite's: ``"epoch_wise"`` (the default: reset each epoch), ``"batch_wise"``,
    ``"running_epoch_wise"``, ``"running_batch_wise"`` or a
    :class:`~ignite.metrics.metric.MetricUsage`.

    The transformed output is passed to ``metric.update`` as positional arguments if it is a
    tuple, as keyword arguments if it is a mapping, and as the single argument otherwise (a list
    too). Results are stored as Ignite stores its own: a 0-dimensional tensor becomes a Python
    number (``float``, or ``int`` for a count such as
    :class:`~vaekit.metrics.ActiveUnits`), another tensor is moved to the CPU, and a mapping (a
    :class:`~torchmetrics.MetricCollection`) is stored under ``name`` and also key by key.

    Across processes, torchmetrics' ``compute()`` already syncs the states, so this class adds no
    reduction of its own (no ``sync_all_reduce``): every process stores the same result, computed
    once. As with torchmetrics, every process must reach the completing event. An epoch without
    any update gives torchmetrics' warning and value rather than Ignite's
    ``NotComputableError``: raising on one process would leave the others waiting in the sync.

    **Checkpoints.** ``state_dict()`` holds what torchmetrics accumulates, for the metric and
    every metric in it (the members of a collection): each state registered with ``add_state``
    (tensors and list states) and the update count, as CPU tensors, lists and Python values, so
    the adapter goes into the ``to_save`` of an Ignite
    :class:`~ignite.handlers.checkpoint.Checkpoint` and loads with ``weights_only=True``. As for
    Ignite's own metrics, every process saves, and later loads, its own unsynced states.
    ``load_state_dict`` puts them on the device and dtype of the metric's states; when the run
    then resumes part-way through an epoch (for a running usage, part-way through the run),
    Ignite fires the usage's starting event again and the adapter keeps the loaded states instead
    of resetting, so the epoch's result is that of an uninterrupted run. A run resumed at the end
    of an epoch starts the next one afresh. Attributes outside the torchmetrics states are not
    saved.

    Args:
        metric: the torchmetrics ``Metric`` or ``MetricCollection`` to run, on the device of
            the engine's outputs.
        output_transform: maps ``engine.state.output`` to the arguments of ``metric.update``.

    Raises:
        ImportError: if torchmetrics (extra ``metrics``) is not installed.
        TypeError: if ``metric`` is neither a torchmetrics ``Metric`` nor a ``MetricCollection``,
            or ``output_transform`` is not callable; after an iteration, if the transformed
            output does not fit the arguments of ``metric.update``.
        ValueError: at ``load_state_dict``, if the state dict was saved from another metric (other
            classes, collection keys or state names) or holds states of another shape or kind
            of dtype (a vector for a scalar sum, a float for a count); nothing is loaded then.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> from vaekit.handlers import TorchMetricsAdapter
        >>> from vaekit.metrics import ReconKLRatio
        >>> batches = [(torch.tensor([30.0, 50.0]), torch.tensor([2.0, 6.0])),
        ...            (torch.tensor([20.0]), torch.tensor([2.0]))]
        >>> engine = Engine(lambda engine, batch: {"recon": batch[0], "kl": batch[1]})
        >>> TorchMetricsAdapter(ReconKLRatio()).attach(engine, "recon_kl")
        >>> engine.run(batches, max_epochs=2).metrics["recon_kl"]
        10.0

        A checkpoint taken part-way through, loaded into a new adapter that goes on:

        >>> adapter = TorchMetricsAdapter(ReconKLRatio())
        >>> adapter.update((torch.tensor([30.0, 50.0]), torch.tensor([2.0, 6.0])))
        >>> restored = TorchMetricsAdapter(ReconKLRatio())
        >>> restored.load_state_dict(adapter.state_dict())
        >>> restored.update((torch.tensor([20.0]), torch.tensor([2.0])))
        >>> restored.compute()  # (30 + 50 + 20) / (2 + 6 + 2)
        tensor(10., dtype=torch.float64)
    """

    required_output_keys = None

    def __init__(
        self,
        metric: Metric | MetricCollection,
        *,
        output_transform: Callable[[Any], Any] = _identity,
    ) -> None:
        # Imported here so that the beta handlers need no torchmetrics.
        try:
            from torchmetrics import Metric, MetricCollection
        except ImportError as err:  # pragma: no cover - exercised only without the extra
            raise ImportError(
                "TorchMetricsAdapter needs torchmetrics: pip install 'vaekit[metrics]'"
            ) from err
        if not isinstance(metric, (Metric, MetricCollection)):
            raise TypeError(
                "Argument metric should be a torchmetrics Metric or MetricCollection, "
                f"but given {type(metric).__name__}"
            )
        if not callable(output_transform):
            raise TypeError(
                "Argument output_transform should be callable, "
                f"but given {type(output_transform).__name__}"
            )
        self.metric = metric
        self._loaded = False  # load_state_dict since the last start
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self.metric.reset()

    def started(self, engine: Engine) -> None:
        # A resumed run fires the usage's start event again: keep the states just loaded for it.
        loaded, self._loaded = self._loaded, False
        if not (loaded and _resumes_inside_usage(engine)):
            self.reset()

    def _state_dict_per_rank(self) -> OrderedDict[str, Any]:
        # Ignite's state_dict() gathers this from every process and load_state_dict() passes each
        # process its own: the local, unsynced states, which torchmetrics syncs only in compute().
        metrics = {name: _save(m) for name, m in _metrics_in(self.metric).items()}
        return OrderedDict(metrics=metrics)

    def _load_state_dict_per_rank(self, state_dict: Mapping[str, Any]) -> None:
        metrics = _metrics_in(self.metric)
        saved = state_dict.get("metrics") if isinstance(state_dict, Mapping) else None
        if not isinstance(saved, Mapping) or not all(
            isinstance(e, Mapping) and {"class", "update_count", "states"} <= set(e)
            for e in saved.values()
        ):
            raise ValueError(
                "Argument state_dict should be a TorchMetricsAdapter.state_dict(), "
                f"but given {_summary(state_dict)}"
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
        for name, m in metrics.items():
            _load(m, saved[name])
        self._share_compute_group_states()
        self._loaded = True

    def _share_compute_group_states(self) -> None:
        """Point the members of each compute group at their first member's states again, as
        torchmetrics does after an update."""
        from torchmetrics import MetricCollection

        collection = self.metric
        if isinstance(collection, MetricCollection) and collection._groups_checked:
            collection._state_is_copy = False
            collection._compute_groups_create_state_ref()

    def update(self, output: Any) -> None:
        args, kwargs = _arguments(output)
        try:
            self.metric.update(*args, **kwargs)
        except TypeError:
            problem = _call_problem(self.metric, args, kwargs)
            if problem is None:  # the arguments fit: a TypeError of the metric's own
                raise
            raise self._transform_error(output, problem) from None

    def _transform_error(self, output: Any, problem: str) -> TypeError:
        signature = inspect.signature(self.metric.update)
        params = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
        update = f"{type(self.metric).__name__}.update({', '.join(map(str, params))})"
        if self._output_transform is _identity:
            return TypeError(
                f"Argument output_transform is needed: {update} cannot take "
                f"engine.state.output, {_summary_of(output)} ({problem}); pass an "
                "output_transform that returns its arguments (a tuple or a dict of keywords)"
            )
        return TypeError(
            f"Argument output_transform should return the arguments of {update}, but given "
            f"{_summary_of(output)} ({problem})"
        )

    def compute(self) -> Any:
        return self.metric.compute()

    def iteration_completed(self, engine: Engine) -> None:
        # Ignite's own version maps dicts through ``required_output_keys``; here they are kwargs.
        self.update(self._output_transform(engine.state.output))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.metric!r})"
