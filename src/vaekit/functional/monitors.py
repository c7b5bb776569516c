"""The maths of the training monitors in :mod:`vaekit.metrics`, in pure torch.

Each metric is a private ``_update``/``_compute`` pair, as in torchmetrics' functional tree: the
update turns one batch into sum-reducible statistics, accumulated in float64 so that any split
of the data over batches and processes sums to the same result up to float64 rounding; the
compute turns the accumulated statistics into the value. The metric classes only hold state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaekit._checks import check_same_shape, check_tensor
from vaekit.functional.kl import kl_divergence_normal

__all__: list[str] = []


def _check_batched(name: str, value: Tensor) -> None:
    if value.dim() == 0:
        raise ValueError(
            f"Argument {name} should have a batch dimension, shape (B, *latent), "
            "but given a 0-dimensional tensor"
        )


def _recon_kl_ratio_update(recon: Tensor, kl: Tensor) -> tuple[Tensor, Tensor]:
    """Return the float64 sums of ``recon`` and ``kl``, which must have equal shapes.

    Example:
        >>> import torch
        >>> _recon_kl_ratio_update(torch.tensor([1.0, 3.0]), torch.tensor([0.5, 1.5]))
        (tensor(4., dtype=torch.float64), tensor(2., dtype=torch.float64))
    """
    check_tensor("recon", recon)
    check_tensor("kl", kl)
    check_same_shape("recon", recon, "kl", kl)
    return recon.detach().sum(dtype=torch.float64), kl.detach().sum(dtype=torch.float64)


def _recon_kl_ratio_compute(recon_sum: Tensor, kl_sum: Tensor) -> Tensor:
    r"""Ratio of sums :math:`\sum \mathrm{recon} / \sum \mathrm{KL}`: inf for a zero KL sum.

    Example:
        >>> import torch
        >>> _recon_kl_ratio_compute(torch.tensor(4.0), torch.tensor(2.0))
        tensor(2.)
        >>> _recon_kl_ratio_compute(torch.tensor(4.0), torch.tensor(0.0))
        tensor(inf)
    """
    return recon_sum / kl_sum


def _active_units_update(
    mu: Tensor, shift: Tensor | None = None
) -> tuple[Tensor, Tensor, int, Tensor]:
    """Return the float64 sums of ``mu - shift`` and ``(mu - shift)**2`` over the batch, B, shift.

    ``shift`` defaults to the batch mean (0 for an empty batch): any value gives the same
    variance, but one near the mean keeps the sums small, so that no digits cancel.

    Example:
        >>> import torch
        >>> mu = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
        >>> _active_units_update(mu)
        (tensor([0., 0.], dtype=torch.float64), tensor([2., 0.], dtype=torch.float64), 2,
         tensor([2., 5.], dtype=torch.float64))
    """
    check_tensor("mu", mu)
    _check_batched("mu", mu)
    values = mu.detach().to(torch.float64)
    if shift is None:
        shift = values.mean(dim=0) if values.shape[0] else values.new_zeros(values.shape[1:])
    centred = values - shift
    return centred.sum(dim=0), centred.square().sum(dim=0), mu.shape[0], shift


def _active_units_rebase(
    sum_mu: Tensor, sum_mu_sq: Tensor, total: Tensor, delta: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Move sums about a shift :math:`k` to sums about :math:`k - \delta`, exactly in algebra.

    .. math::
        \sum (x - k + \delta) = S_1 + n\delta, \qquad
        \sum (x - k + \delta)^2 = S_2 + 2\delta S_1 + n\delta^2.

    Example:
        >>> import torch
        >>> x = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
        >>> s1, s2 = (x - 3).sum(), (x - 3).square().sum()
        >>> _active_units_rebase(s1, s2, torch.tensor(3), torch.tensor(1.0, dtype=torch.float64))
        (tensor(1., dtype=torch.float64), tensor(5., dtype=torch.float64))
        >>> (x - 2).sum(), (x - 2).square().sum()
        (tensor(1., dtype=torch.float64), tensor(5., dtype=torch.float64))
    """
    return sum_mu + total * delta, sum_mu_sq + delta * (2 * sum_mu + total * delta)


def _active_units_variance(sum_mu: Tensor, sum_mu_sq: Tensor, total: Tensor) -> Tensor:
    r"""Population variance :math:`S_2/n - (S_1/n)^2` from shifted sums, clamped at 0.

    Example:
        >>> import torch
        >>> s1, s2 = torch.tensor([0.0, 0.0]), torch.tensor([2.0, 0.0])
        >>> _active_units_variance(s1, s2, torch.tensor(2))
        tensor([1., 0.])
    """
    mean = sum_mu / total
    return (sum_mu_sq / total - mean.square()).clamp_min(0.0)


def _active_units_compute(
    sum_mu: Tensor, sum_mu_sq: Tensor, total: Tensor, threshold: float
) -> Tensor:
    """Number of latent elements whose variance exceeds ``threshold``, as an int64 scalar.

    Example:
        >>> import torch
        >>> _active_units_compute(
        ...     torch.tensor([0.0, 0.0]), torch.tensor([2.0, 0.0]), torch.tensor(2), threshold=0.01
        ... )
        tensor(1)
    """
    return (_active_units_variance(sum_mu, sum_mu_sq, total) > threshold).sum()


def _kl_per_dimension_update(mu: Tensor, log_var: Tensor) -> tuple[Tensor, int]:
    """Return the float64 sum over the batch of each latent element's KL from N(0, 1), and B.

    Example:
        >>> import torch
        >>> mu = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
        >>> _kl_per_dimension_update(mu, torch.zeros(2, 2))
        (tensor([0., 5.], dtype=torch.float64), 2)
    """
    with torch.no_grad():
        kl = kl_divergence_normal(mu, log_var, reduction="none")
    _check_batched("mu", mu)
    return kl.to(torch.float64).sum(dim=0), mu.shape[0]


def _kl_per_dimension_compute(kl_sum: Tensor, total: Tensor) -> Tensor:
    """Mean KL of each latent element over the samples seen.

    Example:
        >>> import torch
        >>> _kl_per_dimension_compute(torch.tensor([0.0, 5.0]), torch.tensor(2))
        tensor([0.0000, 2.5000])
    """
    return kl_sum / total
