r"""Exact log-probabilities of Gaussian and logistic distributions discretised to a grid.

The values :math:`x` lie on the grid :math:`lo + k\Delta`, :math:`\Delta = (hi - lo)/(n - 1)`,
:math:`k = 0, \dots, n - 1`. Each grid value takes the probability of its bin
:math:`[x - \Delta/2, x + \Delta/2]` under the continuous distribution, the first bin open to
:math:`-\infty` and the last to :math:`+\infty`, so that the :math:`n` probabilities sum to 1.
Every value below :math:`lo + \Delta/2` takes the first bin's probability and every value above
:math:`hi - \Delta/2` the last's, values outside ``[lo, hi]`` included; a value in between is
taken to be on the grid, and its bin is centred on it.

In standard units, :math:`c = (x - \text{mean})/\text{scale}` is the bin's centre and
:math:`h = \Delta/(2\,\text{scale})` its half-width. Both distributions are computed in log
space, with no clamp:

- logistic: :math:`\sigma(c + h) - \sigma(c - h) = \sigma(c + h)\,\sigma(h - c)\,(1 - e^{-2h})`,
  a product of three factors computed without cancellation;
- Gaussian, wide bins: :math:`\log(\Phi(u) - \Phi(l))` with :math:`u = c + h`, :math:`l = c - h`
  reflected to the lower tail (where :math:`\log\Phi`, from ``erfcx``, is accurate) and
  :math:`\log\Phi(u) + \log(1 - e^{\log\Phi(l) - \log\Phi(u)})`;
- Gaussian, narrow bins (:math:`h\max(1, |c|) \le 0.1`, where that difference cancels): the
  Taylor series of the bin's integral about its centre,

  .. math::
      \Phi(c + h) - \Phi(c - h) = 2h\,\varphi(c) \sum_{j \ge 0}
      \frac{h^{2j}\,\mathrm{He}_{2j}(c)}{(2j + 1)!},

  with the probabilists' Hermite polynomials :math:`\mathrm{He}`, summed to :math:`j = 5`
  (the next term is below :math:`10^{-16}` of the sum there).

Both branches of a ``torch.where`` are evaluated, so each branch is fed inputs it is safe on
where it is not selected: a NaN gradient of an unselected branch would otherwise leak through.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__: list[str] = []

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_2 = math.log(2.0)
_SQRT_HALF = math.sqrt(0.5)
_NARROW = 0.1  # h * max(1, |c|) at or below which the series replaces the CDF difference


def _discretized_log_prob(
    x: Tensor,
    mean: Tensor,
    log_scale: Tensor | float,
    *,
    kind: str,
    num_bins: int,
    data_range: tuple[float, float],
) -> Tensor:
    """Log-probability of ``x`` under the discretised ``kind`` (``"gaussian"``/``"logistic"``).

    ``log_scale`` is the log standard deviation of the Gaussian or the log scale :math:`s` of
    the logistic. ``x``, ``mean`` and ``log_scale`` broadcast together.
    """
    low, high = data_range
    half_bin = 0.5 * (high - low) / (num_bins - 1)
    inv_scale = torch.exp(-log_scale) if isinstance(log_scale, Tensor) else math.exp(-log_scale)
    first, last = x < low + half_bin, x > high - half_bin
    x = torch.where(first, low, torch.where(last, high, x))  # an edge bin's value, whatever x
    c = (x - mean) * inv_scale
    h = half_bin * inv_scale
    if not isinstance(h, Tensor):
        h = torch.full_like(c, h)
    if kind == "logistic":
        interior = F.logsigmoid(c + h) + F.logsigmoid(h - c) + torch.log(-torch.expm1(-2 * h))
        lower, upper = F.logsigmoid(c + h), F.logsigmoid(h - c)
    else:
        interior = _gaussian_interior(c, h)
        lower, upper = _log_ndtr(c + h), _log_ndtr(h - c)
    return torch.where(first, lower, torch.where(last, upper, interior))


def _gaussian_interior(c: Tensor, h: Tensor) -> Tensor:
    r""":math:`\log(\Phi(c + h) - \Phi(c - h))`, accurate for every :math:`c` and :math:`h > 0`."""
    narrow = h * c.abs().clamp_min(1.0) <= _NARROW
    series = _gaussian_series(torch.where(narrow, c, 0.0), torch.where(narrow, h, _NARROW))
    wide = _gaussian_cdf_difference(torch.where(narrow, 0.0, c), torch.where(narrow, 1.0, h))
    return torch.where(narrow, series, wide)


def _gaussian_series(c: Tensor, h: Tensor) -> Tensor:
    r""":math:`\log(\Phi(c + h) - \Phi(c - h))` by the series in :math:`h^2`, for narrow bins."""
    q, y = c.square(), h.square()
    # He_{2j}(c) / (2j + 1)! as polynomials in q = c^2, j = 1..5.
    t1 = (q - 1) / 6
    t2 = ((q - 6) * q + 3) / 120
    t3 = (((q - 15) * q + 45) * q - 15) / 5040
    t4 = ((((q - 28) * q + 210) * q - 420) * q + 105) / 362880
    t5 = (((((q - 45) * q + 630) * q - 3150) * q + 4725) * q - 945) / 39916800
    correction = y * (t1 + y * (t2 + y * (t3 + y * (t4 + y * t5))))
    return torch.log(2 * h) - 0.5 * q - _HALF_LOG_2PI + torch.log1p(correction)


def _gaussian_cdf_difference(c: Tensor, h: Tensor) -> Tensor:
    r""":math:`\log(\Phi(c + h) - \Phi(c - h))` from log-CDFs on the lower side, for wide bins."""
    c = -c.abs()  # the bin's probability is symmetric in c: reflect onto the lower tail
    log_upper = _log_ndtr(c + h)
    return log_upper + _log1mexp(_log_ndtr(c - h) - log_upper)


def _log_ndtr(x: Tensor) -> Tensor:
    r""":math:`\log\Phi(x)`, accurate on both tails: :math:`\log(\tfrac12
    \operatorname{erfcx}(-x/\sqrt2)) - x^2/2` below 0, :math:`\log(1 - \tfrac12
    \operatorname{erfc}(x/\sqrt2))` above. :func:`torch.special.log_ndtr` computes the same
    but has no batching rule, so :func:`torch.func.vmap` would warn and loop."""
    below = x < 0
    neg = torch.where(below, x, 0.0)
    pos = torch.where(below, 0.0, x)
    lower_tail = torch.log(0.5 * torch.special.erfcx(neg * -_SQRT_HALF)) - 0.5 * neg.square()
    upper_tail = torch.log1p(-0.5 * torch.special.erfc(pos * _SQRT_HALF))
    return torch.where(below, lower_tail, upper_tail)


def _log1mexp(d: Tensor) -> Tensor:
    r""":math:`\log(1 - e^d)` for :math:`d < 0`, accurate on both sides of :math:`-\log 2`."""
    near = d > -_LOG_2
    return torch.where(
        near,
        torch.log(-torch.expm1(torch.where(near, d, -1.0))),
        torch.log1p(-torch.exp(torch.where(near, -1.0, d))),
    )
