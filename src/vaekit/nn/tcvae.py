"""The β-TCVAE loss as a module, with weights that schedules can drive."""

from __future__ import annotations

from torch import Tensor

from vaekit._checks import check_loss_reduction
from vaekit._reduction import Reduction, split
from vaekit.functional.decomposition import (
    BetaTCVAELossOutput,
    _beta_tcvae_loss,
    check_dataset_size,
    check_estimator,
)
from vaekit.functional.loss import ReconFn, check_recon
from vaekit.nn._weights import _BUFFER, _short, _WeightedLoss, weight

__all__ = ["BetaTCVAELoss"]


class BetaTCVAELoss(_WeightedLoss):
    r"""The β-TCVAE loss, ``recon + alpha * mi + beta * tc + gamma * dim_kl``.

    Holds its settings and calls :func:`vaekit.functional.beta_tcvae_loss`, whose docstring has
    the formula, and :func:`vaekit.functional.kl_decomposition`, whose docstring has the
    estimators of the three terms.

    ``alpha``, ``beta`` and ``gamma`` can be set at any time (``loss_fn.beta = 3.0``, a number
    or a one-element tensor), by a :class:`vaekit.handlers.BetaScheduler` or
    :class:`vaekit.handlers.BetaController` for instance, exactly as
    :attr:`vaekit.VAELoss.beta`: each lives in a 0-dimensional buffer written in place, so that
    it follows ``.to(device)``, keeps at least float32 through ``.half()``, a
    ``torch.compile``\ d step reads it rather than baking it in (a new value every step does
    not recompile), and it stays out of ``state_dict``. A tensor that requires grad is refused
    (the buffer would drop its gradient): learn a weight through the function instead.

    Args:
        recon: ``"mse"`` | ``"l1"`` | ``"bce"`` | ``"bce_with_logits"`` | ``"gaussian"``, or a
            callable ``(x_hat, x) -> Tensor`` returning one loss per element of ``x``.
        dataset_size: :math:`N`, the number of data points the batches are drawn from.
        alpha: weight of the mutual information, ``>= 0``.
        beta: weight of the total correlation, ``>= 0``.
        gamma: weight of the dimension-wise KL, ``>= 0``.
        estimator: ``"mss"`` (default) | ``"mws"``.
        reduction: ``"batchmean"`` (default: every term per data point) | ``"mean"`` |
            ``"sum"``, or an explicit ``(recon, kl)`` pair.

    Raises:
        TypeError: if a setting is of the wrong type.
        ValueError: if ``recon``, ``estimator`` or ``reduction`` is unknown, or a number is out
            of range.

    Shape:
        - x_hat, x: :math:`(B, *)`.
        - z, mu, log_var: :math:`(B, *)`, the codes, the posterior means and log-variances.
        - Output: :class:`vaekit.functional.BetaTCVAELossOutput`
          ``(loss, recon, mi, tc, dim_kl)`` of scalars.

    Example:
        >>> import torch
        >>> from vaekit import BetaTCVAELoss
        >>> from vaekit.functional import beta_tcvae_loss
        >>> g = torch.Generator().manual_seed(0)
        >>> x, x_hat = torch.rand(32, 8, generator=g), torch.rand(32, 8, generator=g)
        >>> mu, log_var = torch.randn(32, 4, generator=g), torch.randn(32, 4, generator=g)
        >>> z = mu + (0.5 * log_var).exp() * torch.randn(32, 4, generator=g)
        >>> loss_fn = BetaTCVAELoss(dataset_size=1797)
        >>> loss_fn.beta = 2.0  # a schedule's step: no new tensor, nothing in state_dict
        >>> out = loss_fn(x_hat, x, z, mu, log_var)
        >>> out == beta_tcvae_loss(x_hat, x, z, mu, log_var, dataset_size=1797, beta=2.0)
        True
        >>> loss_fn
        BetaTCVAELoss(recon='mse', dataset_size=1797, estimator='mss', reduction='batchmean',
                      alpha=1.0, beta=2.0, gamma=1.0)
    """

    _functional = "vaekit.functional.beta_tcvae_loss"
    _alpha: Tensor
    _beta: Tensor
    _gamma: Tensor

    def __init__(
        self,
        recon: str | ReconFn = "mse",
        *,
        dataset_size: int,
        alpha: float | Tensor = 1.0,
        beta: float | Tensor = 6.0,
        gamma: float | Tensor = 1.0,
        estimator: str = "mss",
        reduction: Reduction = "batchmean",
    ) -> None:
        super().__init__()
        self.recon = check_recon(recon)
        self.dataset_size = check_dataset_size(dataset_size)
        self.estimator = check_estimator(estimator)
        self.reduction = check_loss_reduction(reduction)
        self._recon_reduction, self._kl_reduction = split(self.reduction)
        self._add_weight("alpha", alpha)
        self._add_weight("beta", beta)
        self._add_weight("gamma", gamma)

    alpha = weight("alpha", "Weight of the mutual information, " + _BUFFER)
    beta = weight("beta", "Weight of the total correlation, " + _BUFFER)
    gamma = weight("gamma", "Weight of the dimension-wise KL, " + _BUFFER)

    def forward(
        self, x_hat: Tensor, x: Tensor, z: Tensor, mu: Tensor, log_var: Tensor
    ) -> BetaTCVAELossOutput:
        """Return ``(loss, recon, mi, tc, dim_kl)`` of the reconstruction ``x_hat`` of ``x``,
        the codes ``z`` and the posteriors ``(mu, log_var)``, with the current weights."""
        return _beta_tcvae_loss(
            x_hat,
            x,
            z,
            mu,
            log_var,
            dataset_size=self.dataset_size,
            weights=(self._alpha, self._beta, self._gamma),
            estimator=self.estimator,
            recon=self.recon,
            recon_reduction=self._recon_reduction,
            kl_reduction=self._kl_reduction,
        )

    def extra_repr(self) -> str:
        recon = self.recon
        if not isinstance(recon, str):
            recon = getattr(recon, "__name__", type(recon).__name__)
        weights = ", ".join(
            f"{name}={_short(self._buffers[f'_{name}'])}" for name in self._weight_names
        )
        return (
            f"recon={recon!r}, dataset_size={self.dataset_size}, estimator={self.estimator!r}, "
            f"reduction={self.reduction!r}, {weights}"
        )
