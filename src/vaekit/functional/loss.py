"""The VAE loss: a reconstruction term and a KL term under one reduction contract."""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

from torch import Tensor

from vaekit._checks import (
    check_free_bits,
    check_int,
    check_loss_reduction,
    check_number,
    check_same_device,
    check_same_shape,
    check_tensor,
    check_weight,
)
from vaekit._reduction import Reduction, per_data_point_scale, reduce, split

# The reconstruction names and checks, importable from here by the other losses and the demo.
from vaekit.functional._recon import RECONS as RECONS
from vaekit.functional._recon import ReconFn as ReconFn
from vaekit.functional._recon import (
    ReconSettings,
    _recon_elementwise,
    check_recon_settings,
    check_variance_inputs,
)
from vaekit.functional._recon import check_recon as check_recon
from vaekit.functional._recon import check_recon_var as check_recon_var
from vaekit.functional.kl import _kl_divergence_normal

__all__ = ["VAELossOutput", "convert_beta", "vae_loss"]


class VAELossOutput(NamedTuple):
    """What :func:`vae_loss` and :class:`vaekit.VAELoss` return: the loss and its two terms.

    Example:
        >>> import torch
        >>> from vaekit import VAELossOutput
        >>> out = VAELossOutput(torch.tensor(3.0), torch.tensor(1.0), torch.tensor(2.0))
        >>> out.loss, out.recon, out.kl
        (tensor(3.), tensor(1.), tensor(2.))
    """

    loss: Tensor
    """The objective, ``recon + beta * kl`` (or ``recon + beta * |kl - capacity|``)."""
    recon: Tensor
    """The reduced reconstruction term."""
    kl: Tensor
    """The reduced KL term, after free bits: the value the loss weights by ``beta``."""


def vae_loss(
    x_hat: Tensor,
    x: Tensor,
    mu: Tensor,
    log_var: Tensor,
    *,
    recon: str | ReconFn = "mse",
    beta: float | Tensor = 1.0,
    reduction: Reduction = "batchmean",
    free_bits: float = 0.0,
    capacity: float | Tensor | None = None,
    recon_var: float | str | Tensor | None = None,
    min_log_sigma: float | None = -6.0,
    num_bins: int = 256,
    data_range: tuple[float, float] = (0.0, 1.0),
    sync_dist: bool = False,
) -> VAELossOutput:
    r"""The negative ELBO of a VAE with a diagonal Gaussian posterior, weighted by ``beta``.

    .. math::
        \mathcal L = \mathrm{recon}(\hat x, x) + \beta\,\mathrm{KL}(\mu, \log\sigma^2),
        \qquad\text{or with a capacity } C:\quad
        \mathcal L = \mathrm{recon} + \beta\,\big|\mathrm{KL} - C\big|

    (Higgins et al., 2017; the capacity objective of Burgess et al., 2018). The KL term is
    :func:`vaekit.functional.kl_divergence_normal` from :math:`\mathcal N(0, I)`, with
    ``free_bits`` passed through to it.

    Both terms are reduced the same way, so that ``beta`` means one thing:

    - ``"batchmean"`` (default): each term summed over the non-batch elements and averaged
      over the batch dimension 0, the negative ELBO per data point. ``beta = 1`` is the ELBO.
    - ``"mean"``: the reconstruction averaged over every element of ``x``, the KL over every
      element of ``mu``. ``beta`` is then Higgins et al.'s normalised beta.
    - ``"sum"``: both summed over the batch too, ``B`` times ``"batchmean"``.
    - a pair ``(recon_reduction, kl_reduction)`` of the above reduces each term its own way.
      Use it only to port code that mixes conventions, such as a per-element
      ``F.mse_loss(reduction="mean")`` plus a per-data-point KL, which is
      ``reduction=("mean", "batchmean")``: there ``beta`` weighs the KL ``x[0].numel()`` times
      more than under ``"batchmean"``. :func:`convert_beta` converts a beta between any two.

    Elementwise, the reconstruction ``recon`` is one of

    .. math::
        \texttt{"mse"}: (\hat x - x)^2, \qquad
        \texttt{"l1"}: |\hat x - x|, \qquad
        \texttt{"bce"}: -\big(x \log\hat x + (1 - x)\log(1 - \hat x)\big),

    ``"bce_with_logits"``, the same with :math:`\hat x` given as logits and computed stably by
    :func:`torch.nn.functional.binary_cross_entropy_with_logits`, and three negative
    log-likelihoods with a variance :math:`\sigma_x^2` (``recon_var``), constants included so
    that the loss is a true negative ELBO in nats:

    - ``"gaussian"``, of :math:`x` under :math:`\mathcal N(\hat x, \sigma_x^2)`:
      :math:`\tfrac12\big((x - \hat x)^2/\sigma_x^2 + \log\sigma_x^2 + \log 2\pi\big)`;
    - ``"discretized_gaussian"`` and ``"discretized_logistic"``, for data on the grid
      :math:`lo + k\Delta`, :math:`\Delta = (hi - lo)/(\text{num\_bins} - 1)` of
      ``data_range = (lo, hi)``: :math:`-\log\big(F(x + \Delta/2) - F(x - \Delta/2)\big)` for
      the CDF :math:`F` of a Gaussian, or a logistic, of mean :math:`\hat x` and variance
      :math:`\sigma_x^2` (a logistic of scale :math:`s` has variance :math:`\pi^2 s^2/3`), the
      first bin open to :math:`-\infty` and the last to :math:`+\infty`. The probabilities of
      the grid's values sum to 1, and they are computed in log space, without a clamp: the log
      is finite wherever the probability is a positive normal float.

    ``recon_var`` is a number or a tensor broadcastable to ``x`` (used as given), or the
    batch-optimal variance of a calibrated decoder (the sigma-VAE of Rybkin et al., 2021):
    ``"optimal"``, :math:`\sigma_x^{*2} = \overline{(x - \hat x)^2}` over every element of the
    batch, one shared variance, or ``"optimal_channel"``, one per channel (dimension 1)
    averaged over the batch and the other dimensions. It is differentiable, as in the
    authors' code, and with ``"gaussian"`` and ``"batchmean"`` the reconstruction term is
    :math:`\tfrac D2\big(1 + \log(2\pi\,\sigma_x^{*2})\big)` for :math:`D` elements per data
    point: a ``beta = 2\sigma^2`` tuned against a summed squared error, found afresh every step.
    The optimal variance passes through the authors' soft clip, :math:`\log\sigma_x \mapsto
    m + \operatorname{softplus}(\log\sigma_x - m)` with :math:`m` = ``min_log_sigma``, so that
    a near-perfect reconstruction cannot drive the loss to :math:`-\infty`.

    ``"bce"`` takes :math:`\hat x` as probabilities and, like torch, clamps each log at -100.
    A callable ``recon(x_hat, x)`` must return one loss per element of ``x``. Half-precision
    terms are reduced, and returned, in float32, as the KL is: a float16 sum over an image
    overflows.

    Args:
        x_hat: the reconstruction (probabilities for ``"bce"``, logits for
            ``"bce_with_logits"``, the mean for the likelihoods with a variance), shape
            ``(B, *)``.
        x: the target, the shape of ``x_hat``.
        mu: posterior mean, shape ``(B, *latent)``.
        log_var: posterior log-variance :math:`\log\sigma^2` (not the log standard deviation),
            the shape of ``mu``.
        recon: ``"mse"`` | ``"l1"`` | ``"bce"`` | ``"bce_with_logits"`` | ``"gaussian"`` |
            ``"discretized_gaussian"`` | ``"discretized_logistic"``, or a callable
            ``(x_hat, x) -> Tensor`` of ``x.shape``.
        beta: weight of the KL term, a number ``>= 0`` or a one-element tensor (whose value is
            not read, since that would force a device sync).
        reduction: ``"batchmean"`` | ``"mean"`` | ``"sum"``, or a ``(recon, kl)`` pair of them.
        free_bits: nats per latent element, see :func:`kl_divergence_normal`.
        capacity: target KL :math:`C` in the units of the KL's reduction (nats per data point
            for ``"batchmean"``), a number ``>= 0`` or a one-element tensor; ``None`` for none.
        recon_var: the variance :math:`\sigma_x^2` of ``"gaussian"`` and the discretized
            likelihoods: a number ``> 0``, a tensor broadcastable to ``x`` (the output of a
            :class:`vaekit.nn.LearnedVariance`, say), ``"optimal"`` or ``"optimal_channel"``;
            ``None`` means 1. Only with those three ``recon``.
        min_log_sigma: :math:`m` of the soft clip of the optimal variance's
            :math:`\log\sigma_x`, or ``None`` for no clip. A variance given as a number or a
            tensor is used as given.
        num_bins: the number of grid values of the discretized likelihoods, ``>= 2``.
        data_range: ``(lo, hi)``, the first and last grid values, ``lo < hi``.
        sync_dist: with ``recon_var="optimal"`` or ``"optimal_channel"`` under
            :mod:`torch.distributed`, compute the variance over the global batch, by a
            differentiable all-reduce of the squared-error sums and counts, so that every
            process optimises the same objective. Without a process group of several, the
            local batch is the batch.

    Returns:
        :class:`VAELossOutput` ``(loss, recon, kl)`` of scalars.

    Raises:
        TypeError: if a tensor argument is not a floating-point tensor, ``recon`` is neither a
            string nor a callable or returns no tensor, or a setting (``beta``, ``capacity``,
            ``free_bits``, ``recon_var``, ``min_log_sigma``, ``num_bins``, ``data_range``,
            ``sync_dist``) is of the wrong type.
        ValueError: if ``x_hat`` and ``x``, or ``mu`` and ``log_var``, differ in shape, ``x``
            and ``mu`` differ in batch size or have none, ``recon`` or ``reduction`` is unknown,
            a number is out of range, ``recon_var`` is given to a ``recon`` without a variance,
            is unknown or does not broadcast to ``x``, ``"optimal_channel"`` finds no channel
            dimension, ``sync_dist`` is set without an optimal variance, a callable returns the
            wrong shape, or a batch to be averaged is empty.

    Example:
        >>> import torch
        >>> from vaekit.functional import vae_loss
        >>> x = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 4.0]]]])
        >>> x_hat = torch.tensor([[[[1.5, 2.5]]], [[[2.0, 5.0]]]])
        >>> mu = torch.tensor([[0.0, 1.0], [0.5, -0.5]])
        >>> log_var = torch.tensor([[0.0, 0.0], [-1.0, 1.0]])
        >>> vae_loss(x_hat, x, mu, log_var)
        VAELossOutput(loss=tensor(1.8965), recon=tensor(1.2500), kl=tensor(0.6465))
        >>> vae_loss(x_hat, x, mu, log_var, reduction="mean")  # Higgins's normalised beta
        VAELossOutput(loss=tensor(0.9483), recon=tensor(0.6250), kl=tensor(0.3233))
        >>> vae_loss(x_hat, x, mu, log_var, reduction=("mean", "batchmean")).loss  # ported
        tensor(1.2715)
        >>> vae_loss(x_hat, x, mu, log_var, beta=4.0, capacity=0.5).loss
        tensor(1.8362)
        >>> sigma_vae = vae_loss(x_hat, x, mu, log_var, recon="gaussian", recon_var="optimal")
        >>> sigma_vae.recon  # (D / 2) (1 + log(2 pi MSE)), D = 2 and MSE = 0.625
        tensor(2.3679)
        >>> vae_loss(x_hat, x, mu, log_var, recon="discretized_logistic", recon_var=0.25,
        ...          num_bins=5, data_range=(0.0, 4.0)).recon  # x on the grid 0, 1, ..., 4
        tensor(1.7465)
    """
    recon = check_recon(recon)
    recon_reduction, kl_reduction = split(check_loss_reduction(reduction))
    recon_var = check_recon_var(recon_var, recon)
    return _vae_loss(
        x_hat,
        x,
        mu,
        log_var,
        recon=check_recon_settings(
            recon,
            recon_var,
            min_log_sigma=min_log_sigma,
            num_bins=num_bins,
            data_range=data_range,
            sync_dist=sync_dist,
        ),
        beta=check_weight("beta", beta),
        recon_reduction=recon_reduction,
        kl_reduction=kl_reduction,
        free_bits=check_free_bits(free_bits, kl_reduction),
        capacity=None if capacity is None else check_weight("capacity", capacity),
        recon_var=recon_var,
    )


def _vae_loss(
    x_hat: Tensor,
    x: Tensor,
    mu: Tensor,
    log_var: Tensor,
    *,
    recon: ReconSettings,
    beta: float | Tensor,
    recon_reduction: str,
    kl_reduction: str,
    free_bits: float,
    capacity: float | Tensor | None,
    recon_var: float | str | Tensor,
) -> VAELossOutput:
    """:func:`vae_loss` for checked settings: what :class:`vaekit.VAELoss` calls."""
    for name, t in (("x_hat", x_hat), ("x", x), ("mu", mu), ("log_var", log_var)):
        check_tensor(name, t)
    check_same_shape("x_hat", x_hat, "x", x)
    check_same_device("x", x, "x_hat", x_hat)
    _check_batch_sizes(x, mu)
    check_variance_inputs(recon_var, x)
    if recon_reduction != "sum" and x.numel() == 0:
        raise ValueError(
            f"Argument x should not be empty for reduction={recon_reduction!r}, "
            f"but given x.shape={tuple(x.shape)} (the result would be NaN)"
        )

    recon_term = reduce(_recon_elementwise(x_hat, x, recon, recon_var), recon_reduction)
    kl = _kl_divergence_normal(mu, log_var, None, None, kl_reduction, free_bits)
    kl_objective = kl if capacity is None else (kl - _as(capacity, kl)).abs()
    return VAELossOutput(recon_term + _as(beta, kl) * kl_objective, recon_term, kl)


def convert_beta(
    beta: float,
    *,
    source: Reduction,
    target: Reduction,
    input_size: int,
    latent_size: int,
    batch_size: int | None = None,
) -> float:
    r"""Convert a KL weight between reduction conventions so that the objective is unchanged.

    A reduction scales the reconstruction term by :math:`s_x` and the KL by :math:`s_z`
    relative to the per-data-point sums: :math:`s = 1` for ``"batchmean"``, :math:`B` for
    ``"sum"`` and :math:`1/D` for ``"mean"``, with :math:`D` the ``input_size`` (elements per
    data point of ``x``, ``C*H*W``) for the reconstruction and the ``latent_size`` (elements
    per data point of ``mu``) for the KL. The loss :math:`s_x R + \beta s_z K` is proportional
    to :math:`R + \beta\,(s_z / s_x)\,K`, so

    .. math::
        \beta_\text{target} = \beta_\text{source} \cdot
        \frac{s_z^\text{source} / s_x^\text{source}}{s_z^\text{target} / s_x^\text{target}}.

    Higgins et al.'s (2017) normalised :math:`\beta_\text{norm} = \beta \cdot
    \text{latent\_size} / \text{input\_size}` is the conversion from ``"batchmean"`` to
    ``"mean"``.

    Args:
        beta: the weight under ``source``, a number ``>= 0``.
        source: the reduction ``beta`` was tuned for, as :func:`vae_loss` takes it.
        target: the reduction to convert to.
        input_size: elements per data point of ``x``, e.g. ``3 * 64 * 64``.
        latent_size: elements per data point of ``mu``.
        batch_size: the batch size; needed only when a convention pairs ``"sum"`` with
            another reduction, since only then does the batch size not cancel.

    Returns:
        The equivalent weight under ``target``.

    Raises:
        TypeError: if ``beta`` is not a number or a size is not an int.
        ValueError: if ``beta`` is negative or not finite, a size is below 1, a reduction is
            unknown, or ``batch_size`` is needed but not given.

    Example:
        >>> from vaekit import convert_beta
        >>> ported = ("mean", "batchmean")  # F.mse_loss(reduction="mean") + per-sample KL
        >>> convert_beta(1.0, source=ported, target="batchmean", input_size=3 * 64 * 64,
        ...              latent_size=10)
        12288.0
        >>> convert_beta(1.0, source=ported, target="batchmean", input_size=1 * 4096 * 4096,
        ...              latent_size=10)  # x of shape (B, 1, 4096, 4096)
        16777216.0
        >>> convert_beta(4.0, source="batchmean", target="mean", input_size=64 * 64,
        ...              latent_size=10)  # Higgins et al.'s normalised beta
        0.009765625
    """
    beta = check_number("beta", beta, low=0.0)
    check_int("input_size", input_size, low=1)
    check_int("latent_size", latent_size, low=1)
    if batch_size is not None:
        check_int("batch_size", batch_size, low=1)
    sizes = (input_size, latent_size, batch_size)
    # Exact rational scales: 1228.8, not 1228.8000000000002.
    ratio = _kl_weight("source", source, *sizes) / _kl_weight("target", target, *sizes)
    return beta * float(ratio)


def _check_batch_sizes(x: Tensor, mu: Tensor) -> None:
    for name, t in (("x", x), ("mu", mu)):
        if t.dim() == 0:
            raise ValueError(
                f"Argument {name} should have a batch dimension, but given a 0-dimensional tensor"
            )
    if x.shape[0] != mu.shape[0]:
        raise ValueError(
            "Arguments x and mu should have the same batch size (dimension 0), "
            f"but given x.shape={tuple(x.shape)} and mu.shape={tuple(mu.shape)}"
        )


def _kl_weight(
    name: str, reduction: Reduction, input_size: int, latent_size: int, batch_size: int | None
) -> Fraction:
    """The KL's scale relative to the reconstruction's, ``s_z / s_x``, under ``reduction``."""
    recon_reduction, kl_reduction = split(check_loss_reduction(reduction, name))
    if (recon_reduction == "sum") != (kl_reduction == "sum") and batch_size is None:
        raise ValueError(
            f"Argument batch_size should be given to convert a beta for {name}="
            f"{reduction!r}, whose batch size does not cancel, but given None"
        )

    batch = batch_size or 1  # the batch size cancels unless "sum" meets another reduction
    return per_data_point_scale(kl_reduction, latent_size, batch) / per_data_point_scale(
        recon_reduction, input_size, batch
    )


def _as(value: float | Tensor, like: Tensor) -> float | Tensor:
    """A weight (or a capacity) to combine with the term ``like``: a number as it is, a tensor as
    a 0-dim copy in ``like``'s dtype. A copy, since autograd saves a weight for backward and a
    schedule may write its buffer in place between this forward and its backward."""
    return value.reshape(()).to(like.dtype, copy=True) if isinstance(value, Tensor) else value
