"""Loss weights held in place: what every vaekit loss module with a schedulable weight shares.

A weight such as ``beta`` lives in a 0-dimensional non-persistent buffer that a setter writes in
place, so that it follows ``.to(device)``, a ``torch.compile``\\ d step reads it as a graph input
rather than baking in a constant (changing it every step does not recompile), and it stays out
of ``state_dict`` (the schedule that sets it owns that state).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast

import torch
from torch import Tensor, nn

from vaekit._checks import check_weight

__all__: list[str] = []

_Module = TypeVar("_Module", bound="_WeightedLoss")
_BUFFER = "a 0-dimensional buffer, set with a number or a tensor."


class _WeightedLoss(nn.Module):
    """A loss module whose weights are 0-dimensional buffers written in place.

    A subclass names, in ``_functional``, the function that learns a weight which requires
    grad; it registers each weight once with :meth:`_add_weight` and exposes it through a
    :func:`weight` property. A module-wide cast (``.half()``,
    ``.to(torch.bfloat16)``) does not round the weights: they keep at least float32 and follow
    the device.
    """

    _functional: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self._weight_names: tuple[str, ...] = ()

    def _add_weight(
        self, name: str, value: float | Tensor | None, *, optional: bool = False
    ) -> None:
        """Register the buffer ``_<name>`` set to ``value`` (``None``: an unset optional one)."""
        self.register_buffer(f"_{name}", None if optional else torch.tensor(0.0), persistent=False)
        self._weight_names = (*self._weight_names, name)
        self._set_weight(name, value)

    def _set_weight(self, name: str, value: float | Tensor | None) -> None:
        """Validate ``value``, then write it into the weight's buffer, creating it if unset."""
        if value is None:
            self._buffers[f"_{name}"] = None
            return
        checked = self._check_setting(name, value)
        buffer = self._buffers[f"_{name}"]
        if buffer is None:
            like = next(b for b in self._weights().values() if b is not None)
            buffer = torch.zeros((), dtype=like.dtype, device=like.device)
            self._buffers[f"_{name}"] = buffer
        _fill(buffer, checked)

    def _check_setting(self, name: str, value: object) -> float | Tensor:
        checked = check_weight(name, value)
        if isinstance(checked, Tensor) and checked.requires_grad:
            raise ValueError(
                f"Argument {name} should not require grad: {type(self).__name__} copies it into "
                f"a buffer, which drops its gradient (pass a tensor {name} to "
                f"{self._functional} to learn it), but given a tensor with requires_grad=True"
            )
        return checked

    def _weights(self) -> dict[str, Tensor | None]:
        return {f"_{name}": self._buffers[f"_{name}"] for name in self._weight_names}

    def _apply(self: _Module, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> _Module:
        weights = self._weights()
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        for key, before in weights.items():
            after = self._buffers[key]
            if before is not None and after is not None:
                dtype = torch.promote_types(before.dtype, after.dtype)
                self._buffers[key] = before.to(device=after.device, dtype=dtype)
        return self


def weight(name: str, doc: str) -> Any:
    """The property ``name`` of a :class:`_WeightedLoss`: it reads the buffer ``_<name>`` and
    sets it, checked, in place."""

    def get(self: _WeightedLoss) -> Tensor:
        return cast(Tensor, self._buffers[f"_{name}"])

    def set_(self: _WeightedLoss, value: float | Tensor) -> None:
        self._set_weight(name, value)

    return property(get, set_, doc=doc)


def _short(value: Tensor | None) -> float | str | None:
    """A weight for a repr, without float32 noise: 0.3, not 0.30000001192092896."""
    if value is None:
        return None
    if value.device.type == "meta":
        return "meta"
    return float(f"{value.item():.7g}")


@torch.no_grad()
def _fill(buffer: Tensor, value: float | Tensor) -> None:
    if isinstance(value, Tensor):
        buffer.copy_(value.reshape(()))
    else:
        buffer.fill_(value)
