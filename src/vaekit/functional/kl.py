"""Closed-form KL divergence between diagonal Gaussians."""

from __future__ import annotations

import torch
from torch import Tensor

from vaekit._checks import (
    check_broadcastable_to,
    check_free_bits,
    check_reduction,
    check_same_shape,
    check_tensor,
)

__all__ = ["kl_divergence_normal"]


def kl_divergence_normal(
    mu: Tensor,
    log_var: Tensor,
    prior_mu: Tensor | None = None,
    prior_log_var: Tensor | None = None,
    *,
    reduction: str = "batchmean",
    free_bits: float = 0.0,
) -> Tensor:
    r"""KL divergence of a diagonal Gaussian posterior from a diagonal Gaussian prior.

    Elementwise, with :math:`\delta = \log\sigma^2 - \log\sigma_p^2`,

    .. math::
        \mathrm{KL}\big(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(\mu_p, \sigma_p^2)\big)
        = \tfrac12 \Big( \frac{(\mu - \mu_p)^2}{\sigma_p^2}
        + \big(e^{\delta} - 1\big) - \delta \Big),

    which for the default prior :math:`\mathcal N(0, I)` is the familiar
    :math:`-\tfrac12 (1 + \log\sigma^2 - \mu^2 - \sigma^2)`. The term
    :math:`e^{\delta} - 1` is evaluated with ``expm1``: the textbook ``1 + lv - exp(lv)`` loses
    every digit when the log-variance is near 0, where a collapsed latent lives. Each element is
    clamped at 0, so rounding can never make the divergence negative, and it is exactly 0 where
    the posterior equals the prior. Half-precision inputs are computed, and returned, in float32:
    a float16 sum over a large latent overflows.

    ``reduction`` has torch's meanings. ``"batchmean"`` (the default) sums over the latent
    elements and averages over the batch dimension 0, the KL per data point of the ELBO:

    .. math::
        \mathrm{batchmean} = \frac1B \sum_{b=1}^{B} \sum_j \mathrm{KL}_{b,j},
        \qquad \mathrm{sum} = B \cdot \mathrm{batchmean},
        \qquad \mathrm{mean} = \mathrm{batchmean} / D,

    where :math:`D` is the number of latent elements per data point (``mu[0].numel()``).

    Free bits (Kingma et al., 2016, "Improved variational inference with inverse autoregressive
    flow") clamp the batch-averaged KL of each latent element from below before the reduction
    over latent elements, so that the optimiser stops pushing a unit below ``free_bits`` nats:

    .. math::
        \mathrm{batchmean} = \sum_j \max\Big(\lambda, \frac1B \sum_b \mathrm{KL}_{b,j}\Big),

    with ``"sum"`` and ``"mean"`` scaled from it by :math:`B` and :math:`1/D` as above.

    Args:
        mu: posterior mean, shape ``(B, *latent)``: ``(B, D)`` for a linear head,
            ``(B, C, H, W)`` for a convolutional latent, any rank.
        log_var: posterior log-variance :math:`\log\sigma^2` (not the log standard deviation),
            the shape of ``mu``.
        prior_mu: prior mean, broadcastable to ``mu``; ``None`` means 0.
        prior_log_var: prior log-variance, broadcastable to ``mu``; ``None`` means 0.
        reduction: ``"none"`` | ``"sum"`` | ``"mean"`` | ``"batchmean"``.
        free_bits: nats per latent element, ``>= 0``; needs a reducing ``reduction``.

    Returns:
        The divergence, of shape ``mu.shape`` for ``"none"`` and a scalar otherwise.

    Raises:
        TypeError: if an input is not a floating-point tensor, or ``free_bits`` is not a number.
        ValueError: if shapes do not match, ``reduction`` is unknown, ``free_bits`` is negative
            or combined with ``"none"``, or a ``"mean"``/``"batchmean"``/free-bits reduction is
            asked of an empty batch (which would otherwise be a silent NaN).

    Example:
        >>> import torch
        >>> from vaekit.functional import kl_divergence_normal
        >>> mu = torch.tensor([[0.0, 1.0], [0.5, -0.5]])
        >>> log_var = torch.tensor([[0.0, 0.0], [-1.0, 1.0]])
        >>> kl_divergence_normal(mu, log_var)
        tensor(0.6465)
        >>> kl_divergence_normal(mu, log_var, reduction="none")
        tensor([[0.0000, 0.5000],
                [0.3089, 0.4841]])
        >>> kl_divergence_normal(torch.zeros(3, 4), torch.zeros(3, 4))
        tensor(0.)
        >>> kl_divergence_normal(mu, log_var, free_bits=0.3)
        tensor(0.7921)
    """
    check_tensor("mu", mu)
    check_tensor("log_var", log_var)
    check_same_shape("mu", mu, "log_var", log_var)
    for name, prior in (("prior_mu", prior_mu), ("prior_log_var", prior_log_var)):
        if prior is not None:
            check_tensor(name, prior)
            check_broadcastable_to(name, prior, "mu", mu)
    check_reduction(reduction)
    free_bits = check_free_bits(free_bits, reduction)
    _check_batch(mu, reduction, free_bits)

    kl = _kl_elementwise(mu, log_var, prior_mu, prior_log_var)
    if free_bits > 0:
        return _reduce_free_bits(kl, reduction, free_bits)
    return _reduce(kl, reduction)


def _check_batch(mu: Tensor, reduction: str, free_bits: float) -> None:
    needs_batch = reduction == "batchmean" or free_bits > 0
    if needs_batch and mu.dim() == 0:
        raise ValueError(
            f"Argument mu should have a batch dimension for reduction={reduction!r}, "
            "but given a 0-dimensional tensor"
        )
    if (needs_batch or reduction == "mean") and mu.numel() == 0:
        raise ValueError(
            f"Argument mu should not be empty for reduction={reduction!r}, "
            f"but given mu.shape={tuple(mu.shape)} (the result would be NaN)"
        )


def _compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _kl_elementwise(
    mu: Tensor, log_var: Tensor, prior_mu: Tensor | None, prior_log_var: Tensor | None
) -> Tensor:
    dtype = _compute_dtype(mu, log_var, prior_mu, prior_log_var)
    mu, log_var = mu.to(dtype), log_var.to(dtype)
    diff = mu if prior_mu is None else mu - prior_mu.to(dtype)
    if prior_log_var is None:
        delta = log_var
        mahalanobis = diff.square()
    else:
        prior_log_var = prior_log_var.to(dtype)
        delta = log_var - prior_log_var
        mahalanobis = diff.square() * torch.exp(-prior_log_var)
    # expm1(d) - d is exact to rounding near d = 0; clamp guards the last ulp.
    return (0.5 * (mahalanobis + (torch.expm1(delta) - delta))).clamp_min(0.0)


def _reduce(kl: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return kl
    if reduction == "sum":
        return kl.sum()
    if reduction == "mean":
        return kl.mean()
    return kl.sum() / kl.shape[0]


def _reduce_free_bits(kl: Tensor, reduction: str, free_bits: float) -> Tensor:
    per_element = kl.mean(dim=0).clamp_min(free_bits)
    if reduction == "sum":
        return per_element.sum() * kl.shape[0]
    if reduction == "mean":
        return per_element.mean()
    return per_element.sum()
