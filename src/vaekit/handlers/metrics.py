"""The bridge that attaches any torchmetrics metric to a PyTorch-Ignite engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ignite.engine import Engine
from ignite.metrics import Metric as IgniteMetric

if TYPE_CHECKING:
    from torchmetrics import Metric, MetricCollection

__all__ = ["TorchMetricsAdapter"]


def _identity(output: Any) -> Any:
    return output


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

    Args:
        metric: the torchmetrics ``Metric`` or ``MetricCollection`` to run, on the device of
            the engine's outputs.
        output_transform: maps ``engine.state.output`` to the arguments of ``metric.update``.

    Raises:
        ImportError: if torchmetrics (extra ``metrics``) is not installed.
        TypeError: if ``metric`` is neither a torchmetrics ``Metric`` nor a ``MetricCollection``,
            or ``output_transform`` is not callable.

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
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self.metric.reset()

    def update(self, output: Any) -> None:
        if isinstance(output, tuple):
            self.metric.update(*output)
        elif isinstance(output, Mapping):
            self.metric.update(**output)
        else:
            self.metric.update(output)

    def compute(self) -> Any:
        return self.metric.compute()

    def iteration_completed(self, engine: Engine) -> None:
        # Ignite's own version maps dicts through ``required_output_keys``; here they are kwargs.
        self.update(self._output_transform(engine.state.output))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.metric!r})"
