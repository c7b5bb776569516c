"""What a controller is fed: the observation a training step reports, read the same way by the
Ignite handler and the Lightning callback."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from torch import Tensor


def entry_of(output: Any, key: str) -> Any:
    """``output[key]`` of a mapping, else the attribute ``key`` (a VAELossOutput's ``kl``).

    Raises:
        LookupError: if ``output`` has neither; the caller words the error in its users' terms.
    """
    if isinstance(output, Mapping) and key in output:
        return output[key]
    if hasattr(output, key):
        return getattr(output, key)
    raise LookupError(key)


def observation_to_float(value: object) -> float:
    """A number or a one-element tensor, as a Python float.

    Raises:
        TypeError: if ``value`` is neither a real number (a bool is not one) nor a tensor.
        ValueError: if ``value`` is a tensor of more than one element.
    """
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                "The observation should be a number or a one-element tensor, "
                f"but given a tensor of shape {tuple(value.shape)}"
            )
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            "The observation should be a number or a one-element tensor, "
            f"but given {type(value).__name__}"
        )
    return float(value)
