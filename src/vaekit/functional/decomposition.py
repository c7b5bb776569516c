r"""The KL term split by the aggregate posterior, and the β-TCVAE loss built on the split.

Averaged over the data, the KL term of the ELBO is the sum of three terms of the aggregate
posterior :math:`q(z) = \frac1N \sum_n q(z \mid x_n)` (Hoffman & Johnson, 2016; Chen et al.,
2018, Eq. 2): the index-code mutual information, the total correlation and the dimension-wise
KL. Each needs :math:`\log q(z)`, estimated here from the posteriors of a batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from vaekit._checks import (
    check_int,
    check_loss_reduction,
    check_same_device,
    check_same_shape,
    check_tensor,
    check_weight,
    result_dtype,
)
from vaekit._reduction import Reduction, reduce, split, sum_scale
from vaekit.functional._recon import (
    ReconFn,
    ReconSettings,
    _recon_elementwise,
    check_recon,
    check_recon_var,
)
from vaekit.functional.loss import _as, _check_batch_sizes

__all__ = ["BetaTCVAELossOutput", "KLDecomposition", "beta_tcvae_loss", "kl_decomposition"]

ESTIMATORS = ("mss", "mws")

_LOG_2PI = math.log(2 * math.pi)
# Pairwise log-densities are computed for this many (code, posterior, dimension) triples at a
# time, at most: 32 MiB per temporary in float64, whatever the batch or the data set.
_CHUNK_ELEMENTS = 2**22


class KLDecomposition(NamedTuple):
    """What :func:`kl_decomposition` returns: the three terms of the KL, in nats per data point.

    Example:
        >>> import torch
        >>> from vaekit.functional import KLDecomposition
        >>> terms = KLDecomposition(torch.tensor(1.5), torch.tensor(0.25), torch.tensor(2.0))
        >>> terms.mi, sum(terms)
        (tensor(1.5000), tensor(3.7500))
    """

    mi: Tensor
    """The index-code mutual information :math:`I(x; z)`."""
    tc: Tensor
    r"""The total correlation :math:`\mathrm{KL}(q(z) \,\|\, \prod_d q_d(z_d))`."""
    dim_kl: Tensor
    r"""The dimension-wise KL :math:`\sum_d \mathrm{KL}(q_d(z_d) \,\|\, p(z_d))`."""


class BetaTCVAELossOutput(NamedTuple):
    """What :func:`beta_tcvae_loss` and :class:`vaekit.BetaTCVAELoss` return.

    Example:
        >>> import torch
        >>> from vaekit.functional import BetaTCVAELossOutput
        >>> out = BetaTCVAELossOutput(*torch.tensor([9.0, 5.0, 1.0, 0.5, 1.0]))
        >>> out.loss, out.tc
        (tensor(9.), tensor(0.5000))
    """

    loss: Tensor
    r"""The objective, :math:`\mathrm{recon} + \alpha\,\mathrm{mi} + \beta\,\mathrm{tc}
    + \gamma\,\mathrm{dim\_kl}`."""
    recon: Tensor
    """The reduced reconstruction term."""
    mi: Tensor
    """The reduced index-code mutual information."""
    tc: Tensor
    """The reduced total correlation."""
    dim_kl: Tensor
    """The reduced dimension-wise KL."""


def kl_decomposition(
    z: Tensor, mu: Tensor, log_var: Tensor, *, dataset_size: int, estimator: str = "mss"
) -> KLDecomposition:
    r"""The KL term split into mutual information, total correlation and dimension-wise KL.

    For codes :math:`z_i \sim q(z \mid x_i)` of a batch of :math:`B` data points drawn from a
    data set of :math:`N`, with :math:`p = \mathcal N(0, I)` and every latent element one
    dimension :math:`d`,

    .. math::
        \mathrm{mi} &= \tfrac1B \textstyle\sum_i \big[\log q(z_i \mid x_i) - \log q(z_i)\big],\\
        \mathrm{tc} &= \tfrac1B \textstyle\sum_i \big[\log q(z_i) - \sum_d \log q_d(z_{id})\big],\\
        \mathrm{dim\_kl} &= \tfrac1B \textstyle\sum_i \sum_d
            \big[\log q_d(z_{id}) - \log p(z_{id})\big],

    whose sum is exactly the Monte Carlo KL
    :math:`\frac1B \sum_i [\log q(z_i \mid x_i) - \log p(z_i)]`. The aggregate posterior
    :math:`q(z) = \frac1N \sum_n q(z \mid x_n)` is estimated from :math:`\log q(z_i \mid x_j)`
    for every pair :math:`i, j` of the batch (Chen et al., 2018, "Isolating sources of
    disentanglement in VAEs", Appendix C), and each marginal :math:`q_d` the same way from the
    dimension's own densities:

    - ``"mss"`` (minibatch stratified sampling, the default):
      :math:`\log q(z_i) \approx \log \sum_j W_{ij}\, q(z_i \mid x_j)`, with
      :math:`M = B - 1` and :math:`W_{ii} = 1/N` for the point's own posterior,
      :math:`W_{ij} = (N - M)/(NM)` for one other point of the batch
      (:math:`j = i + 1`, and :math:`j = 0` for the last row), and :math:`1/M` for the rest.
      Every row of :math:`W` sums to 1, so identical posteriors give ``mi = tc = 0``. Needs
      :math:`B \ge 2`.
    - ``"mws"`` (minibatch weighted sampling):
      :math:`\log q(z_i) \approx \log \sum_j q(z_i \mid x_j) - \log(NB)`. Its weights sum to
      :math:`1/N` per row, which shifts each log-density, joint and per dimension, about
      :math:`\log N` down: ``mi`` reads about :math:`\log N` high, ``tc``
      :math:`(D - 1)\log N` high and ``dim_kl`` :math:`D \log N` low (their sum is unchanged).
      The "Monitoring posterior collapse" guide compares the two.

    The pairs are evaluated in chunks of rows, so that the forward pass holds
    :math:`O(\min(B, c) \cdot B \cdot D)` numbers at a time (:math:`c \cdot B \cdot D \le
    2^{22}`); backward saves what the chunks computed, :math:`O(B^2 D)`. The maths is plain
    differentiable torch (``logsumexp`` in log space), so it runs under ``torch.func``
    transforms and ``torch.compile``, in float32, or in float64 if an input is float64.

    Args:
        z: the codes drawn from the posteriors, shape ``(B, *latent)``.
        mu: posterior means, the shape of ``z``.
        log_var: posterior log-variances :math:`\log\sigma^2`, the shape of ``z``.
        dataset_size: :math:`N`, the number of data points the batch is drawn from,
            at least ``B``.
        estimator: ``"mss"`` | ``"mws"``.

    Returns:
        :class:`KLDecomposition` ``(mi, tc, dim_kl)`` of scalars, batch averages in nats.

    Raises:
        TypeError: if a tensor argument is not a floating-point tensor or ``dataset_size`` is
            not an int.
        ValueError: if the shapes or devices differ, the batch is empty (or has one point for
            ``"mss"``), ``dataset_size`` is below the batch size, or ``estimator`` is unknown.

    Example:
        >>> import math, torch
        >>> from vaekit.functional import kl_decomposition
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(1000, 2, generator=g)  # 1,000 points of a large data set
        >>> mu, log_var = 0.8 * x, torch.full((1000, 2), math.log(0.36))
        >>> z = mu + 0.6 * torch.randn(1000, 2, generator=g)
        >>> kl_decomposition(z, mu, log_var, dataset_size=60_000)
        KLDecomposition(mi=tensor(1.1407), tc=tensor(-0.0002), dim_kl=tensor(-0.0009))

        Here :math:`q(z) = \mathcal N(0, I)` exactly, so the true tc and dim_kl are 0, and the
        same batch average with the true :math:`\log q(z)` is what ``mi`` estimates:

        >>> from torch.distributions import Normal
        >>> (Normal(mu, 0.6).log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(dim=1).mean()
        tensor(1.1396)
        >>> same = torch.zeros(3, 2)  # one posterior for every input: nothing is encoded
        >>> [round(t.item(), 6) for t in kl_decomposition(z[:3], same, same, dataset_size=9)]
        [0.0, 0.0, 0.0]
    """
    terms = _kl_decomposition_terms(z, mu, log_var, check_dataset_size(dataset_size), estimator)
    return KLDecomposition(*(t.mean() for t in terms))


def beta_tcvae_loss(
    x_hat: Tensor,
    x: Tensor,
    z: Tensor,
    mu: Tensor,
    log_var: Tensor,
    *,
    dataset_size: int,
    alpha: float | Tensor = 1.0,
    beta: float | Tensor = 6.0,
    gamma: float | Tensor = 1.0,
    estimator: str = "mss",
    recon: str | ReconFn = "mse",
    reduction: Reduction = "batchmean",
) -> BetaTCVAELossOutput:
    r"""The β-TCVAE loss: the reconstruction plus each term of the KL weighted on its own.

    .. math::
        \mathcal L = \mathrm{recon}(\hat x, x) + \alpha\,\mathrm{mi} + \beta\,\mathrm{tc}
        + \gamma\,\mathrm{dim\_kl}

    (Chen et al., 2018), with the terms of :func:`kl_decomposition`. With
    :math:`\alpha = \beta = \gamma = 1` it is the negative ELBO with the Monte Carlo KL;
    :math:`\beta > 1` penalises the total correlation alone, the dependence between the latent
    dimensions, and leaves the information the code carries about the input to the
    reconstruction.

    The reduction contract is that of :func:`vaekit.functional.vae_loss`: ``"batchmean"``
    gives every term per data point, ``"sum"`` multiplies them by :math:`B`, and ``"mean"``
    divides each by its own element count (the reconstruction by ``x.numel()``, the KL terms
    by ``mu.numel()``); a ``(recon, kl)`` pair reduces the reconstruction its own way. ``recon``
    is one of :func:`~vaekit.functional.vae_loss`'s reconstruction losses (``"gaussian"`` with
    unit variance) or a callable of ``(x_hat, x)`` returning one loss per element of ``x``.

    Args:
        x_hat: the reconstruction, shape ``(B, *)``.
        x: the target, the shape of ``x_hat``.
        z: the codes the decoder was given, shape ``(B, *latent)``.
        mu: posterior means, the shape of ``z``.
        log_var: posterior log-variances :math:`\log\sigma^2`, the shape of ``z``.
        dataset_size: :math:`N`, the number of data points the batch is drawn from.
        alpha: weight of the mutual information, a number ``>= 0`` or a one-element tensor.
        beta: weight of the total correlation, likewise.
        gamma: weight of the dimension-wise KL, likewise.
        estimator: ``"mss"`` | ``"mws"``, see :func:`kl_decomposition`.
        recon: ``"mse"`` | ``"l1"`` | ``"bce"`` | ``"bce_with_logits"`` | ``"gaussian"``, or a
            callable ``(x_hat, x) -> Tensor`` of ``x.shape``.
        reduction: ``"batchmean"`` | ``"mean"`` | ``"sum"``, or a ``(recon, kl)`` pair of them.

    Returns:
        :class:`BetaTCVAELossOutput` ``(loss, recon, mi, tc, dim_kl)`` of scalars.

    Raises:
        TypeError: if a tensor argument is not a floating-point tensor, ``recon`` is neither a
            string nor a callable, or a weight or ``dataset_size`` is of the wrong type.
        ValueError: if shapes, batch sizes or devices differ, ``recon``, ``reduction`` or
            ``estimator`` is unknown, a weight is negative, or ``dataset_size`` is below the
            batch size.

    Example:
        >>> import torch
        >>> from vaekit.functional import beta_tcvae_loss
        >>> g = torch.Generator().manual_seed(0)
        >>> x, x_hat = torch.rand(64, 1, 8, 8, generator=g), torch.rand(64, 1, 8, 8, generator=g)
        >>> mu, log_var = torch.randn(64, 4, generator=g), torch.randn(64, 4, generator=g) - 2
        >>> z = mu + (0.5 * log_var).exp() * torch.randn(64, 4, generator=g)
        >>> out = beta_tcvae_loss(x_hat, x, z, mu, log_var, dataset_size=1797)
        >>> out
        BetaTCVAELossOutput(loss=tensor(...), recon=tensor(...), mi=tensor(...), tc=tensor(...),
                            dim_kl=tensor(...))
        >>> torch.allclose(out.loss, out.recon + out.mi + 6 * out.tc + out.dim_kl)
        True
    """
    recon = check_recon(recon)
    recon_reduction, kl_reduction = split(check_loss_reduction(reduction))
    return _beta_tcvae_loss(
        x_hat,
        x,
        z,
        mu,
        log_var,
        dataset_size=check_dataset_size(dataset_size),
        weights=tuple(
            check_weight(n, w) for n, w in (("alpha", alpha), ("beta", beta), ("gamma", gamma))
        ),
        estimator=estimator,
        recon=recon,
        recon_reduction=recon_reduction,
        kl_reduction=kl_reduction,
    )


def _beta_tcvae_loss(
    x_hat: Tensor,
    x: Tensor,
    z: Tensor,
    mu: Tensor,
    log_var: Tensor,
    *,
    dataset_size: int,
    weights: tuple[float | Tensor, ...],
    estimator: str,
    recon: str | ReconFn,
    recon_reduction: str,
    kl_reduction: str,
) -> BetaTCVAELossOutput:
    """:func:`beta_tcvae_loss` for checked settings: what :class:`vaekit.BetaTCVAELoss` calls."""
    for name, t in (("x_hat", x_hat), ("x", x)):
        check_tensor(name, t)
    check_same_shape("x_hat", x_hat, "x", x)
    check_same_device("x", x, "x_hat", x_hat)
    check_tensor("mu", mu)
    _check_batch_sizes(x, mu)
    terms = _kl_decomposition_terms(z, mu, log_var, dataset_size, estimator)
    recon_term = reduce(
        _recon_elementwise(x_hat, x, ReconSettings(recon), check_recon_var(None, recon)),
        recon_reduction,
    )
    scale = sum_scale(kl_reduction, mu)
    mi, tc, dim_kl = (t.sum() * scale for t in terms)
    loss = recon_term
    for weight, term in zip(weights, (mi, tc, dim_kl), strict=True):
        loss = loss + _as(weight, term) * term
    return BetaTCVAELossOutput(loss, recon_term, mi, tc, dim_kl)


def check_dataset_size(value: object) -> int:
    """Return ``value`` if it is an int ``>= 1``, else raise."""
    return check_int("dataset_size", value, low=1)


def check_estimator(value: object) -> str:
    """Return ``value`` if it names an estimator of :func:`kl_decomposition`, else raise."""
    if not isinstance(value, str) or value not in ESTIMATORS:
        choices = ", ".join(repr(e) for e in ESTIMATORS)
        raise ValueError(f"Argument estimator should be one of {choices}, but given {value!r}")
    return value


def _kl_decomposition_terms(
    z: Tensor, mu: Tensor, log_var: Tensor, dataset_size: int, estimator: str
) -> tuple[Tensor, Tensor, Tensor]:
    """The per-data-point ``mi``, ``tc`` and ``dim_kl``, each of shape ``(B,)``."""
    check_estimator(estimator)
    for name, t in (("z", z), ("mu", mu), ("log_var", log_var)):
        check_tensor(name, t)
    check_same_shape("z", z, "mu", mu)
    check_same_shape("mu", mu, "log_var", log_var)
    check_same_device("mu", mu, "z", z)
    check_same_device("mu", mu, "log_var", log_var)
    if z.dim() == 0:
        raise ValueError(
            "Argument z should have a batch dimension, shape (B, *latent), "
            "but given a 0-dimensional tensor"
        )
    batch = z.shape[0]
    least = 2 if estimator == "mss" else 1
    if batch < least:
        why = " for estimator='mss', which weighs the other points by 1 / (B - 1)"
        raise ValueError(
            f"Argument z should hold at least {least} data point{'s' * (least > 1)}"
            f"{why if least > 1 else ''}, but given z.shape={tuple(z.shape)}"
        )
    if dataset_size < batch:
        raise ValueError(
            f"Argument dataset_size should be at least the batch size {batch}, "
            f"but given {dataset_size}"
        )

    dtype = result_dtype(z, mu, log_var)
    z, mu, log_var = (t.to(dtype).reshape(batch, -1) for t in (z, mu, log_var))
    if estimator == "mss":
        log_weight: float | Tensor = _log_stratified_weights(batch, dataset_size, z)
    else:
        log_weight = -math.log(dataset_size * batch)
    log_qz, log_qz_dims = _log_aggregate(z, mu, log_var, log_weight)
    log_qz_cond = _log_normal(z, *_normal_terms(mu, log_var)).sum(dim=1)
    log_pz_dims = -0.5 * (_LOG_2PI + z.square())
    log_qz_prod = log_qz_dims.sum(dim=1)
    return (
        log_qz_cond - log_qz,
        log_qz - log_qz_prod,
        (log_qz_dims - log_pz_dims).sum(dim=1),
    )


def _log_stratified_weights(batch: int, dataset_size: int, like: Tensor) -> Tensor:
    """:math:`\\log W` of the stratified estimator, shape ``(B, B)``, every row summing to 1."""
    m, n = batch - 1, dataset_size
    own = torch.eye(batch, dtype=torch.bool, device=like.device)
    stratum = own.roll(1, dims=1)  # (i, i + 1), and (B - 1, 0)
    weights = torch.full((batch, batch), -math.log(m), dtype=like.dtype, device=like.device)
    weights = torch.where(stratum, math.log(n - m) - math.log(n) - math.log(m), weights)
    return torch.where(own, -math.log(n), weights)


def _normal_terms(mu: Tensor, log_var: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``mu``, the constant ``-(log 2pi + log_var) / 2`` and the half precision ``e^-log_var / 2``:
    what every log-density of these posteriors needs, computed once."""
    return mu, -0.5 * (_LOG_2PI + log_var), 0.5 * torch.exp(-log_var)


def _log_normal(z: Tensor, mu: Tensor, constant: Tensor, half_precision: Tensor) -> Tensor:
    """Elementwise :math:`\\log \\mathcal N(z; \\mu, \\sigma^2)`, broadcasting."""
    return constant - (z - mu).square() * half_precision


def _log_aggregate(
    z: Tensor, mu: Tensor, log_var: Tensor, log_weight: float | Tensor
) -> tuple[Tensor, Tensor]:
    """:math:`\\log \\sum_n w_{mn} q(z_m \\mid x_n)` and the same per dimension, for codes ``z``
    of shape ``(M, D)`` and posteriors ``(N, D)``.

    ``log_weight`` is one log-weight for every pair, or an ``(M, N)`` tensor of them. Rows of
    ``z`` are taken in chunks of at most ``_CHUNK_ELEMENTS`` pairwise elements. Returns shapes
    ``(M,)`` and ``(M, D)``.
    """
    count, size = mu.shape
    rows = max(1, _CHUNK_ELEMENTS // max(1, count * size))
    terms = _normal_terms(mu, log_var)
    joint, dims = [], []
    for start in range(0, z.shape[0], rows):
        log_q = _log_normal(z[start : start + rows, None], *terms)  # (rows, N, D)
        if isinstance(log_weight, Tensor):
            w = log_weight[start : start + rows]
            joint.append(torch.logsumexp(log_q.sum(dim=2) + w, dim=1))
            dims.append(torch.logsumexp(log_q + w[..., None], dim=1))
        else:
            joint.append(torch.logsumexp(log_q.sum(dim=2), dim=1) + log_weight)
            dims.append(torch.logsumexp(log_q, dim=1) + log_weight)
    return torch.cat(joint), torch.cat(dims)
