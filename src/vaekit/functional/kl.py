"""Closed-form KL divergence between diagonal Gaussians."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaekit._checks import (
    check_broadcastable_to,
    check_free_bits,
    check_reduction,
    check_same_device,
    check_same_shape,
    check_tensor,
    result_dtype,
)
from vaekit._reduction import reduce, reduce_free_bits, sum_scale
from vaekit.functional import _kl_fast

__all__ = ["kl_divergence_normal"]

# (e^x - 1 - x) / 2 = x^2 p(x) on [-1, 1], lowest degree first. float32: the degree-7 p with
# p(0) = 1/4 that minimises the larger of the relative errors of e^x - 1 - x and of its
# derivative e^x - 1 (a linear program over 2,000 Chebyshev nodes): 2.4e-8 for each, below
# float32's rounding. float64: the Taylor series, whose next terms are below 2^-56 of both.
_HALF_SERIES_FLOAT32 = (
    0.25,
    0.08333334153407913,
    0.02083339407411858,
    0.004166626134612491,
    0.000694192469851345,
    9.925362533131995e-05,
    1.2731426333798946e-05,
    1.3755720844380996e-06,
)
_HALF_SERIES_FLOAT64 = tuple(0.5 / math.factorial(k + 2) for k in range(18))
# Above this, e^x is computed as e^(x - shift) * e^shift, so that e^x / 2 stays finite where
# e^x alone would overflow; x - shift is exact there (Sterbenz).
_SHIFT = {torch.float32: 88.0, torch.float64: 704.0}


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
    :math:`e^{\delta} - 1 - \delta`, and its derivative :math:`e^{\delta} - 1`, keep the
    input's precision even for :math:`\delta` near 0, where a collapsed latent lives and the
    textbook ``1 + lv - exp(lv)`` loses every digit. Both terms are non-negative as computed,
    so rounding can never make the divergence negative; it is exactly 0 where the posterior
    equals the prior, and finite wherever the true value is. Half-precision inputs are
    computed, and returned, in float32: a float16 sum over a large latent overflows.

    The function is made of differentiable torch operations, so it works under
    :mod:`torch.func` (``grad``, ``vmap``, ``jvp``, ``hessian``), forward-mode AD and
    :func:`torch.compile`, on any device. On the CPU, the KL term of a training step (prior
    :math:`\mathcal N(0, I)`, a reducing ``reduction``, no free bits) takes a fused path that
    saves only ``mu`` and ``log_var`` for backward and defines each of those transforms.

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
        ValueError: if shapes do not match, the inputs are on different devices,
            ``reduction`` is unknown, ``free_bits`` is negative, beyond float32's range or
            combined with ``"none"``, or a ``"mean"``, ``"batchmean"`` or free-bits reduction
            is asked of an empty batch (which would otherwise be a silent NaN).

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
    reduction = check_reduction(reduction)
    free_bits = check_free_bits(free_bits, reduction)
    return _kl_divergence_normal(mu, log_var, prior_mu, prior_log_var, reduction, free_bits)


def _kl_divergence_normal(
    mu: Tensor,
    log_var: Tensor,
    prior_mu: Tensor | None,
    prior_log_var: Tensor | None,
    reduction: str,
    free_bits: float,
) -> Tensor:
    """:func:`kl_divergence_normal` for a checked ``reduction`` and ``free_bits``."""
    _check_inputs(mu, log_var, prior_mu, prior_log_var)
    _check_batch(mu, reduction, free_bits)
    prior = prior_mu is not None or prior_log_var is not None
    if _kl_fast.applies(mu, log_var, prior=prior, reduction=reduction, free_bits=free_bits):
        return _kl_fast.kl_sum(mu, log_var, sum_scale(reduction, mu))
    kl = _kl_elementwise(mu, log_var, prior_mu, prior_log_var)
    if free_bits > 0:
        return reduce_free_bits(kl, reduction, free_bits)
    return reduce(kl, reduction)


def _kl_elementwise(
    mu: Tensor, log_var: Tensor, prior_mu: Tensor | None, prior_log_var: Tensor | None
) -> Tensor:
    r"""The elementwise KL, the reference: :math:`\tfrac12 d \cdot d` with
    :math:`d = (\mu - \mu_p) / \sigma_p`, which is exact for :math:`d = 1` and overflows only
    where the true value does, plus :math:`\tfrac12 (e^\delta - 1 - \delta)`."""
    dtype = result_dtype(mu, log_var, prior_mu, prior_log_var)
    diff, delta = mu.to(dtype), log_var.to(dtype)
    if prior_mu is not None:
        diff = diff - prior_mu.to(dtype)
    if prior_log_var is not None:
        prior_log_var = prior_log_var.to(dtype)
        delta = delta - prior_log_var
        diff = diff * torch.exp(prior_log_var * -0.5)
    return (0.5 * diff) * diff + _half_expm1_minus_x(delta)


def _half_expm1_minus_x(x: Tensor) -> Tensor:
    r""":math:`\tfrac12 (e^x - 1 - x)` to ``x``'s precision, its gradient too, in plain
    operations: the series on :math:`|x| \le 1`, where ``exp(x) - 1 - x`` loses the digits
    (and :func:`torch.compile` turns ``expm1`` into it), and ``exp`` outside, where it keeps
    them. The series reads ``x`` clamped to [-1, 1], so neither branch of ``torch.where``
    overflows into the other's gradient."""
    series = _HALF_SERIES_FLOAT64 if x.dtype == torch.float64 else _HALF_SERIES_FLOAT32
    shift = _SHIFT[torch.float64 if x.dtype == torch.float64 else torch.float32]
    c = x.clamp(-1.0, 1.0)
    poly = c * series[-1]
    for a in reversed(series[1:-1]):
        poly = (poly + a) * c
    inside = (poly + series[0]) * c * c
    over = x > shift
    exp = torch.exp(torch.where(over, x - shift, x))
    half_exp = torch.where(over, exp * (0.5 * math.exp(shift)), exp * 0.5)
    outside = half_exp - (0.5 + 0.5 * x.clamp(max=shift))
    return torch.where(x.abs() <= 1.0, inside, outside)


def _check_inputs(
    mu: Tensor, log_var: Tensor, prior_mu: Tensor | None, prior_log_var: Tensor | None
) -> None:
    """Raise unless the posterior and the prior given are floating-point tensors of matching
    shapes on one device."""
    check_tensor("mu", mu)
    check_tensor("log_var", log_var)
    check_same_shape("mu", mu, "log_var", log_var)
    check_same_device("mu", mu, "log_var", log_var)
    for name, prior in (("prior_mu", prior_mu), ("prior_log_var", prior_log_var)):
        if prior is not None:
            check_tensor(name, prior)
            check_broadcastable_to(name, prior, "mu", mu)
            check_same_device("mu", mu, name, prior)


def _check_batch(mu: Tensor, reduction: str, free_bits: float) -> None:
    """Raise unless ``mu`` has the batch that ``reduction`` and free bits average over: a NaN
    from an empty one would pass silently."""
    needs_batch = reduction == "batchmean" or free_bits > 0
    if needs_batch and mu.dim() == 0:
        raise ValueError(
            f"Argument mu should have a batch dimension for reduction={reduction!r}, "
            "but given a 0-dimensional tensor"
        )
    if (needs_batch and mu.shape[0] == 0) or (reduction == "mean" and mu.numel() == 0):
        raise ValueError(
            f"Argument mu should not be empty for reduction={reduction!r}, "
            f"but given mu.shape={tuple(mu.shape)} (the result would be NaN)"
        )
