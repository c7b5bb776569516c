"""What every vaekit metric shares: a merge_state that refreshes the cached result."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__: list[str] = []


class _SumStateMetric(Metric):
    """A torchmetrics metric whose states are sums, with torchmetrics 1.9's merge_state fixed.

    torchmetrics 1.9.0's ``merge_state`` adds the incoming states but keeps the result cached by an
    earlier ``compute()``, so the next ``compute()`` returns the value from before the merge. Here
    the cache is dropped after every merge. A merged metric also counts the incoming updates (a
    dict counts as one), so that a metric built only from merged states computes without
    torchmetrics' "compute before update" warning.
    """

    is_differentiable = False
    full_state_update = False

    def merge_state(self, incoming_state: dict[str, Any] | Metric) -> None:
        count = incoming_state.update_count if isinstance(incoming_state, Metric) else 1
        super().merge_state(self._aligned(incoming_state))
        self._computed = None
        self._update_count += count

    def _aligned(self, incoming_state: dict[str, Any] | Metric) -> dict[str, Any] | Metric:
        """Return ``incoming_state`` made summable with this metric's states."""
        return incoming_state

    def _state_shape_problem(self, states: Mapping[str, Any], where: str) -> str | None:
        """Why saved ``states`` cannot be this metric's by their shapes, or None.

        A sum keeps the shape of its default; a metric with latent-shaped sums says otherwise.
        """
        return _default_shape_problem(self, states, where)


def _default_shape_problem(metric: Metric, states: Mapping[str, Any], where: str) -> str | None:
    """The error message if a saved tensor state of ``metric`` lacks its default's shape."""
    for name, default in metric._defaults.items():
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
