"""Reductions: the names, the scales and the reduce step shared by every vaekit loss.

A term of a VAE loss is an elementwise tensor of shape ``(B, *)``. Its reductions, relative to
the per-data-point sum (the sum over the non-batch elements, averaged over the batch):

============== =========================================== =========================
reduction      value                                       scale per data point
============== =========================================== =========================
``"none"``     the elementwise tensor                      (not reduced)
``"batchmean"`` ``sum / B``                                ``1``
``"sum"``      ``sum``                                     ``B``
``"mean"``     ``sum / numel``                             ``1 / D``, ``D = numel / B``
============== =========================================== =========================

Free bits clamp the batch-averaged term of each non-batch element from below before that
element's contribution is summed, and scale from there the same way.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TypeAlias

from torch import Tensor

__all__ = [
    "KL_REDUCTIONS",
    "LOSS_REDUCTIONS",
    "Reduction",
    "per_data_point_scale",
    "reduce",
    "reduce_free_bits",
    "split",
    "sum_scale",
]

KL_REDUCTIONS = ("none", "mean", "sum", "batchmean")
"""The KL's reductions: torch's three and ``"batchmean"``, as :func:`torch.nn.functional.kl_div`."""
LOSS_REDUCTIONS = ("batchmean", "mean", "sum")
"""The reductions of a loss whose terms must be added: every one reduces to a scalar."""

Reduction: TypeAlias = str | tuple[str, str]
"""A reduction for both terms of a loss, or an explicit ``(recon, kl)`` pair."""


def split(reduction: Reduction) -> tuple[str, str]:
    """The ``(recon, kl)`` reductions of a loss reduction."""
    return (reduction, reduction) if isinstance(reduction, str) else reduction


def per_data_point_scale(reduction: str, size: int, batch_size: int) -> Fraction:
    """How many times the per-data-point sum ``reduction`` is, for ``size`` elements per data
    point and a batch of ``batch_size``: exact, so that ratios of scales are exact too."""
    if reduction == "mean":
        return Fraction(1, size)
    return Fraction(batch_size) if reduction == "sum" else Fraction(1)


def sum_scale(reduction: str, loss: Tensor) -> float:
    """The factor from the sum over every element of ``loss`` to ``reduction`` (not
    ``"none"``)."""
    if reduction == "sum":
        return 1.0
    return 1.0 / (loss.numel() if reduction == "mean" else loss.shape[0])


def reduce(loss: Tensor, reduction: str) -> Tensor:
    """Reduce an elementwise ``loss`` of shape ``(B, *)`` as ``reduction`` says."""
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    total = loss.sum()
    return total if reduction == "sum" else total / loss.shape[0]


def reduce_free_bits(loss: Tensor, reduction: str, free_bits: float) -> Tensor:
    """Reduce ``loss`` with each non-batch element's batch average clamped at ``free_bits``."""
    batch_size = loss.shape[0]
    per_element = (loss.sum(0) / batch_size).clamp_min(free_bits)
    if reduction == "mean":
        return per_element.mean()
    total = per_element.sum()
    return total * batch_size if reduction == "sum" else total
