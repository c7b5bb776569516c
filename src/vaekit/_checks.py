"""Shared argument and shape validation.

Every check raises in one sentence that names the argument and shows the offending value or
shapes, in the wording PyTorch-Ignite uses: "Argument X should be ..., but given ...". Checks of
tensors inspect metadata only (dtype, shape, device), so that none forces a device sync; the
one that reads a value, :func:`check_weight`, reads it only on the CPU.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from vaekit._reduction import KL_REDUCTIONS, LOSS_REDUCTIONS, Reduction

FLOAT32_MAX = torch.finfo(torch.float32).max


def check_real(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a real number, else raise TypeError.

    ``bool`` is not a number; an int beyond any float is an infinity of its sign.
    """
    if type(value) is float:  # the common case, without the abstract-class test
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Argument {name} should be a float, but given {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf  # type: ignore[operator]


def check_number(
    name: str,
    value: object,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite real number in the range, else raise.

    The range is ``[low, high]``, each end open when asked; ``bool`` is not a number.
    """
    number = check_real(name, value)
    above = number > low if low_open else number >= low  # False for NaN
    below = number < high if high_open else number <= high
    if not (above and below and math.isfinite(number)):
        raise ValueError(
            f"Argument {name} should be a finite number"
            f"{_range(low, high, low_open, high_open)}, but given {value!r}"
        )
    return number


def _range(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if low == -math.inf and high == math.inf:
        return ""
    if high == math.inf:
        return f" {'>' if low_open else '>='} {low:g}"
    if low == -math.inf:
        return f" {'<' if high_open else '<='} {high:g}"
    return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_int(name: str, value: object, *, low: int | None = 0) -> int:
    """Return ``value`` if it is an int ``>= low`` (any int for ``None``), else raise; ``bool``
    is not an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Argument {name} should be an int, but given {type(value).__name__}")
    number = int(value)
    if low is not None and number < low:
        kind = {0: "a non-negative int", 1: "a positive int"}.get(low, f"an int >= {low}")
        raise ValueError(f"Argument {name} should be {kind}, but given {value!r}")
    return number


def check_instance(name: str, value: object, kind: type | tuple[type, ...], described: str) -> None:
    """Raise TypeError unless ``value`` is an instance of ``kind``, which ``described`` names."""
    if not isinstance(value, kind):
        raise TypeError(f"Argument {name} should be {described}, but given {type(value).__name__}")


def check_callable(name: str, value: object) -> None:
    """Raise TypeError unless ``value`` is callable."""
    if not callable(value):
        raise TypeError(f"Argument {name} should be callable, but given {type(value).__name__}")


def check_target(target: object | None, attr: object) -> None:
    """Raise unless ``attr`` is a str that names an attribute of ``target`` (when given): where a
    schedule, a controller or a handler sets its value."""
    check_instance("attr", attr, str, "a str")
    if target is not None and not hasattr(target, str(attr)):
        raise ValueError(
            f"Argument target should have an attribute {attr!r}, "
            f"but given {type(target).__name__} without it"
        )


def check_float32(name: str, value: float) -> float:
    """Return ``value`` if float32 holds it (vaekit computes in float32 or wider), else raise."""
    if abs(value) > FLOAT32_MAX:
        raise ValueError(
            f"Argument {name} should be at most {FLOAT32_MAX:.4g}, the largest float32, "
            f"but given {value!r}"
        )
    return value


def check_state_dict(state_dict: object, keys: Sequence[str]) -> Mapping[str, object]:
    """Return ``state_dict`` if it is a mapping with exactly ``keys``, else raise."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"Argument state_dict should be a mapping, but given {type(state_dict).__name__}"
        )
    if sorted(state_dict) != sorted(keys):
        raise ValueError(
            f"Argument state_dict should have the keys {sorted(keys)}, "
            f"but given {sorted(state_dict)}"
        )
    return state_dict


def check_tensor(name: str, value: object) -> Tensor:
    """Return ``value`` if it is a real floating-point tensor, else raise TypeError."""
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


def check_same_device(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise ValueError unless ``a`` and ``b`` are on the same device."""
    if a.device != b.device:
        raise ValueError(
            f"Arguments {name_a} and {name_b} should be on the same device, "
            f"but given {name_a}.device={a.device} and {name_b}.device={b.device}"
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


def check_reduction(reduction: object, allowed: Sequence[str] = KL_REDUCTIONS) -> str:
    """Return ``reduction`` if it is one of ``allowed``, else raise ValueError."""
    if not isinstance(reduction, str) or reduction not in allowed:
        choices = ", ".join(repr(r) for r in allowed)
        raise ValueError(f"Argument reduction should be one of {choices}, but given {reduction!r}")
    return reduction


def check_loss_reduction(reduction: object, name: str = "reduction") -> Reduction:
    """Return ``reduction`` if it is a loss reduction or a ``(recon, kl)`` pair, else raise."""
    if isinstance(reduction, str) and reduction in LOSS_REDUCTIONS:
        return reduction
    if (
        isinstance(reduction, tuple)
        and len(reduction) == 2
        and all(isinstance(r, str) and r in LOSS_REDUCTIONS for r in reduction)
    ):
        return reduction[0], reduction[1]
    choices = ", ".join(repr(r) for r in LOSS_REDUCTIONS)
    raise ValueError(
        f"Argument {name} should be one of {choices}, or a (recon, kl) tuple of them, "
        f"but given {reduction!r}"
    )


def check_free_bits(free_bits: object, reduction: str) -> float:
    """Return ``free_bits`` as a float if valid for ``reduction``, else raise.

    The floor is compared with float32 sums, so it must be a float32 number.
    """
    value = check_float32("free_bits", check_number("free_bits", free_bits, low=0.0))
    if value > 0 and reduction == "none":
        raise ValueError(
            "Argument free_bits should be 0 with reduction='none', since free bits clamp a "
            f"batch average, but given free_bits={value}"
        )
    return value


def check_weight(name: str, value: object) -> float | Tensor:
    """Return a number ``>= 0`` that float32 holds as a float, or a one-element floating tensor.

    A tensor's value is checked on the CPU only: reading it elsewhere would force a device sync.
    """
    if not isinstance(value, Tensor):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"Argument {name} should be a float or a tensor, but given {type(value).__name__}"
            )
        return check_float32(name, check_number(name, value, low=0.0))
    check_tensor(name, value)
    if value.numel() != 1:
        raise ValueError(
            f"Argument {name} should be a one-element tensor, "
            f"but given {name}.shape={tuple(value.shape)}"
        )
    if value.device.type == "cpu" and not torch.compiler.is_compiling():
        number = value.detach().reshape(()).item()
        if not 0 <= number <= FLOAT32_MAX:  # also rejects NaN
            raise ValueError(f"Argument {name} should be a finite number >= 0, but given {value!r}")
    return value


def result_dtype(*tensors: Tensor | None) -> torch.dtype:
    """The dtype vaekit computes and returns in: float32, or float64 if an input is float64.

    Half-precision inputs are promoted: a float16 sum over a latent or an image overflows.
    """
    for t in tensors:
        if t is not None and t.dtype == torch.float64:
            return torch.float64
    return torch.float32
