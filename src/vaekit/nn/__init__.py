"""Thin :class:`torch.nn.Module` wrappers: each holds its settings and calls
:mod:`vaekit.functional`."""

from vaekit.nn.kl import KLDivergenceNormal
from vaekit.nn.loss import VAELoss
from vaekit.nn.reparam import GaussianReparam, GaussianSample
from vaekit.nn.tcvae import BetaTCVAELoss
from vaekit.nn.variance import LearnedVariance

__all__ = [
    "BetaTCVAELoss",
    "GaussianReparam",
    "GaussianSample",
    "KLDivergenceNormal",
    "LearnedVariance",
    "VAELoss",
]
