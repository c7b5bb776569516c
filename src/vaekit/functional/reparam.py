"""The reparameterization trick for diagonal Gaussians."""

from __future__ import annotations

import torch
from torch import Tensor

from vaekit._checks import check_int, check_same_shape, check_tensor

__all__ = ["reparameterize"]


def reparameterize(
    mu: Tensor,
    log_var: Tensor,
    *,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Draw :math:`z \sim \mathcal N(\mu, \sigma^2)` differentiably in ``mu`` and ``log_var``.

    .. math::
        z = \mu + \exp\big(\tfrac12 \log\sigma^2\big) \odot \varepsilon,
        \qquad \varepsilon \sim \mathcal N(0, I)

    (Kingma & Welling, 2014). The noise is drawn once and combined with a single fused
    ``addcmul``, so no tensor is allocated beyond what the hand-written
    ``mu + eps * exp(0.5 * log_var)`` needs.

    Args:
        mu: mean, any shape.
        log_var: log-variance :math:`\log\sigma^2` (not the log standard deviation), the shape
            of ``mu``.
        n_samples: if given, draw this many samples at once, stacked in a new leading
            dimension.
        generator: a :class:`torch.Generator` on ``mu``'s device, for reproducible noise.

    Returns:
        ``z`` of shape ``mu.shape``, or ``(n_samples, *mu.shape)``.

    Raises:
        TypeError: if ``mu`` or ``log_var`` is not a floating-point tensor, or ``n_samples`` is
            not an int.
        ValueError: if the shapes differ or ``n_samples < 1``.

    Example:
        >>> import torch
        >>> from vaekit.functional import reparameterize
        >>> mu, log_var = torch.zeros(2, 3), torch.full((2, 3), -1e6)
        >>> reparameterize(mu + 1.5, log_var)  # a vanishing variance returns the mean
        tensor([[1.5000, 1.5000, 1.5000],
                [1.5000, 1.5000, 1.5000]])
        >>> g = torch.Generator().manual_seed(0)
        >>> reparameterize(mu, torch.zeros(2, 3), n_samples=4, generator=g).shape
        torch.Size([4, 2, 3])
    """
    check_tensor("mu", mu)
    check_tensor("log_var", log_var)
    check_same_shape("mu", mu, "log_var", log_var)
    shape = mu.shape
    if n_samples is not None:
        shape = torch.Size((check_int("n_samples", n_samples, low=1), *mu.shape))
    eps = torch.randn(shape, generator=generator, dtype=mu.dtype, device=mu.device)
    # exp_ in place is autograd-safe: the product 0.5 * log_var is not saved for backward.
    return torch.addcmul(mu, eps, torch.mul(log_var, 0.5).exp_())
