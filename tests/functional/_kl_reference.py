"""Float64 references shared by the KL tests: torch.distributions, reduced by hand."""

from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence

REDUCTIONS = ["none", "sum", "mean", "batchmean"]
PRIORS = ["none", "mu", "log_var", "both", "per_row"]
# Both sides of the sizes at which the fused path's work changes: a few elements, and a
# float32 latent of 300,000 elements (the fused sum goes through a float32 buffer of 65,536).
SMALL, LARGE = (4, 3), (3, 100_000)


def distributions_kl(
    mu, log_var, prior_mu=None, prior_log_var=None, reduction="batchmean", free_bits=0.0
):
    """torch.distributions' Normal-Normal KL, reduced by hand; in the inputs' dtype, so that
    a transform applied to it is the reference for the same transform of vaekit's KL."""
    zero = torch.zeros((), dtype=mu.dtype, device=mu.device)
    prior_mu = zero if prior_mu is None else prior_mu
    prior_log_var = zero if prior_log_var is None else prior_log_var
    q = Normal(mu, (0.5 * log_var).exp(), validate_args=False)
    p = Normal(
        prior_mu.expand_as(mu), (0.5 * prior_log_var).exp().expand_as(mu), validate_args=False
    )
    kl = kl_divergence(q, p)
    if free_bits > 0:
        per_element = kl.mean(dim=0).clamp_min(free_bits)
        b, d = mu.shape[0], per_element.numel()
        return {
            "batchmean": per_element.sum(),
            "sum": b * per_element.sum(),
            "mean": per_element.sum() / d,
        }[reduction]
    if reduction == "none":
        return kl
    if reduction == "sum":
        return kl.sum()
    if reduction == "mean":
        return kl.mean()
    return kl.sum() / mu.shape[0]


def expm1_minus_x(x):
    """e^x - 1 - x in float64, to 2^-52 / |x| relative above 1e-2 and 1e-13 below (expm1(x) - x
    alone loses 2^-52 / |x|)."""
    x = x.double()
    series = x**2 / 2 * (1 + x / 3 * (1 + x / 4 * (1 + x / 5 * (1 + x / 6))))
    return torch.where(x.abs() < 1e-2, series, torch.expm1(x) - x)


def make(shape, prior, dtype=torch.float64, seed=0):
    """mu, log_var and the prior named by ``prior``: "none", "mu", "log_var", "both", or
    "per_row" (both, one per row)."""
    g = torch.Generator().manual_seed(seed)
    mu, log_var = (torch.randn(shape, generator=g, dtype=dtype) for _ in range(2))
    prior_shape = shape if prior == "per_row" else shape[1:]
    pm, plv = (torch.randn(prior_shape, generator=g, dtype=dtype) for _ in range(2))
    prior_mu = pm if prior in ("mu", "both", "per_row") else None
    prior_log_var = plv if prior in ("log_var", "both", "per_row") else None
    return mu, log_var, prior_mu, prior_log_var
