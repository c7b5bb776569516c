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
  reflected to the lower tail (where :math:`\log\Phi` is accurate) and
  :math:`\log\Phi(u) + \log(1 - e^{\log\Phi(l) - \log\Phi(u)})`;
- Gaussian, narrow bins (:math:`h\max(1, |c|) \le 0.1`, where that difference cancels): the
  Taylor series of the bin's integral about its centre,

  .. math::
      \Phi(c + h) - \Phi(c - h) = 2h\,\varphi(c) \sum_{j \ge 0}
      \frac{h^{2j}\,\mathrm{He}_{2j}(c)}{(2j + 1)!},

  with the probabilists' Hermite polynomials :math:`\mathrm{He}`, summed to :math:`j = 5` in
  float64 and :math:`j = 3` in float32 (the next term is below the dtype's precision there).

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
# Where log Phi switches to its asymptotic series: erfc is a normal float above it, and the
# series' first ten terms (six in float32) reach the dtype's precision below it.
_TAIL = {torch.float64: -20.0, torch.float32: -10.0}
# (-1)^n (2n - 1)!! for n = 10, ..., 1, for Horner's scheme in 1 / x^2 (the n = 0 term is 1).
_ASYMPTOTIC = tuple((-1) ** n * math.prod(range(1, 2 * n, 2)) for n in range(10, 0, -1))
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
        interior, lower, upper = _gaussian_bins(c, h)
    return torch.where(first, lower, torch.where(last, upper, interior))


def _gaussian_bins(c: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""The log-probabilities of an interior bin, :math:`\log(\Phi(c + h) - \Phi(c - h))`, of
    the first, :math:`\log\Phi(c + h)`, and of the last, :math:`\log\Phi(h - c)`.

    The bin's probability is symmetric in :math:`c`: with :math:`m = -|c|`, two log-CDFs on
    the lower side, where :math:`\log\Phi` is accurate, give all three:
    :math:`A = \log\Phi(m + h)`, :math:`B = \log\Phi(m - h)`, the interior
    :math:`A + \log(1 - e^{B - A})` (or the series, for narrow bins), and the edge values
    :math:`A` and :math:`\log\Phi(|c| + h) = \log(1 - e^B)`.
    """
    lower_side = c <= 0
    m = torch.where(lower_side, c, -c)  # -|c|, whose gradient at 0 abs() would zero
    a, b = _log_ndtr(m + h), _log_ndtr(m - h)
    outer = _log1mexp(b)
    narrow = h * c.abs().clamp_min(1.0) <= _NARROW
    series = _gaussian_series(torch.where(narrow, c, 0.0), torch.where(narrow, h, _NARROW))
    wide = a + _log1mexp(torch.where(narrow, -1.0, b - a))
    interior = torch.where(narrow, series, wide)
    return interior, torch.where(lower_side, a, outer), torch.where(lower_side, outer, a)


def _gaussian_series(c: Tensor, h: Tensor) -> Tensor:
    r""":math:`\log(\Phi(c + h) - \Phi(c - h))` by the series in :math:`h^2`, for narrow bins."""
    q, y = c.square(), h.square()
    # He_{2j}(c) / (2j + 1)! as polynomials in q = c^2, j = 1..5; float32 needs j <= 3.
    terms = [
        (q - 1) / 6,
        ((q - 6) * q + 3) / 120,
        (((q - 15) * q + 45) * q - 15) / 5040,
    ]
    if c.dtype == torch.float64:
        terms.append(((((q - 28) * q + 210) * q - 420) * q + 105) / 362880)
        terms.append((((((q - 45) * q + 630) * q - 3150) * q + 4725) * q - 945) / 39916800)
    correction = terms[-1] * y
    for term in reversed(terms[:-1]):
        correction = (correction + term) * y
    return torch.log(2 * h) - 0.5 * q - _HALF_LOG_2PI + torch.log1p(correction)


def _log_ndtr(x: Tensor) -> Tensor:
    r""":math:`\log\Phi(x)` to the input's precision: :math:`\log(1 - \Phi(-x))` above 0 and
    :math:`\log\Phi(x)` below, both from one ``erfc``, and in the far lower tail, where
    :math:`\Phi` underflows, the asymptotic series :math:`\log\Phi(x) = -x^2/2 - \log(-x) -
    \tfrac12\log 2\pi + \log\sum_n (-1)^n (2n - 1)!!\,x^{-2n}`. (:func:`torch.special.log_ndtr`
    has no batching rule, so :func:`torch.func.vmap` of it would warn and loop.)"""
    double = x.dtype == torch.float64
    tail = _TAIL[torch.float64 if double else torch.float32]
    far_tail = x < tail
    near = torch.where(far_tail, tail, x)
    below = near < 0
    # Phi(-|x|), without abs(), whose gradient at 0 is 0.
    half_erfc = 0.5 * torch.special.erfc(torch.where(below, -near, near) * _SQRT_HALF)
    body = torch.where(
        below, torch.log(torch.where(below, half_erfc, 1.0)), torch.log1p(-half_erfc)
    )
    far = torch.where(far_tail, x, tail)
    y = far.square().reciprocal()
    series = torch.zeros_like(y)
    for coefficient in _ASYMPTOTIC if double else _ASYMPTOTIC[-6:]:
        series = (series + coefficient) * y
    asymptotic = -0.5 * far.square() - torch.log(-far) - _HALF_LOG_2PI + torch.log1p(series)
    return torch.where(far_tail, asymptotic, body)


def _log1mexp(d: Tensor) -> Tensor:
    r""":math:`\log(1 - e^d)` for :math:`d < 0`, accurate on both sides of :math:`-\log 2`."""
    near = d > -_LOG_2
    return torch.where(
        near,
        torch.log(-torch.expm1(torch.where(near, d, -1.0))),
        torch.log1p(-torch.exp(torch.where(near, -1.0, d))),
    )
