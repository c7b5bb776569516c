"""Shared argument and shape validation.

Every check raises in one sentence that names the argument and shows the offending value or
shapes, in the wording PyTorch-Ignite uses: "Argument X should be ..., but given ...".
Only metadata is inspected (dtype, shape, Python values): no check forces a device sync.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum", "batchmean")


def check_tensor(name: str, value: object) -> Tensor:
    """Return ``value`` if it is a floating-point tensor, else raise TypeError."""
    if not isinstance(value, Tensor):
        raise TypeError(
            f"Argument {name} should be a torch.Tensor, but given {type(value).__name__}"
        )
    if not value.is_floating_point():
        raise TypeError(
            f"Argument {name} should be a floating-point tensor, but given dtype {value.dtype}"
        )
    return value


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise ValueError unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"Arguments {name_a} and {name_b} should have the same shape, "
            f"but given {name_a}.shape={tuple(a.shape)} and {name_b}.shape={tuple(b.shape)}"
        )


def check_broadcastable_to(name: str, value: Tensor, target_name: str, target: Tensor) -> None:
    """Raise ValueError unless ``value`` broadcasts to ``target``'s shape without expanding it."""
    ok = value.dim() <= target.dim() and all(
        v in (1, t) for v, t in zip(reversed(value.shape), reversed(target.shape), strict=False)
    )
    if not ok:
        raise ValueError(
            f"Argument {name} should broadcast to {target_name}.shape={tuple(target.shape)}, "
            f"but given {name}.shape={tuple(value.shape)}"
        )


def check_reduction(reduction: object, allowed: Sequence[str] = REDUCTIONS) -> str:
    """Return ``reduction`` if it is one of ``allowed``, else raise ValueError."""
    if not isinstance(reduction, str) or reduction not in allowed:
        choices = ", ".join(repr(r) for r in allowed)
        raise ValueError(f"Argument reduction should be one of {choices}, but given {reduction!r}")
    return reduction


def check_non_negative(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite real number >= 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Argument {name} should be a float, but given {type(value).__name__}")
    if not 0 <= value < math.inf:  # also rejects NaN; plain comparisons trace under dynamo
        raise ValueError(f"Argument {name} should be a finite number >= 0, but given {value!r}")
    return float(value)


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Argument {name} should be an int, but given {type(value).__name__}")
    if value < 1:
        raise ValueError(f"Argument {name} should be a positive int, but given {value}")
    return value


def check_free_bits(free_bits: object, reduction: str) -> float:
    """Return ``free_bits`` as a float if valid for ``reduction``, else raise."""
    value = check_non_negative("free_bits", free_bits)
    if value > 0 and reduction == "none":
        raise ValueError(
            "Argument free_bits should be 0 with reduction='none', since free bits clamp a "
            f"batch average, but given free_bits={value}"
        )
    return value


def result_dtype(*tensors: Tensor | None) -> torch.dtype:
    """The dtype vaekit computes and returns in: float32, or float64 if an input is float64.

    Half-precision inputs are promoted: a float16 sum over a latent or an image overflows.
    """
    for t in tensors:  # what torch.promote_types with float32 gives, in a quarter of the time
        if t is not None and t.dtype == torch.float64:
            return torch.float64
    return torch.float32
