"""Float64 references shared by the KL tests."""

from __future__ import annotations

import torch


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
