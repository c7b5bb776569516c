"""What every vaekit metric shares: a merge_state that refreshes the cached result."""

from __future__ import annotations

from typing import Any

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


def _format_batched(latent_shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["B", *map(str, latent_shape)]) + ")"


def _check_latent_shape(name: str, value: Tensor, latent_shape: tuple[int, ...] | None) -> None:
    """Raise ValueError unless ``value[0]`` has ``latent_shape`` (``None``: anything goes)."""
    if latent_shape is not None and tuple(value.shape[1:]) != latent_shape:
        raise ValueError(
            f"Argument {name} should have shape {_format_batched(latent_shape)} like the earlier "
            f"updates, but given {name}.shape={tuple(value.shape)}"
        )
