r"""Evaluating a VAE: log-likelihoods, the importance-weighted bound and bits per dimension."""

from __future__ import annotations

import math
from typing import overload

import torch
from torch import Tensor

from vaekit._checks import (
    check_broadcastable_to,
    check_int,
    check_same_device,
    check_same_shape,
    check_tensor,
    result_dtype,
)
from vaekit.functional._recon import (
    _recon_elementwise,
    check_data_range,
    check_likelihood,
    check_recon_settings,
    check_recon_var,
    check_variance_inputs,
)

__all__ = ["bits_per_dim", "iwae_bound", "log_importance_weights", "log_likelihood"]

_LN2 = math.log(2.0)


def log_likelihood(
    x_hat: Tensor,
    x: Tensor,
    *,
    recon: str,
    recon_var: float | str | Tensor | None = None,
    num_bins: int = 256,
    data_range: tuple[float, float] = (0.0, 1.0),
    min_log_sigma: float | None = -6.0,
) -> Tensor:
    r"""The log-likelihood :math:`\log p(x \mid z)` of each data point, in nats.

    .. math::
        \log p(x \mid z) = -\sum_i \mathrm{recon}_i(\hat x, x),

    summed over every non-batch element, with the elementwise negative log-likelihoods of
    :func:`vaekit.functional.vae_loss`, the same variances included, so that a model is
    evaluated with the likelihood it was trained with. ``recon`` must be a normalised
    likelihood: ``"bce"`` and ``"bce_with_logits"`` (binary data), ``"gaussian"``,
    ``"discretized_gaussian"`` and ``"discretized_logistic"``. ``"mse"``, ``"l1"`` and
    callables are not, and raise.

    For a test log-likelihood, give the variance the model was trained with as a number (the
    last ``"optimal"`` variance of training, say) or a tensor (a
    :class:`vaekit.nn.LearnedVariance`'s output): ``"optimal"`` here computes the optimum of
    the elements given, every one of the ``K`` samples included, which makes each data point's
    likelihood depend on the others.

    The function is made of differentiable torch operations: it works under
    :func:`torch.func.grad` and :func:`torch.func.vmap`.

    Args:
        x_hat: the decoder's output (probabilities for ``"bce"``, logits for
            ``"bce_with_logits"``, the mean otherwise), ``(B, *)``, or ``(K, B, *)`` for ``K``
            samples of the latent per data point.
        x: the data, ``(B, *)``.
        recon: the likelihood, as :func:`vaekit.functional.vae_loss` names it.
        recon_var: the variance of ``"gaussian"`` and the discretized likelihoods: a number
            ``> 0``, a tensor broadcastable to ``x``, ``"optimal"`` or ``"optimal_channel"``;
            ``None`` means 1.
        num_bins: the grid size of the discretized likelihoods, ``>= 2``.
        data_range: ``(lo, hi)``, the first and last grid values.
        min_log_sigma: the soft clip of an optimal variance's log standard deviation, or
            ``None``.

    Returns:
        ``(B,)``, or ``(K, B)`` for ``(K, B, *)`` reconstructions; float32, or float64 if an
        input is.

    Raises:
        TypeError: if ``x_hat``, ``x`` or a tensor ``recon_var`` is not a floating-point tensor,
            or a setting is of the wrong type.
        ValueError: if ``recon`` is not a normalised likelihood, ``x`` has no batch dimension,
            ``x_hat`` is neither ``x.shape`` nor ``(K, *x.shape)``, or a setting is out of
            range.

    Example:
        >>> import torch
        >>> from vaekit.functional import log_likelihood
        >>> x = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
        >>> log_likelihood(torch.zeros(2, 2), x, recon="bce_with_logits")  # 2 log(1/2) each
        tensor([-1.3863, -1.3863])
        >>> mean = torch.full((2, 2), 0.5)  # two bins, (-inf, 0.5] and (0.5, inf): halves
        >>> log_likelihood(mean, x, recon="discretized_logistic", recon_var=1.0, num_bins=2)
        tensor([-1.3863, -1.3863])
        >>> log_likelihood(torch.zeros(3, 2, 2), x, recon="gaussian").shape  # K = 3 samples
        torch.Size([3, 2])
    """
    recon = check_likelihood(recon)
    variance = check_recon_var(recon_var, recon)
    settings = check_recon_settings(
        recon,
        variance,
        min_log_sigma=min_log_sigma,
        num_bins=num_bins,
        data_range=data_range,
        sync_dist=False,
    )
    check_tensor("x_hat", x_hat)
    check_tensor("x", x)
    if x.dim() == 0:
        raise ValueError(
            "Argument x should have a batch dimension, shape (B, *), but given a "
            "0-dimensional tensor"
        )
    if x_hat.shape != x.shape and x_hat.shape[1:] != x.shape:
        raise ValueError(
            f"Argument x_hat should have shape x.shape={tuple(x.shape)} or (K, *x.shape), "
            f"but given x_hat.shape={tuple(x_hat.shape)}"
        )
    check_same_device("x", x, "x_hat", x_hat)
    check_variance_inputs(variance, x)
    nll = _recon_elementwise(x_hat, x, settings, variance)
    batch_dims = x_hat.dim() - x.dim() + 1
    return -nll.reshape(*nll.shape[:batch_dims], -1).sum(-1)


def log_importance_weights(
    log_px_given_z: Tensor,
    z: Tensor,
    mu: Tensor,
    log_var: Tensor,
    prior_mu: Tensor | None = None,
    prior_log_var: Tensor | None = None,
) -> Tensor:
    r"""The log importance weights of ``K`` posterior samples per data point.

    .. math::
        \log w_k = \log p(x \mid z_k) + \log p(z_k) - \log q(z_k \mid x),
        \qquad z_k \sim q(z \mid x) = \mathcal N(\mu, \sigma^2),

    with the diagonal Gaussian prior :math:`p(z) = \mathcal N(\mu_p, \sigma_p^2)`
    (:math:`\mathcal N(0, I)` by default) and the latent elements summed. Their mean over
    :math:`k` estimates the ELBO; :func:`iwae_bound` turns them into the tighter
    importance-weighted bound. The normalising constants of the prior and the posterior
    cancel and are not computed.

    Args:
        log_px_given_z: :math:`\log p(x \mid z_k)`, ``(K, B)``, e.g. from
            :func:`log_likelihood` given the decoder's ``(K, B, *)`` outputs.
        z: the samples, ``(K, B, *latent)``, e.g. from
            :func:`vaekit.functional.reparameterize` with ``n_samples=K``.
        mu: the posterior mean, ``(B, *latent)``.
        log_var: the posterior log-variance :math:`\log\sigma^2`, the shape of ``mu``.
        prior_mu: the prior mean, broadcastable to ``mu``; ``None`` means 0.
        prior_log_var: the prior log-variance, broadcastable to ``mu``; ``None`` means 0.

    Returns:
        ``(K, B)``: float32, or float64 if an input is.

    Raises:
        TypeError: if an input is not a floating-point tensor.
        ValueError: if the shapes do not fit together or the inputs are on different devices.

    Example:
        >>> import torch
        >>> from vaekit.functional import log_importance_weights
        >>> mu, log_var = torch.zeros(1, 2), torch.zeros(1, 2)  # q equals the prior
        >>> z = torch.randn(4, 1, 2)
        >>> log_importance_weights(torch.full((4, 1), -3.0), z, mu, log_var)
        tensor([[-3.],
                [-3.],
                [-3.],
                [-3.]])
    """
    named = {"log_px_given_z": log_px_given_z, "z": z, "mu": mu, "log_var": log_var}
    for name, t in named.items():
        check_tensor(name, t)
    check_same_shape("mu", mu, "log_var", log_var)
    if mu.dim() == 0:
        raise ValueError(
            "Argument mu should have a batch dimension, but given a 0-dimensional tensor"
        )
    if z.dim() != mu.dim() + 1 or z.shape[1:] != mu.shape:
        raise ValueError(
            f"Argument z should have shape (K, *mu.shape) = (K, {', '.join(map(str, mu.shape))})"
            f", but given z.shape={tuple(z.shape)} and mu.shape={tuple(mu.shape)}"
        )
    if log_px_given_z.shape != z.shape[:2]:
        raise ValueError(
            f"Argument log_px_given_z should have shape (K, B) = {tuple(z.shape[:2])}, but "
            f"given log_px_given_z.shape={tuple(log_px_given_z.shape)}"
        )
    for name, prior in (("prior_mu", prior_mu), ("prior_log_var", prior_log_var)):
        if prior is not None:
            check_tensor(name, prior)
            check_broadcastable_to(name, prior, "mu", mu)
            named[name] = prior
    for name, t in named.items():
        check_same_device("mu", mu, name, t)

    dtype = result_dtype(log_px_given_z, z, mu, log_var, prior_mu, prior_log_var)
    z, mu, log_var = z.to(dtype), mu.to(dtype), log_var.to(dtype)
    # log q(z | x) and log p(z) without their common constant -log(2 pi) / 2.
    log_q = -0.5 * ((z - mu).square() * torch.exp(-log_var) + log_var)
    prior = z if prior_mu is None else z - prior_mu.to(dtype)
    if prior_log_var is None:
        log_p = -0.5 * prior.square()
    else:
        prior_log_var = prior_log_var.to(dtype)
        log_p = -0.5 * (prior.square() * torch.exp(-prior_log_var) + prior_log_var)
    log_ratio = (log_p - log_q).reshape(*z.shape[:2], -1).sum(-1)
    return log_px_given_z.to(dtype) + log_ratio


def iwae_bound(log_weights: Tensor, dim: int = 0) -> Tensor:
    r"""The importance-weighted lower bound on :math:`\log p(x)` of each data point.

    .. math::
        \mathcal L_K = \log \frac1K \sum_{k=1}^K w_k
        = \operatorname{logsumexp}_k \log w_k - \log K

    (Burda, Grosse & Salakhutdinov, 2016). :math:`\mathcal L_1` is the ELBO; the bound does not
    decrease with :math:`K` in expectation and tends to :math:`\log p(x)`. Papers report
    :math:`-\mathcal L_K` over a test set, for :math:`K` in the thousands, as the test NLL.

    Args:
        log_weights: :math:`\log w`, e.g. from :func:`log_importance_weights`.
        dim: the dimension of the ``K`` samples.

    Returns:
        ``log_weights`` without ``dim``.

    Raises:
        TypeError: if ``log_weights`` is not a floating-point tensor or ``dim`` not an int.
        ValueError: if ``dim`` is out of range or holds no sample.

    Example:
        >>> import math, torch
        >>> from vaekit.functional import iwae_bound
        >>> log_weights = torch.tensor([[0.0], [math.log(3.0)]])  # w = 1 and 3: their mean is 2
        >>> iwae_bound(log_weights), math.log(2.0)
        (tensor([0.6931]), 0.6931471805599453)
    """
    check_tensor("log_weights", log_weights)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"Argument dim should be an int, but given {type(dim).__name__}")
    if not -log_weights.dim() <= dim < log_weights.dim():
        raise ValueError(
            f"Argument dim should be a dimension of log_weights.shape="
            f"{tuple(log_weights.shape)}, but given {dim}"
        )
    k = log_weights.shape[dim]
    if k == 0:
        raise ValueError(
            f"Argument log_weights should hold at least one sample in dimension {dim}, but "
            f"given log_weights.shape={tuple(log_weights.shape)}"
        )
    return torch.logsumexp(log_weights, dim=dim) - math.log(k)


@overload
def bits_per_dim(
    nll: Tensor,
    num_dims: int,
    *,
    num_bins: int | None = None,
    data_range: tuple[float, float] = (0.0, 1.0),
) -> Tensor: ...


@overload
def bits_per_dim(
    nll: float,
    num_dims: int,
    *,
    num_bins: int | None = None,
    data_range: tuple[float, float] = (0.0, 1.0),
) -> float: ...


def bits_per_dim(
    nll: Tensor | float,
    num_dims: int,
    *,
    num_bins: int | None = None,
    data_range: tuple[float, float] = (0.0, 1.0),
) -> Tensor | float:
    r"""Convert a negative log-likelihood in nats per data point to bits per dimension.

    .. math::
        \text{bits/dim} = \frac{\mathrm{NLL}}{D \ln 2}
        \qquad\text{or, with num\_bins:}\qquad
        \frac{\mathrm{NLL}}{D \ln 2} + \log_2\frac{\text{num\_bins}}{hi - lo}.

    Leave ``num_bins=None`` for the NLL of a discrete likelihood (a discretized one, or
    Bernoulli on binary data): it is already that of the data's discrete values. Give
    ``num_bins`` for the NLL of a continuous density evaluated on uniformly dequantised data
    that was scaled to ``data_range = (lo, hi)``: per unit of the original ``num_bins``-level
    scale, the density is the scaled one times :math:`(hi - lo)/\text{num\_bins}`, which adds
    :math:`\log_2(\text{num\_bins}/(hi - lo))` bits per dimension: 8 for 8-bit data in
    [0, 1], 7 in [-1, 1].

    Args:
        nll: nats per data point, a tensor (any shape, converted elementwise) or a number.
        num_dims: :math:`D`, the elements per data point (``C * H * W``).
        num_bins: the number of levels the data was quantised to, or ``None``.
        data_range: ``(lo, hi)``, the range the dequantised data was scaled to.

    Returns:
        Bits per dimension, of ``nll``'s type and shape.

    Raises:
        TypeError: if ``nll`` is neither a floating-point tensor nor a number, or a setting is
            of the wrong type.
        ValueError: if ``num_dims < 1``, ``num_bins < 2`` or ``data_range`` is not an
            increasing pair of finite numbers.

    Example:
        >>> import math
        >>> from vaekit.functional import bits_per_dim
        >>> bits_per_dim(784 * math.log(256), 784)  # uniform over 256 values: 8 bits
        8.0
        >>> bits_per_dim(0.0, 784, num_bins=256)  # a uniform density on [0, 1]
        8.0
        >>> bits_per_dim(0.0, 784, num_bins=256, data_range=(-1.0, 1.0))  # on [-1, 1]
        7.0
    """
    if isinstance(nll, Tensor):
        check_tensor("nll", nll)
    elif isinstance(nll, bool) or not isinstance(nll, (int, float)):
        raise TypeError(
            f"Argument nll should be a tensor or a float, but given {type(nll).__name__}"
        )
    dims = check_int("num_dims", num_dims, low=1)
    low, high = check_data_range(data_range)
    offset = 0.0
    if num_bins is not None:
        offset = math.log2(check_int("num_bins", num_bins, low=2) / (high - low))
    return nll / (dims * _LN2) + offset


def _importance_weighted_nll_update(log_weights: Tensor) -> tuple[Tensor, int]:
    """The float64 sum of :math:`-\\mathcal L_K` over the batch, and ``B``, from ``(K, B)``.

    Example:
        >>> import torch
        >>> _importance_weighted_nll_update(torch.tensor([[-1.0, -2.0]]))
        (tensor(3., dtype=torch.float64), 2)
    """
    _check_log_weights(log_weights)
    bound = iwae_bound(log_weights.detach().to(torch.float64), dim=0)
    return -bound.sum(), log_weights.shape[1]


def _check_log_weights(log_weights: Tensor) -> None:
    """Raise unless ``log_weights`` is a floating-point tensor of shape ``(K, B)``, ``K >= 1``."""
    check_tensor("log_weights", log_weights)
    if log_weights.dim() != 2 or log_weights.shape[0] == 0:
        raise ValueError(
            "Argument log_weights should have shape (K, B) with K >= 1, but given "
            f"log_weights.shape={tuple(log_weights.shape)}"
        )


def _importance_weighted_nll_compute(nll_sum: Tensor, total: Tensor) -> Tensor:
    """The mean NLL per data point.

    Example:
        >>> import torch
        >>> _importance_weighted_nll_compute(torch.tensor(3.0), torch.tensor(2))
        tensor(1.5000)
    """
    return nll_sum / total
