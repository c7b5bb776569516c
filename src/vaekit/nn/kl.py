"""The KL divergence as a loss module."""

from __future__ import annotations

from torch import Tensor, nn

from vaekit._checks import check_free_bits, check_reduction
from vaekit.functional.kl import _kl_divergence_normal

__all__ = ["KLDivergenceNormal"]


class KLDivergenceNormal(nn.Module):
    r"""KL divergence of a diagonal Gaussian posterior from a diagonal Gaussian prior.

    Holds ``reduction`` and ``free_bits`` and calls
    :func:`vaekit.functional.kl_divergence_normal`, whose docstring has the formula and the
    meaning of each reduction.

    Args:
        reduction: ``"none"`` | ``"sum"`` | ``"mean"`` | ``"batchmean"`` (default: KL per data
            point, summed over latent elements).
        free_bits: nats per latent element below which the batch-averaged KL is not pushed.

    Raises:
        TypeError: if ``free_bits`` is not a number.
        ValueError: if ``reduction`` is unknown, or ``free_bits`` is negative or combined with
            ``"none"``.

    Shape:
        - mu, log_var: :math:`(B, *)`, the posterior mean and log-variance.
        - prior_mu, prior_log_var: broadcastable to :math:`(B, *)`, optional.
        - Output: scalar, or :math:`(B, *)` with ``reduction="none"``.

    Example:
        >>> import torch
        >>> from vaekit import KLDivergenceNormal
        >>> kl = KLDivergenceNormal()
        >>> mu = torch.tensor([[0.0, 1.0], [0.5, -0.5]])
        >>> log_var = torch.tensor([[0.0, 0.0], [-1.0, 1.0]])
        >>> kl(mu, log_var)
        tensor(0.6465)
        >>> kl(mu, log_var, torch.zeros(2), torch.ones(2).log())  # an explicit N(0, I) prior
        tensor(0.6465)
    """

    def __init__(self, *, reduction: str = "batchmean", free_bits: float = 0.0) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.free_bits = check_free_bits(free_bits, self.reduction)

    def forward(
        self,
        mu: Tensor,
        log_var: Tensor,
        prior_mu: Tensor | None = None,
        prior_log_var: Tensor | None = None,
    ) -> Tensor:
        """Return the reduced KL of the posterior ``(mu, log_var)`` from the prior
        ``(prior_mu, prior_log_var)``, where ``None`` means a mean or log-variance of 0."""
        return _kl_divergence_normal(
            mu, log_var, prior_mu, prior_log_var, self.reduction, self.free_bits
        )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, free_bits={self.free_bits}"
