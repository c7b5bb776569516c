"""The VAE loss: a reconstruction term and a KL term under one reduction contract."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import NamedTuple, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor

from vaekit._checks import (
    check_broadcastable_to,
    check_free_bits,
    check_loss_reduction,
    check_number,
    check_positive_int,
    check_same_device,
    check_same_shape,
    check_tensor,
    check_weight,
    result_dtype,
)
from vaekit._reduction import Reduction, per_data_point_scale, reduce, split
from vaekit.functional.kl import _kl_divergence_normal

__all__ = ["VAELossOutput", "convert_beta", "vae_loss"]

RECONS = ("mse", "l1", "bce", "bce_with_logits", "gaussian")

ReconFn: TypeAlias = Callable[[Tensor, Tensor], Tensor]
"""A reconstruction loss ``fn(x_hat, x)`` returning one loss per element of ``x``."""

_LOG_2PI = math.log(2 * math.pi)


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
    recon_var: float | Tensor | None = None,
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
    :func:`torch.nn.functional.binary_cross_entropy_with_logits`, and ``"gaussian"``, the
    negative log-likelihood of :math:`x` under :math:`\mathcal N(\hat x, \sigma_x^2)`, constant
    included so that the loss is a true negative ELBO in nats:

    .. math::
        \tfrac12\Big(\frac{(x - \hat x)^2}{\sigma_x^2} + \log\sigma_x^2 + \log 2\pi\Big).

    ``"bce"`` takes :math:`\hat x` as probabilities and, like torch, clamps each log at -100.
    A callable ``recon(x_hat, x)`` must return one loss per element of ``x``. Half-precision
    terms are reduced, and returned, in float32, as the KL is: a float16 sum over an image
    overflows.

    Args:
        x_hat: the reconstruction (probabilities for ``"bce"``, logits for
            ``"bce_with_logits"``), shape ``(B, *)``.
        x: the target, the shape of ``x_hat``.
        mu: posterior mean, shape ``(B, *latent)``.
        log_var: posterior log-variance :math:`\log\sigma^2` (not the log standard deviation),
            the shape of ``mu``.
        recon: ``"mse"`` | ``"l1"`` | ``"bce"`` | ``"bce_with_logits"`` | ``"gaussian"``, or a
            callable ``(x_hat, x) -> Tensor`` of ``x.shape``.
        beta: weight of the KL term, a number ``>= 0`` or a one-element tensor (whose value is
            not read, since that would force a device sync).
        reduction: ``"batchmean"`` | ``"mean"`` | ``"sum"``, or a ``(recon, kl)`` pair of them.
        free_bits: nats per latent element, see :func:`kl_divergence_normal`.
        capacity: target KL :math:`C` in the units of the KL's reduction (nats per data point
            for ``"batchmean"``), a number ``>= 0`` or a one-element tensor; ``None`` for none.
        recon_var: the variance :math:`\sigma_x^2` of ``"gaussian"``, a number ``> 0`` or a
            tensor broadcastable to ``x`` (a learned variance, say); ``None`` means 1. Only
            with ``recon="gaussian"``.

    Returns:
        :class:`VAELossOutput` ``(loss, recon, kl)`` of scalars.

    Raises:
        TypeError: if a tensor argument is not a floating-point tensor, ``recon`` is neither a
            string nor a callable or returns no tensor, or ``beta``, ``capacity``,
            ``free_bits`` or ``recon_var`` is of the wrong type.
        ValueError: if ``x_hat`` and ``x``, or ``mu`` and ``log_var``, differ in shape, ``x``
            and ``mu`` differ in batch size or have none, ``recon`` or ``reduction`` is unknown,
            a number is out of range, ``recon_var`` is given to a non-Gaussian ``recon`` or
            does not broadcast to ``x``, a callable returns the wrong shape, or a batch to be
            averaged is empty.

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
    """
    recon = check_recon(recon)
    recon_reduction, kl_reduction = split(check_loss_reduction(reduction))
    return _vae_loss(
        x_hat,
        x,
        mu,
        log_var,
        recon=recon,
        beta=check_weight("beta", beta),
        recon_reduction=recon_reduction,
        kl_reduction=kl_reduction,
        free_bits=check_free_bits(free_bits, kl_reduction),
        capacity=None if capacity is None else check_weight("capacity", capacity),
        recon_var=check_recon_var(recon_var, recon),
    )


def _vae_loss(
    x_hat: Tensor,
    x: Tensor,
    mu: Tensor,
    log_var: Tensor,
    *,
    recon: str | ReconFn,
    beta: float | Tensor,
    recon_reduction: str,
    kl_reduction: str,
    free_bits: float,
    capacity: float | Tensor | None,
    recon_var: float | Tensor,
) -> VAELossOutput:
    """:func:`vae_loss` for checked settings: what :class:`vaekit.VAELoss` calls."""
    for name, t in (("x_hat", x_hat), ("x", x), ("mu", mu), ("log_var", log_var)):
        check_tensor(name, t)
    check_same_shape("x_hat", x_hat, "x", x)
    check_same_device("x", x, "x_hat", x_hat)
    _check_batch_sizes(x, mu)
    if isinstance(recon_var, Tensor):
        check_broadcastable_to("recon_var", recon_var, "x", x)
        check_same_device("x", x, "recon_var", recon_var)
    if recon_reduction != "sum" and x.numel() == 0:
        raise ValueError(
            f"Argument x should not be empty for reduction={recon_reduction!r}, "
            f"but given x.shape={tuple(x.shape)} (the result would be NaN)"
        )

    recon_term = reduce(_recon_elementwise(x_hat, x, recon, recon_var), recon_reduction)
    kl = _kl_divergence_normal(mu, log_var, None, None, kl_reduction, free_bits)
    if isinstance(beta, Tensor):
        # A copy: autograd saves beta for backward, and a schedule may write it in place
        # between this forward and its backward.
        beta = beta.reshape(()).to(kl.dtype, copy=True)
    kl_objective = kl if capacity is None else (kl - _as(capacity, kl)).abs()
    return VAELossOutput(recon_term + beta * kl_objective, recon_term, kl)


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
        ...              latent_size=10)  # the notebook's x of shape (64, 1, 4096, 4096)
        16777216.0
        >>> convert_beta(4.0, source="batchmean", target="mean", input_size=64 * 64,
        ...              latent_size=10)  # Higgins et al.'s normalised beta
        0.009765625
    """
    beta = check_number("beta", beta, low=0.0)
    check_positive_int("input_size", input_size)
    check_positive_int("latent_size", latent_size)
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    sizes = (input_size, latent_size, batch_size)
    # Exact rational scales: 1228.8, not 1228.8000000000002.
    ratio = _kl_weight("source", source, *sizes) / _kl_weight("target", target, *sizes)
    return beta * float(ratio)


def check_recon(recon: object) -> str | ReconFn:
    """Return ``recon`` if it is a known reconstruction name or a callable, else raise."""
    if isinstance(recon, str):
        if recon not in RECONS:
            choices = ", ".join(repr(r) for r in RECONS)
            raise ValueError(
                f"Argument recon should be one of {choices} or a callable, but given {recon!r}"
            )
        return recon
    if not callable(recon):
        raise TypeError(
            f"Argument recon should be a str or a callable, but given {type(recon).__name__}"
        )
    return recon


def check_recon_var(value: object, recon: str | ReconFn) -> float | Tensor:
    """Return the Gaussian variance as a float > 0 or a floating tensor, else raise.

    A tensor's values are checked on the CPU only: reading them elsewhere would force a sync.
    """
    if value is None:
        return 1.0
    if recon != "gaussian":
        raise ValueError(
            f"Argument recon_var should be None unless recon='gaussian', but given "
            f"recon_var={value!r} with recon={recon!r}"
        )
    if isinstance(value, Tensor):
        check_tensor("recon_var", value)
        if value.device.type == "cpu" and not torch.compiler.is_compiling():
            values = value.detach()
            if not bool(((values > 0) & values.isfinite()).all()):
                raise ValueError(
                    "Argument recon_var should be finite and > 0 everywhere, but given a "
                    f"tensor with values from {values.min().item()} to {values.max().item()}"
                )
        return value
    return check_number("recon_var", value, low=0.0, low_open=True)


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
    return value.reshape(()).to(like.dtype) if isinstance(value, Tensor) else value


def _recon_elementwise(
    x_hat: Tensor, x: Tensor, recon: str | ReconFn, recon_var: float | Tensor
) -> Tensor:
    dtype = result_dtype(x_hat, x)
    if not isinstance(recon, str):
        loss = recon(x_hat, x)
        if not isinstance(loss, Tensor):
            raise TypeError(
                f"Argument recon should return a torch.Tensor, but given {type(loss).__name__}"
            )
        if not loss.is_floating_point():
            raise TypeError(
                "Argument recon should return a real floating-point tensor, "
                f"but given dtype {loss.dtype}"
            )
        if loss.shape != x.shape:
            raise ValueError(
                f"Argument recon should return an elementwise loss of x.shape={tuple(x.shape)}, "
                f"but given recon(x_hat, x).shape={tuple(loss.shape)}"
            )
        return loss.to(torch.promote_types(dtype, loss.dtype))
    x_hat, x = x_hat.to(dtype), x.to(dtype)
    if recon == "mse":
        return F.mse_loss(x_hat, x, reduction="none")
    if recon == "l1":
        return F.l1_loss(x_hat, x, reduction="none")
    if recon == "bce":
        return _bce(x_hat, x)
    if recon == "bce_with_logits":
        return F.binary_cross_entropy_with_logits(x_hat, x, reduction="none")
    if isinstance(recon_var, Tensor):
        var = recon_var.to(dtype)
        return 0.5 * ((x - x_hat).square() / var + var.log() + _LOG_2PI)
    return (0.5 / recon_var) * (x - x_hat).square() + 0.5 * (math.log(recon_var) + _LOG_2PI)


def _bce(probs: Tensor, x: Tensor) -> Tensor:
    try:
        return F.binary_cross_entropy(probs, x, reduction="none")
    except RuntimeError as error:  # torch's check of the values, in its own words
        if "between 0 and 1" not in str(error):
            raise
        raise ValueError(
            "Argument x_hat should hold probabilities in [0, 1] for recon='bce', but given "
            f"values from {probs.min().item()} to {probs.max().item()}; for logits, use "
            "recon='bce_with_logits'"
        ) from error
