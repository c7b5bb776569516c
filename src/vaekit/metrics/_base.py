"""What every vaekit metric shares: float64 sums that keep their dtype, results in the metric's
dtype, a merge_state that refreshes the cached result, a sync that makes the states summable
first, and plot."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor
from torch.nn import Module
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors
from torchmetrics.utilities.plot import plot_single_or_multi_val

from vaekit._checks import check_same_shape, check_tensor
from vaekit._private import (
    torchmetrics_defaults,
    torchmetrics_drop_computed,
    torchmetrics_set_update_count,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__: list[str] = []

SyncFn = Callable[..., list[Tensor]]


class _SumStateMetric(Metric):
    """A torchmetrics metric whose states are sums, with the behaviour all vaekit metrics share.

    - The states keep the dtypes they are registered with, float64 sums and int64 counts,
      through ``set_dtype``, ``.to(dtype)``, ``.half()`` and the like; ``compute()`` returns a
      floating-point result in the metric's ``dtype``: torchmetrics' default (float32), or what
      ``set_dtype`` set.
    - ``merge_state`` drops the result cached by an earlier ``compute()`` and counts the merged
      updates.
    - ``sync`` gathers the states that :meth:`_sync_replacements` gives in place of the local
      ones, so that a metric can first make its states summable across processes.
    - One ``plot`` for all.
    """

    is_differentiable = False
    full_state_update = False

    # The states __init__ registers, each 0 by default and summed across processes: float64
    # sums and int64 counts, in this order.
    _sums: tuple[str, ...] = ()
    _counts: tuple[str, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in self._sums:
            zero = torch.tensor(0.0, dtype=torch.float64)
            self.add_state(name, default=zero, dist_reduce_fx="sum")
        for name in self._counts:
            self.add_state(name, default=torch.tensor(0), dist_reduce_fx="sum")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Add a batch and return the result over that batch alone, as torchmetrics' forward.

        The batch is checked before torchmetrics swaps the accumulated states out: a refused
        batch leaves them as they were.

        Example:
            >>> import torch
            >>> from vaekit.metrics import ReconKLRatio
            >>> metric = ReconKLRatio()
            >>> metric(torch.tensor(6.0), torch.tensor(2.0))  # this batch
            tensor(3.)
            >>> metric(torch.tensor(2.0), torch.tensor(2.0))
            tensor(1.)
            >>> metric.compute()  # both: 8 / 4
            tensor(2.)
        """
        self._check(*args, **kwargs)
        return super().forward(*args, **kwargs)

    def _check(self, *args: Any, **kwargs: Any) -> None:
        """Raise as ``update(*args, **kwargs)`` would, before any state changes."""

    def _result(self, value: Tensor) -> Tensor:
        """``value``, if floating point, in the metric's dtype (the sums stay float64)."""
        return value.to(self.dtype) if value.is_floating_point() else value

    def _apply(self, fn: Callable[[Tensor], Tensor], exclude_state: Sequence[str] = "") -> Module:
        """Move the states with the metric, each in the dtype it was registered with.

        torchmetrics' ``set_dtype`` (and ``.to(dtype)``) would cast every state to the new dtype:
        a float64 sum loses the digits it is there to keep, a count becomes a float. So the states
        are left out of torchmetrics' conversion, and each takes what ``fn`` does to a tensor of its
        own dtype (a move to another device) unless ``fn`` would change that dtype. The metric's
        ``dtype``, which ``compute()`` returns, still follows torchmetrics; when it changes, the
        result cached by ``compute()`` is dropped, so that the next one is computed from the sums
        in the new dtype rather than cast from the old one.
        """
        dtype = self.dtype
        own = [name for name in self.metric_state if name not in exclude_state]
        this = super()._apply(fn, exclude_state=[*exclude_state, *own])
        for name in own:
            value = getattr(this, name)
            if isinstance(value, Tensor):
                setattr(this, name, _keeping_dtype(fn, value))
            else:  # a list state
                setattr(this, name, [_keeping_dtype(fn, item) for item in value])
        if self.dtype != dtype:
            torchmetrics_drop_computed(self)
        return this

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        """Add the states of another metric of this class, or a dict of states, to this metric's.

        As torchmetrics' ``merge_state``; besides, the result cached by an earlier ``compute()``
        is dropped (torchmetrics 1.9.0 keeps it, so that the next ``compute()`` returned the value
        from before the merge), and the incoming updates are counted (a dict as one), so that a
        metric built only from merged states computes without torchmetrics' "compute before
        update" warning.

        Args:
            incoming_state: a metric of this class, or a dict like its ``metric_state``.

        Raises:
            ValueError: if ``incoming_state`` is a metric of another class or a dict without this
                metric's states, or holds sums of another latent shape.
            RuntimeError: if the metric syncs on every step (``dist_sync_on_step=True``), as
                torchmetrics' does.

        Example:
            >>> import torch
            >>> from vaekit.metrics import ReconKLRatio
            >>> a, b = ReconKLRatio(), ReconKLRatio()
            >>> a.update(torch.tensor(30.0), torch.tensor(3.0))
            >>> b.update(torch.tensor(10.0), torch.tensor(1.0))
            >>> a.merge_state(b)
            >>> a.compute(), a.update_count
            (tensor(10.), 2)
        """
        count = incoming_state.update_count if isinstance(incoming_state, Metric) else 1
        super().merge_state(self._aligned(incoming_state))
        torchmetrics_drop_computed(self)
        torchmetrics_set_update_count(self, self.update_count + count)

    def _aligned(self, incoming_state: dict[str, Any] | Metric) -> dict[str, Any] | Metric:
        """Return ``incoming_state`` made summable with this metric's states."""
        return incoming_state

    def sync(
        self,
        dist_sync_fn: SyncFn | None = None,
        process_group: Any | None = None,
        should_sync: bool = True,
        distributed_available: Callable[[], bool] | None = None,
    ) -> None:
        """Sum the states across processes, as torchmetrics' ``sync``, once they are summable.

        torchmetrics calls this from ``compute()`` and ``sync_context``, and ``unsync`` restores
        the local states afterwards. Before the first state is gathered, the processes agree on
        what each should contribute: every process takes part in the same collectives, through
        ``dist_sync_fn`` (torchmetrics' ``gather_all_tensors`` by default), whether or not it has
        seen a sample.

        Args:
            dist_sync_fn: the all-gather to sync with; ``None`` for torchmetrics'.
            process_group: the group to sync over; ``None`` for the metric's.
            should_sync: whether to sync at all.
            distributed_available: says whether processes are running; ``None`` for the metric's
                ``distributed_available_fn``.

        Example:
            >>> import torch
            >>> from vaekit.metrics import KLPerDimension
            >>> kl = KLPerDimension()
            >>> kl.update(torch.zeros(2, 3), torch.zeros(2, 3))
            >>> kl.sync()  # one process: nothing to do
            >>> kl.kl_sum
            tensor([0., 0., 0.], dtype=torch.float64)
        """
        sync_fn = _SubstitutingSyncFn(self, dist_sync_fn or gather_all_tensors)
        super().sync(
            dist_sync_fn=sync_fn,
            process_group=process_group,
            should_sync=should_sync,
            distributed_available=distributed_available,
        )
        sync_fn.check()

    def _sync_replacements(self, gather: SyncFn, group: Any) -> dict[str, Tensor]:
        """The states this process gathers in place of its own, by name (none: its own).

        Called once per sync on every process, before the first state is gathered; whatever it
        gathers itself through ``gather`` and ``group``, every process must gather alike.
        """
        return {}

    def _state_shape_problem(self, states: Mapping[str, Any], where: str) -> str | None:
        """Why saved ``states`` cannot be this metric's by their shapes, or None.

        A sum keeps the shape of its default; a metric with latent-shaped sums says otherwise.
        """
        return _default_shape_problem(self, states, where)

    def _plot_values(self, val: Tensor | Sequence[Tensor]) -> Tensor | Sequence[Tensor]:
        """The values ``plot`` draws for ``val``: the results as they are."""
        return val

    def plot(
        self, val: Tensor | Sequence[Tensor] | None = None, ax: Axes | None = None
    ) -> tuple[Figure | None, Axes]:
        """Plot a result, or a sequence of results as a curve over steps.

        A scalar result (a ratio, a count) is drawn as a point, and a sequence of them as one
        curve; a latent-shaped result (the KL of each element) gives one value per element of
        the flattened latent, and a sequence of them one curve per element.

        Args:
            val: a result of ``forward`` or ``compute``, or a sequence of them; ``None``
                computes the result.
            ax: a matplotlib axis to draw on; ``None`` draws on a new figure.

        Returns:
            The figure (``None`` when ``ax`` is given) and the axis.

        Raises:
            ModuleNotFoundError: if matplotlib is not installed.

        Example:
            >>> import torch
            >>> from vaekit.metrics import ReconKLRatio
            >>> ratio = ReconKLRatio()
            >>> values = [ratio(torch.rand(8) * 50, torch.rand(8) + 0.5) for _ in range(5)]
            >>> fig, ax = ratio.plot(values)
            >>> len(ax.lines)  # one curve over the five steps
            1
        """
        fig, axis = plot_single_or_multi_val(
            self._plot_values(self.compute() if val is None else val),
            ax=ax,
            higher_is_better=self.higher_is_better,
            lower_bound=self.plot_lower_bound,
            upper_bound=self.plot_upper_bound,
            legend_name=self.plot_legend_name,
            name=type(self).__name__,
        )
        return fig, cast("Axes", axis)  # one axis: a single result or one series


def _keeping_dtype(fn: Callable[[Tensor], Tensor], value: Tensor) -> Tensor:
    """``fn(value)`` if ``fn`` keeps the dtype of ``value``, else ``value`` on ``fn``'s device."""
    probe = fn(value.new_empty(0))
    return fn(value) if probe.dtype == value.dtype else value.to(probe.device)


class _SubstitutingSyncFn:
    """A ``dist_sync_fn`` that gathers, for each state, what ``metric._sync_replacements`` gives.

    torchmetrics passes each tensor state itself to the ``dist_sync_fn`` (a list state as a new
    tensor of its items, which is gathered as it is); the first call asks the metric for its
    replacements (the processes' agreement runs then, on every process alike).
    """

    def __init__(self, metric: _SumStateMetric, gather: SyncFn) -> None:
        self.metric, self.gather = metric, gather
        self.replacements: dict[int, Tensor] | None = None  # by id of the state replaced
        self.names: dict[int, str] = {}
        self.unused: set[str] = set()

    def __call__(self, tensor: Tensor, group: Any = None) -> list[Tensor]:
        if self.replacements is None:
            given = self.metric._sync_replacements(self.gather, group)
            states = self.metric.metric_state
            self.replacements = {id(states[name]): value for name, value in given.items()}
            self.unused = set(given)
            self.names = {id(states[name]): name for name in given}
        name = self.names.get(id(tensor))
        if name is None:
            return self.gather(tensor, group=group)
        self.unused.discard(name)
        return self.gather(self.replacements[id(tensor)], group=group)

    def check(self) -> None:
        """Raise RuntimeError if a replaced state was never gathered: torchmetrics then passed
        copies of the states, which a torchmetrics release that syncs otherwise would do."""
        if self.unused:
            raise RuntimeError(
                f"{type(self.metric).__name__}.sync expected torchmetrics to gather the metric's "
                f"states themselves, but the states {sorted(self.unused)} were not gathered"
            )


def _default_shape_problem(metric: Metric, states: Mapping[str, Any], where: str) -> str | None:
    """The error message if a saved tensor state of ``metric`` lacks its default's shape."""
    for name, default in torchmetrics_defaults(metric).items():
        saved = states.get(name)
        if not (isinstance(default, Tensor) and isinstance(saved, Tensor)):
            continue
        if saved.shape != default.shape:
            return (
                f"Argument state_dict should hold a tensor of shape {tuple(default.shape)} "
                f"for the state {name} of {where}, but given shape {tuple(saved.shape)}"
            )
    return None


def _latent_shape_problem(
    states: Mapping[str, Any], names: tuple[str, ...], where: str
) -> str | None:
    """The error message unless the saved tensors ``names`` share one (latent) shape."""
    shapes = [tuple(states[n].shape) for n in names if isinstance(states.get(n), Tensor)]
    if len(set(shapes)) > 1:
        given = ", ".join(f"{n} {shape}" for n, shape in zip(names, shapes, strict=True))
        return (
            f"Argument state_dict should hold states {', '.join(names)} of one latent shape "
            f"for {where}, but given {given}"
        )
    return None


def _scalar_problem(states: Mapping[str, Any], name: str, where: str) -> str | None:
    saved = states.get(name)
    if isinstance(saved, Tensor) and saved.dim() != 0:
        return (
            f"Argument state_dict should hold a tensor of shape () for the state {name} of "
            f"{where}, but given shape {tuple(saved.shape)}"
        )
    return None


def _check_device(name: str, value: Tensor, device: torch.device) -> None:
    """Raise ValueError unless ``value`` is on the metric's ``device``.

    A 0-dim CPU state would take a sum from another device silently (torch combines a CPU scalar
    with any device), and a meta tensor's sum has no value: a NaN or a meta state would follow.
    """
    if value.device != device:
        raise ValueError(
            f"Argument {name} should be on the metric's device {device}, "
            f"but given a tensor on {value.device}"
        )


def _check_pair(name_a: str, a: Tensor, name_b: str, b: Tensor, device: torch.device) -> None:
    """Raise unless ``a`` and ``b`` are floating-point tensors of one shape on the metric's
    ``device``."""
    check_tensor(name_a, a)
    check_tensor(name_b, b)
    check_same_shape(name_a, a, name_b, b)
    _check_device(name_a, a, device)
    _check_device(name_b, b, device)


def _merged_latent_shape(
    ours: tuple[int, ...] | None, theirs: tuple[int, ...] | None
) -> tuple[int, ...] | None:
    """The latent shape after merging states of latent shape ``theirs`` (``None``: no sample)
    into a metric of latent shape ``ours``; raise ValueError if they differ."""
    if theirs is not None and ours not in (None, theirs):
        raise ValueError(
            f"Argument incoming_state should have latent shape {ours}, "
            f"but given latent shape {theirs}"
        )
    return ours if theirs is None else theirs


def _format_batched(latent_shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["B", *map(str, latent_shape)]) + ")"


def _check_latent_shape(name: str, value: Tensor, latent_shape: tuple[int, ...] | None) -> None:
    """Raise ValueError unless ``value[0]`` has ``latent_shape`` (``None``: anything goes)."""
    if latent_shape is not None and tuple(value.shape[1:]) != latent_shape:
        raise ValueError(
            f"Argument {name} should have shape {_format_batched(latent_shape)} like the earlier "
            f"updates, but given {name}.shape={tuple(value.shape)}"
        )


def _agree_latent_shape(
    local: tuple[int, ...] | None,
    gather: Callable[..., list[Tensor]],
    group: Any,
    device: torch.device,
) -> tuple[tuple[int, ...], int] | None:
    """Return the latent shape of the processes that know one, and the first such process.

    ``local`` is this process's latent shape, ``None`` before its first sample. Every process
    makes the same calls to ``gather`` (a ``dist_sync_fn``) whatever its state, so a process that
    has seen no sample cannot leave the others waiting in a collective: one call for the number
    of latent dimensions of each process (``-1`` for none), then, unless the latent is a scalar,
    one for the shapes. Returns ``None`` when no process has a shape.

    Raises:
        ValueError: on every process, if the processes' latent shapes differ.
    """
    ndim = torch.tensor(-1 if local is None else len(local), device=device)
    ndims = [int(n) for n in gather(ndim, group=group)]
    known = [rank for rank, n in enumerate(ndims) if n >= 0]
    if not known:
        return None
    shapes: dict[int, tuple[int, ...]] = dict.fromkeys(known, ())
    if max(ndims) > 0:
        padded = torch.full((max(ndims),), -1, dtype=torch.int64, device=device)
        padded[: len(local or ())] = torch.tensor(local or (), dtype=torch.int64)
        gathered = gather(padded, group=group)
        shapes = {rank: tuple(int(d) for d in gathered[rank][: ndims[rank]]) for rank in known}
    if len(set(shapes.values())) > 1:
        seen = ", ".join(f"{shape} on process {rank}" for rank, shape in shapes.items())
        raise ValueError(
            f"Argument mu should have the same latent shape on every process, but given {seen}"
        )
    return shapes[known[0]], known[0]
