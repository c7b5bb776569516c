"""The demo's VAE: a small MLP that reads any sample shape, ``(C, H, W)`` or ``(D,)``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaekit import GaussianReparam, GaussianSample, LearnedVariance

__all__ = ["VAE"]


class VAE(nn.Module):
    r"""A two-layer MLP encoder with a :class:`~vaekit.GaussianReparam` head, and its mirror.

    The decoder returns logits: ``sigmoid(logits)`` is the reconstruction in [0, 1].

    Args:
        sample_shape: the shape of one data point, ``(C, H, W)`` or ``(D,)``.
        latent_dim: the size of the latent.
        hidden: the width of the hidden layers.
        learned_variance: hold a shared :class:`~vaekit.nn.LearnedVariance` of the decoder as
            ``variance`` (else ``None``), so that the optimiser, data-parallel training and the
            checkpoints treat it as one of the model's parameters.

    Shape:
        - Input: :math:`(B, *\text{sample\_shape})`.
        - Output: logits of the input's shape, and the posterior's ``z``, ``mu``, ``log_var``
          of shape :math:`(B, \text{latent\_dim})`.

    Example:
        >>> import torch
        >>> from vaekit.demo.model import VAE
        >>> _ = torch.manual_seed(0)
        >>> vae = VAE((1, 8, 8), latent_dim=4)
        >>> logits, post = vae(torch.rand(5, 1, 8, 8))
        >>> logits.shape, post.mu.shape
        (torch.Size([5, 1, 8, 8]), torch.Size([5, 4]))
    """

    def __init__(
        self,
        sample_shape: tuple[int, ...],
        *,
        latent_dim: int,
        hidden: int = 256,
        learned_variance: bool = False,
    ) -> None:
        super().__init__()
        self.variance = LearnedVariance() if learned_variance else None
        self.sample_shape = tuple(sample_shape)
        features = math.prod(self.sample_shape)
        self.encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            GaussianReparam(hidden, latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, features),
            nn.Unflatten(1, self.sample_shape),
        )

    def forward(
        self, x: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, GaussianSample]:
        features = self.encoder[:-1](x)
        posterior: GaussianSample = self.encoder[-1](features, generator=generator)
        return self.decoder(posterior.z), posterior
