r"""The linear-Gaussian encoder, whose aggregate posterior is known in closed form.

:math:`x \sim \mathcal N(0, \Sigma_x)` and :math:`q(z \mid x) = \mathcal N(Ax, s^2 I)` give
:math:`q(z) = \mathcal N(0, C)`, :math:`C = A\Sigma_x A^\top + s^2 I`, so that, with
:math:`d` latent dimensions,

- :math:`I(x; z) = \tfrac12 \log\det C - \tfrac d2 \log s^2`,
- :math:`TC = \tfrac12 (\sum_j \log C_{jj} - \log\det C)`,
- :math:`\mathrm{dim\_kl} = \tfrac12 \sum_j (C_{jj} - 1 - \log C_{jj})`.

An estimate from samples differs from these by the Monte Carlo error of the outer average over
the codes, and by the error of the inner estimate of :math:`\log q(z)` from finitely many
posteriors; :func:`tolerances` derives both from the standard errors of the samples at hand.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, Normal

A = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.8, -0.4], [0.3, 0.0, 0.6]], dtype=torch.float64)
SIGMA_X = torch.tensor([[1.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 1.0]], dtype=torch.float64)
S = 0.7
C = A @ SIGMA_X @ A.T + S**2 * torch.eye(3, dtype=torch.float64)
# How many standard errors an estimate may stray: a seeded test, and 4 is rare enough.
Z_SCORE = 4.0


def sample(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` codes with their posteriors, in float64: ``z, mu, log_var`` of shape ``(n, 3)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(SIGMA_X).T
    mu = x @ A.T
    log_var = torch.full_like(mu, math.log(S**2))
    z = mu + S * torch.randn(n, 3, generator=g, dtype=torch.float64)
    return z, mu, log_var


def closed_form() -> dict[str, float]:
    """The true ``mi``, ``tc`` and ``dim_kl`` of the linear-Gaussian encoder."""
    logdet, diag = torch.logdet(C).item(), torch.diagonal(C)
    return {
        "mi": 0.5 * logdet - 1.5 * math.log(S**2),
        "tc": 0.5 * (diag.log().sum().item() - logdet),
        "dim_kl": 0.5 * (diag - 1 - diag.log()).sum().item(),
    }


def tolerances(
    z: Tensor, own_mu: Tensor, mu: Tensor, self_weight: float, other_weight: float
) -> dict[str, float]:
    """How far an estimate of each term may be from :func:`closed_form`: for codes ``z`` drawn
    from the posteriors ``N(own_mu, s^2)``, with :math:`q(z)` estimated from the posteriors
    ``N(mu, s^2)``, those of the codes among them.

    The inner estimate is :math:`\\hat q(z_m) = \\sum_n W_{mn} q(z_m \\mid x_n)`, with weight
    ``self_weight`` on the code's own posterior and about ``other_weight`` on each other one,
    an unbiased draw for :math:`q(z_m)`. With :math:`K_{mn} = q(z_m \\mid x_n) / q(z_m)`,
    the error of :math:`\\log \\hat q(z_m)` is, to second order,
    :math:`W_{mm}(K_{mm} - 1) + \\sum_{n \\ne m} W_{mn}(K_{mn} - 1) - \\tfrac12 \\mathrm{Var}`.
    Its mean over the codes has

    - a systematic part, :math:`\\log(1 + W_{mm}(r_m - 1)) - \\tfrac12 \\sum_{n \\ne m}
      W_{mn}^2 v_m` averaged, with :math:`r_m = K_{mm}` and the relative variance
      :math:`v_m = \\mathrm{Var}_x[q(z_m \\mid x)] / q(z_m)^2` in closed form;
    - a random part :math:`w \\sum_n c_n`, :math:`c_n` the mean over the codes of
      :math:`K_{mn} - 1`: since :math:`E[K_{mn} \\mid z_m] = 1`, the :math:`c_n` are
      uncorrelated, and its standard error is :math:`w \\sqrt{N \\widehat{\\mathrm{Var}}(c)}`.

    The tolerance is the systematic part plus ``Z_SCORE`` standard errors of the outer average
    (the spread of the per-code terms) and of the inner one together. Each term's
    :math:`K` is its own: the joint one for ``mi``, the per-dimension ones for ``dim_kl``, and
    their difference for ``tc``.
    """
    n_codes, n_posteriors = z.shape[0], mu.shape[0]
    joint = MultivariateNormal(torch.zeros(3, dtype=torch.float64), C)
    dims = Normal(0.0, torch.diagonal(C).sqrt())
    log_qz, log_qz_dims = joint.log_prob(z), dims.log_prob(z)
    log_prior = Normal(0.0, 1.0).log_prob(z)

    # Systematic part: E_x[q(z|x)^2] = (4 pi s^2)^(-d/2) N(z; 0, C - s^2 I / 2).
    half = C - 0.5 * S**2 * torch.eye(3, dtype=torch.float64)
    log_sq_joint = -1.5 * math.log(4 * math.pi * S**2) + MultivariateNormal(
        torch.zeros(3, dtype=torch.float64), half
    ).log_prob(z)
    log_sq_dims = -0.5 * math.log(4 * math.pi * S**2) + Normal(
        0.0, torch.diagonal(half).sqrt()
    ).log_prob(z)
    log_own = Normal(own_mu, S).log_prob(z)
    var_weight = other_weight**2 * (n_posteriors - 1)

    def shift(log_sq: Tensor, log_q: Tensor, log_k_own: Tensor) -> Tensor:
        variance = var_weight * torch.expm1(log_sq - 2 * log_q)
        return torch.log1p(self_weight * torch.expm1(log_k_own - log_q)) - 0.5 * variance

    shift_j = shift(log_sq_joint, log_qz, log_own.sum(dim=1))
    shift_d = shift(log_sq_dims, log_qz_dims, log_own).sum(dim=1)

    # Random part: the column means c_n of each term's kernel, in chunks of codes.
    columns = torch.zeros(3, n_posteriors, dtype=torch.float64)
    for start in range(0, n_codes, 256):
        rows = slice(start, start + 256)
        log_k = Normal(mu, S).log_prob(z[rows, None])  # (rows, N, 3)
        k_joint = torch.expm1(log_k.sum(dim=2) - log_qz[rows, None])
        k_dims = torch.expm1(log_k - log_qz_dims[rows, None]).sum(dim=2)
        columns += torch.stack([-k_joint, k_joint - k_dims, k_dims]).sum(dim=1)
    columns /= n_codes

    per_code = {
        "mi": log_own.sum(dim=1) - log_qz,
        "tc": log_qz - log_qz_dims.sum(dim=1),
        "dim_kl": (log_qz_dims - log_prior).sum(dim=1),
    }
    systematic = {"mi": -shift_j, "tc": shift_j - shift_d, "dim_kl": shift_d}
    result = {}
    for row, (key, values) in enumerate(per_code.items()):
        outer = values.std().item() / math.sqrt(n_codes)
        inner = other_weight * math.sqrt(n_posteriors * columns[row].var().item())
        result[key] = abs(systematic[key].mean().item()) + Z_SCORE * math.hypot(outer, inner)
    return result
