"""The maths of the training monitors in :mod:`vaekit.metrics`, in pure torch.

Each metric is a private ``_update``/``_compute`` pair, as in torchmetrics' functional tree: the
update turns one batch into sum-reducible statistics, accumulated in float64 so that any split
of the data over batches and processes sums to the same result up to float64 rounding; the
compute turns the accumulated statistics into the value. The metric classes only hold state.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaekit._checks import check_same_shape, check_tensor
from vaekit.functional.decomposition import (
    _LOG_2PI,
    _log_aggregate,
    _log_normal,
    _normal_terms,
)
from vaekit.functional.kl import kl_divergence_normal

__all__: list[str] = []


def _check_batched(name: str, value: Tensor) -> None:
    if value.dim() == 0:
        raise ValueError(
            f"Argument {name} should have a batch dimension, shape (B, *latent), "
            "but given a 0-dimensional tensor"
        )


def _check_posteriors(mu: Tensor, log_var: Tensor) -> None:
    """Raise unless ``mu`` and ``log_var`` are floating-point tensors of one shape
    ``(B, *latent)``."""
    check_tensor("mu", mu)
    check_tensor("log_var", log_var)
    check_same_shape("mu", mu, "log_var", log_var)
    _check_batched("mu", mu)


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


def _aggregate_posterior_update(mu: Tensor, log_var: Tensor) -> tuple[Tensor, Tensor]:
    """Detached float64 copies of a batch of posteriors, shape ``(B, *latent)``.

    Example:
        >>> import torch
        >>> _aggregate_posterior_update(torch.tensor([[0.5]]), torch.tensor([[-1.0]]))
        (tensor([[0.5000]], dtype=torch.float64), tensor([[-1.]], dtype=torch.float64))
    """
    _check_posteriors(mu, log_var)
    return mu.detach().to(torch.float64), log_var.detach().to(torch.float64)


def _aggregate_posterior_draw(
    count: int, size: int, num_samples: int, seed: int
) -> tuple[Tensor, Tensor]:
    """Which of ``count`` posteriors each of ``num_samples`` codes comes from, and its standard
    normal noise of ``size`` elements.

    The draws are made on the CPU by a generator seeded with ``seed``, so that they are the same
    on every device. The posteriors are taken in a random order, each once, then in a new order
    while more codes are asked for than there are posteriors.

    Example:
        >>> index, noise = _aggregate_posterior_draw(2, 3, 5, seed=0)
        >>> sorted(index[:2].tolist()), sorted(index[2:4].tolist()), noise.shape
        ([0, 1], [0, 1], torch.Size([5, 3]))
    """
    generator = torch.Generator().manual_seed(seed)
    passes = -(-num_samples // count)
    index = torch.cat([torch.randperm(count, generator=generator) for _ in range(passes)])
    noise = torch.randn(num_samples, size, generator=generator, dtype=torch.float64)
    return index[:num_samples], noise


def _aggregate_posterior_compute(
    mu: Tensor, log_var: Tensor, num_samples: int, seed: int
) -> dict[str, Tensor]:
    r"""The mutual information and the KLs of the aggregate posterior of ``N`` posteriors.

    ``mu`` and ``log_var`` have shape ``(N, D)``. Codes :math:`z_m \sim q(z \mid x_m)` are drawn
    from posteriors chosen by :func:`_aggregate_posterior_draw`, and :math:`\log q(z_m)` is the
    log of the mean over all ``N`` posteriors, :math:`\log rac1N \sum_n q(z_m \mid x_n)`,
    jointly and per dimension. Returns float64 scalars on the device of ``mu``; NaN for
    ``N = 0``.

    Example:
        >>> import torch
        >>> mu = torch.tensor([[-3.0], [3.0]], dtype=torch.float64)  # two far-apart posteriors
        >>> log_var = torch.zeros(2, 1, dtype=torch.float64)
        >>> out = _aggregate_posterior_compute(mu, log_var, num_samples=1000, seed=0)
        >>> round(out["mi"].item(), 3), round(math.log(2), 3)  # at most log N
        (0.687, 0.693)
    """
    count, size = mu.shape
    keys = ("mi", "marginal_kl", "tc", "dim_kl")
    if count == 0:
        nan = torch.tensor(math.nan, dtype=torch.float64, device=mu.device)
        return dict.fromkeys(keys, nan)
    index, noise = _aggregate_posterior_draw(count, size, num_samples, seed)
    index, noise = index.to(mu.device), noise.to(mu.device)
    own_mu, own_log_var = mu[index], log_var[index]
    z = own_mu + torch.exp(0.5 * own_log_var) * noise
    log_cond = _log_normal(z, *_normal_terms(own_mu, own_log_var)).sum(dim=1)
    log_qz, log_qz_dims = _log_aggregate(z, mu, log_var, -math.log(count))
    log_prior = (-0.5 * (_LOG_2PI + z.square())).sum(dim=1)
    log_prod = log_qz_dims.sum(dim=1)
    values = (
        log_cond - log_qz,
        log_qz - log_prior,
        log_qz - log_prod,
        log_prod - log_prior,
    )
    return {key: v.mean() for key, v in zip(keys, values, strict=True)}
