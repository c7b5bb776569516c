"""Pure tensor functions: the maths and the input checks of every vaekit component."""

from vaekit.functional.decomposition import (
    BetaTCVAELossOutput,
    KLDecomposition,
    beta_tcvae_loss,
    kl_decomposition,
)
from vaekit.functional.kl import kl_divergence_normal
from vaekit.functional.likelihood import (
    bits_per_dim,
    iwae_bound,
    log_importance_weights,
    log_likelihood,
)
from vaekit.functional.loss import VAELossOutput, convert_beta, vae_loss
from vaekit.functional.reparam import reparameterize

__all__ = [
    "BetaTCVAELossOutput",
    "KLDecomposition",
    "VAELossOutput",
    "beta_tcvae_loss",
    "bits_per_dim",
    "convert_beta",
    "iwae_bound",
    "kl_decomposition",
    "kl_divergence_normal",
    "log_importance_weights",
    "log_likelihood",
    "reparameterize",
    "vae_loss",
]
