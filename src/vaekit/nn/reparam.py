"""The reparameterization layer."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from vaekit._checks import check_int, check_same_shape, check_tensor
from vaekit.functional.reparam import reparameterize

__all__ = ["GaussianReparam", "GaussianSample"]


class GaussianSample(NamedTuple):
    """What :class:`GaussianReparam` returns: a sample and the posterior it was drawn from.

    Example:
        >>> import torch
        >>> from vaekit import GaussianSample
        >>> s = GaussianSample(z=torch.zeros(1), mu=torch.zeros(1), log_var=torch.zeros(1))
        >>> s.z, s.mu, s.log_var
        (tensor([0.]), tensor([0.]), tensor([0.]))
    """

    z: Tensor
    """The sample (the mean in ``eval()`` unless ``sample_in_eval``)."""
    mu: Tensor
    """Posterior mean."""
    log_var: Tensor
    """Posterior log-variance, clamped to ``log_var_range``."""


class GaussianReparam(nn.Module):
    r"""Reparameterized sampling from a diagonal Gaussian posterior.

    Computes ``mu`` and ``log_var`` and returns
    ``GaussianSample(z, mu, log_var)`` with ``z`` from :func:`vaekit.functional.reparameterize`.
    Three ways in:

    - ``GaussianReparam(in_features, latent_dim)`` owns one linear layer ``head`` mapping
      features to ``2 * latent_dim`` outputs on the last dimension, split into ``mu`` and
      ``log_var``.
    - ``GaussianReparam()`` splits its input ``x`` into two equal halves along ``dim``, by
      default dimension 1, the channels: ``(B, 2D)`` from a linear layer gives two ``(B, D)``,
      and ``(B, 2C, H, W)`` from a convolution two ``(B, C, H, W)``, as the autoencoders of
      latent diffusion split them.
    - ``forward(mu, log_var)`` (or ``forward(mu=..., log_var=...)``) takes an already split
      pair.

    ``log_var`` is clamped to ``log_var_range`` before sampling and returned clamped, so that
    ``exp`` cannot overflow and the KL of the returned pair is always finite. In ``eval()`` the
    sample is the mean, unless ``sample_in_eval=True``.

    Args:
        in_features: size of the features the linear head reads; needs ``latent_dim``.
        latent_dim: size of the latent the linear head writes; needs ``in_features``.
        dim: dimension along which ``forward(x)`` splits ``x``; ``None`` (default) means 1, or
            the last dimension, which a linear head writes.
        log_var_range: ``(low, high)`` clamp for ``log_var``; ``None`` disables it.
        sample_in_eval: sample in ``eval()`` mode too.

    Raises:
        TypeError: if a size or ``dim`` is not an int, or ``log_var_range`` is not a pair of
            numbers.
        ValueError: if only one of ``in_features`` and ``latent_dim`` is given, a ``dim`` other
            than -1 is set together with a head, ``log_var_range`` is empty, or at call time the
            input has no dimension ``dim`` or an odd size along it, the pair's shapes differ, or
            the call gives both ``x`` and ``mu``, or neither, or ``mu`` without ``log_var``.

    Shape:
        - With a head: input :math:`(*, \text{in\_features})`, outputs
          :math:`(*, \text{latent\_dim})`.
        - Without: input :math:`(B, 2L, *)` split along ``dim`` into two :math:`(B, L, *)`, or
          a pair of equal shapes.

    Example:
        >>> import torch
        >>> from vaekit import GaussianReparam
        >>> _ = torch.manual_seed(0)
        >>> reparam = GaussianReparam(16, 4)
        >>> z, mu, log_var = reparam(torch.randn(8, 16))
        >>> z.shape, mu.shape, log_var.shape
        (torch.Size([8, 4]), torch.Size([8, 4]), torch.Size([8, 4]))
        >>> conv = GaussianReparam().eval()  # splits the 8 channels into 4 and 4
        >>> out = conv(torch.randn(2, 8, 4, 4))
        >>> out.z.shape, torch.equal(out.z, out.mu)
        (torch.Size([2, 4, 4, 4]), True)
        >>> conv(mu=out.mu, log_var=out.log_var).z.shape
        torch.Size([2, 4, 4, 4])
    """

    def __init__(
        self,
        in_features: int | None = None,
        latent_dim: int | None = None,
        *,
        dim: int | None = None,
        log_var_range: tuple[float, float] | None = (-30.0, 20.0),
        sample_in_eval: bool = False,
    ) -> None:
        super().__init__()
        if dim is not None:
            check_int("dim", dim, low=None)
        if (in_features is None) != (latent_dim is None):
            raise ValueError(
                "Arguments in_features and latent_dim should be given together, but given "
                f"in_features={in_features} and latent_dim={latent_dim}"
            )
        self.head: nn.Linear | None = None
        if in_features is not None and latent_dim is not None:
            if dim not in (None, -1):
                raise ValueError(
                    f"Argument dim should be -1 with a linear head, which reads the last "
                    f"dimension, but given dim={dim}"
                )
            self.head = nn.Linear(
                check_int("in_features", in_features, low=1),
                2 * check_int("latent_dim", latent_dim, low=1),
            )
        self.dim: int = (-1 if self.head is not None else 1) if dim is None else dim
        self.log_var_range = _check_range(log_var_range)
        self.sample_in_eval = bool(sample_in_eval)

    def forward(
        self,
        x: Tensor | None = None,
        log_var: Tensor | None = None,
        *,
        mu: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> GaussianSample:
        """Sample from the posterior of ``x`` (split, or read by the head), or of the pair
        ``(mu, log_var)`` given positionally or by name."""
        if log_var is None:
            if mu is not None or x is None:
                raise ValueError(
                    "Arguments x, or mu and log_var, should be given, but given "
                    f"{_given(x=x, mu=mu, log_var=log_var)}"
                )
            mu, log_var = self._split(x)
        elif (x is None) == (mu is None):
            raise ValueError(
                "Argument mu should be given once with log_var, positionally or by name, but "
                f"given {_given(x=x, mu=mu, log_var=log_var)}"
            )
        mu = check_tensor("mu", x if mu is None else mu)
        check_tensor("log_var", log_var)
        check_same_shape("mu", mu, "log_var", log_var)
        if self.log_var_range is not None:
            log_var = log_var.clamp(*self.log_var_range)
        if self.training or self.sample_in_eval:
            z = reparameterize(mu, log_var, generator=generator)
        else:
            z = mu
        return GaussianSample(z, mu, log_var)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_tensor("x", x)
        if self.head is not None:
            x = self.head(x)
        needed = self.dim + 1 if self.dim >= 0 else -self.dim
        if 0 < x.dim() < needed:
            raise ValueError(
                f"Argument x should have at least {needed} dimensions to split along "
                f"dim={self.dim}, but given x.shape={tuple(x.shape)}"
            )
        size = x.shape[self.dim] if x.dim() > 0 else 1
        if x.dim() == 0 or size % 2:
            raise ValueError(
                f"Argument x should have an even size along dim={self.dim} to split into mu "
                f"and log_var, but given x.shape={tuple(x.shape)}"
            )
        mu, log_var = x.chunk(2, dim=self.dim)
        return mu, log_var

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, log_var_range={self.log_var_range}, "
            f"sample_in_eval={self.sample_in_eval}"
        )


def _given(**tensors: Tensor | None) -> str:
    names = [name for name, t in tensors.items() if t is not None]
    return " and ".join(names) if names else "none of them"


def _check_range(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    pair = tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair
    ):
        raise TypeError(
            f"Argument log_var_range should be a (low, high) pair of numbers or None, "
            f"but given {value!r}"
        )
    low, high = float(pair[0]), float(pair[1])
    if math.isnan(low) or math.isnan(high) or low >= high:
        raise ValueError(f"Argument log_var_range should satisfy low < high, but given {value!r}")
    return low, high
