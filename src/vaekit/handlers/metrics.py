"""The bridge that attaches any torchmetrics metric to a PyTorch-Ignite engine."""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.metrics import Metric as IgniteMetric
from ignite.metrics.metric import MetricUsage

from vaekit._checks import check_callable, check_instance
from vaekit.handlers import _metric_state

if TYPE_CHECKING:
    from torchmetrics import Metric, MetricCollection

__all__ = ["TorchMetricsAdapter"]


def _identity(output: Any) -> Any:
    return output


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
        tensor(10.)
    """

    #: ``None``: the adapter passes the whole transformed output to ``metric.update`` (see
    #: above) and selects no keys from it, unlike Ignite's metrics, which take ``("y_pred", "y")``.
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
        described = "a torchmetrics Metric or MetricCollection"
        check_instance("metric", metric, (Metric, MetricCollection), described)
        check_callable("output_transform", output_transform)
        #: The torchmetrics ``Metric`` or ``MetricCollection`` that the adapter runs.
        self.metric = metric
        self._loaded = False  # load_state_dict since the last start
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        """Reset the torchmetrics metric: its states, update count and cached results.

        Example:
            >>> import torch
            >>> from vaekit.handlers import TorchMetricsAdapter
            >>> from vaekit.metrics import ReconKLRatio
            >>> adapter = TorchMetricsAdapter(ReconKLRatio())
            >>> adapter.update((torch.tensor(4.0), torch.tensor(2.0)))
            >>> adapter.reset()
            >>> adapter.metric.update_count
            0
        """
        self.metric.reset()

    def update(self, output: Any) -> None:
        """Feed a transformed output to ``metric.update``.

        A tuple is passed as positional arguments, a mapping as keyword arguments, anything else
        (a tensor, a list) as the single argument.

        Args:
            output: what ``output_transform`` returned for ``engine.state.output``.

        Raises:
            TypeError: if ``output`` does not fit the arguments of ``metric.update`` (the message
                names ``output_transform``), or the metric raises one of its own.

        Example:
            >>> import torch
            >>> from vaekit.handlers import TorchMetricsAdapter
            >>> from vaekit.metrics import ReconKLRatio
            >>> adapter = TorchMetricsAdapter(ReconKLRatio())
            >>> adapter.update({"recon": torch.tensor([6.0]), "kl": torch.tensor([2.0])})
            >>> adapter.metric.recon_sum
            tensor(6., dtype=torch.float64)
        """
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
        """Return ``metric.compute()``: synced across processes by torchmetrics, as it is.

        Nothing is raised for a usage without any update: torchmetrics warns and returns its
        value for no data (NaN, 0), where Ignite's metrics raise ``NotComputableError``, so that
        no process is left waiting in the sync.

        Returns:
            The torchmetrics metric's result, a tensor, or for a collection a dict of them.

        Example:
            >>> import torch
            >>> from vaekit.handlers import TorchMetricsAdapter
            >>> from vaekit.metrics import ReconKLRatio
            >>> adapter = TorchMetricsAdapter(ReconKLRatio())
            >>> adapter.update((torch.tensor([30.0, 50.0]), torch.tensor([2.0, 6.0])))
            >>> adapter.compute()
            tensor(10.)
        """
        return self.metric.compute()

    def started(self, engine: Engine) -> None:
        """Reset the metric as the usage starts, unless a checkpoint was loaded for this point.

        Ignite fires the usage's starting event again when a run resumes part-way through an
        epoch (for a running usage, part-way through the run); after ``load_state_dict`` the
        adapter then keeps the loaded states, so that the result is that of an uninterrupted run.

        Args:
            engine: the engine whose usage starts.

        Example:
            >>> import torch
            >>> from ignite.engine import Engine
            >>> from vaekit.handlers import TorchMetricsAdapter
            >>> from vaekit.metrics import ReconKLRatio
            >>> adapter = TorchMetricsAdapter(ReconKLRatio())
            >>> adapter.update((torch.tensor(4.0), torch.tensor(2.0)))
            >>> adapter.started(Engine(lambda engine, batch: batch))  # a fresh run: reset
            >>> adapter.metric.update_count
            0
        """
        # A resumed run fires the usage's start event again: keep the states just loaded for it.
        loaded, self._loaded = self._loaded, False
        if not (loaded and _resumes_inside_usage(engine)):
            self.reset()

    def iteration_completed(self, engine: Engine) -> None:
        """Feed ``output_transform(engine.state.output)`` to the metric, through :meth:`update`.

        Unlike Ignite's metrics, no ``(y_pred, y)`` pair is expected and no keys are selected
        from a dict: a mapping becomes keyword arguments.

        Args:
            engine: the engine whose iteration completed.

        Raises:
            TypeError: as :meth:`update`.

        Example:
            >>> import torch
            >>> from ignite.engine import Engine
            >>> from vaekit.handlers import TorchMetricsAdapter
            >>> from vaekit.metrics import ActiveUnits
            >>> engine = Engine(lambda engine, batch: batch)
            >>> engine.state.output = torch.tensor([[0.0, 1.0], [2.0, 1.0]])
            >>> adapter = TorchMetricsAdapter(ActiveUnits())
            >>> adapter.iteration_completed(engine)
            >>> adapter.compute()  # variances 1 and 0
            tensor(1)
        """
        self.update(self._output_transform(engine.state.output))

    def completed(self, engine: Engine, name: str) -> None:
        """Put the result into ``engine.state.metrics[name]``, as Ignite stores its own.

        A 0-dimensional tensor becomes a Python number (``float``, or ``int`` for a count),
        another tensor is moved to the CPU, and a mapping (a collection's results) is stored
        under ``name`` and also key by key.

        Args:
            engine: the engine whose usage completed.
            name: the key under ``engine.state.metrics``.

        Example:
            >>> import torch
            >>> from ignite.engine import Engine
            >>> from vaekit.handlers import TorchMetricsAdapter
            >>> from vaekit.metrics import ReconKLRatio
            >>> engine = Engine(lambda engine, batch: batch)
            >>> adapter = TorchMetricsAdapter(ReconKLRatio())
            >>> adapter.update((torch.tensor(9.0), torch.tensor(3.0)))
            >>> adapter.completed(engine, "ratio")
            >>> engine.state.metrics
            {'ratio': 3.0}
        """
        super().completed(engine, name)

    def attach(self, engine: Engine, name: str, usage: str | MetricUsage = "epoch_wise") -> None:
        """Run the metric on ``engine``: :meth:`started`, :meth:`iteration_completed` and
        :meth:`completed` on the events of ``usage``.

        Args:
            engine: the engine to attach to.
            name: the key of the result under ``engine.state.metrics``.
            usage: ``"epoch_wise"`` (the default: reset each epoch), ``"batch_wise"``,
                ``"running_epoch_wise"``, ``"running_batch_wise"`` or a
                :class:`~ignite.metrics.metric.MetricUsage`.

        Raises:
            ValueError: if ``usage`` is a string of none of these.

        Example:
            >>> import torch
            >>> from ignite.engine import Engine
            >>> from vaekit.handlers import TorchMetricsAdapter
            >>> from vaekit.metrics import ReconKLRatio
            >>> engine = Engine(lambda engine, batch: batch)
            >>> TorchMetricsAdapter(ReconKLRatio()).attach(engine, "ratio", usage="batch_wise")
            >>> batches = [(torch.tensor(4.0), torch.tensor(2.0)),
            ...            (torch.tensor(9.0), torch.tensor(1.0))]
            >>> engine.run(batches).metrics["ratio"]  # the last batch's
            9.0
        """
        super().attach(engine, name, usage)

    def detach(self, engine: Engine, usage: str | MetricUsage = "epoch_wise") -> None:
        """Stop running the metric on ``engine`` for ``usage``: undo :meth:`attach`.

        Args:
            engine: the engine to detach from.
            usage: the usage it was attached with.

        Example:
            >>> from ignite.engine import Engine
            >>> from vaekit.handlers import TorchMetricsAdapter
            >>> from vaekit.metrics import ReconKLRatio
            >>> engine = Engine(lambda engine, batch: batch)
            >>> adapter = TorchMetricsAdapter(ReconKLRatio())
            >>> adapter.attach(engine, "ratio")
            >>> adapter.detach(engine)
            >>> adapter.is_attached(engine)
            False
        """
        super().detach(engine, usage)

    def is_attached(self, engine: Engine, usage: str | MetricUsage = "epoch_wise") -> bool:
        """Whether the metric runs on ``engine`` for ``usage``.

        Args:
            engine: the engine to look at.
            usage: the usage to look for.

        Returns:
            ``True`` if :meth:`attach` attached it with ``usage`` and it was not detached since.

        Example:
            >>> from ignite.engine import Engine
            >>> from vaekit.handlers import TorchMetricsAdapter
            >>> from vaekit.metrics import ReconKLRatio
            >>> engine = Engine(lambda engine, batch: batch)
            >>> adapter = TorchMetricsAdapter(ReconKLRatio())
            >>> adapter.attach(engine, "ratio")
            >>> adapter.is_attached(engine), adapter.is_attached(engine, usage="batch_wise")
            (True, False)
        """
        return bool(super().is_attached(engine, usage))

    def state_dict(self) -> OrderedDict[str, Any]:
        """Return the states of the metric on every process, for an Ignite ``Checkpoint``.

        Each process contributes its own, unsynced states (the metric's and those of every
        metric in it), as CPU tensors, lists and Python values, under one key and in rank
        order, as Ignite's metrics do; under torch.distributed every process must call this.
        The result loads with ``torch.load(..., weights_only=True)``.

        Returns:
            ``{"__metric_state_per_rank": [part of process 0, part of process 1, ...]}``.

        Example:
            >>> import torch
            >>> from vaekit.handlers import TorchMetricsAdapter
            >>> from vaekit.metrics import ReconKLRatio
            >>> adapter = TorchMetricsAdapter(ReconKLRatio())
            >>> adapter.update((torch.tensor(4.0), torch.tensor(2.0)))
            >>> (part,) = adapter.state_dict()["__metric_state_per_rank"]  # one process
            >>> part["metrics"][""]["update_count"], part["metrics"][""]["states"]["recon_sum"]
            (1, tensor(4., dtype=torch.float64))
        """
        part = _metric_state.save(self.metric)
        if idist.get_world_size() > 1:
            return OrderedDict([(_metric_state.PER_RANK, idist.all_gather(part))])
        return OrderedDict([(_metric_state.PER_RANK, [part])])

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load this process's part of a :meth:`state_dict` into the metric.

        Every state is checked before anything changes; the states are copied onto the device
        and dtype of the metric's states, and the update counts restored. If the run then
        resumes part-way through the usage, :meth:`started` keeps them.

        Args:
            state_dict: what :meth:`state_dict` returned, from as many processes as now run.

        Raises:
            TypeError: if ``state_dict`` is not a mapping.
            ValueError: if it was saved from another metric (other classes, collection keys or
                state names), holds states of another shape or kind of dtype, or holds the parts
                of another number of processes; nothing is loaded then.

        Example:
            >>> import torch
            >>> from vaekit.handlers import TorchMetricsAdapter
            >>> from vaekit.metrics import ReconKLRatio
            >>> saved = TorchMetricsAdapter(ReconKLRatio())
            >>> saved.update((torch.tensor(4.0), torch.tensor(2.0)))
            >>> restored = TorchMetricsAdapter(ReconKLRatio())
            >>> restored.load_state_dict(saved.state_dict())
            >>> restored.compute(), restored.metric.update_count
            (tensor(2.), 1)
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"Argument state_dict should be a mapping, but given {type(state_dict).__name__}"
            )
        parts = state_dict.get(_metric_state.PER_RANK)
        if (
            set(state_dict) != {_metric_state.PER_RANK}
            or not isinstance(parts, Sequence)
            or isinstance(parts, str)
        ):
            raise ValueError(
                "Argument state_dict should be a TorchMetricsAdapter.state_dict(), "
                f"but given {_metric_state.summary(state_dict)}"
            )
        world_size = idist.get_world_size()
        if len(parts) != world_size:
            raise ValueError(
                f"Argument state_dict should hold the states of {world_size} processes, one "
                f"per process as now, but given those of {len(parts)}"
            )
        _metric_state.load(self.metric, parts[idist.get_rank()])
        self._loaded = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.metric!r})"
