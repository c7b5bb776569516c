"""The fused KL: the numerics behind :func:`vaekit.functional.kl_divergence_normal`.

The KL is computed in one of three modes: "none" (elementwise), "sum" (over everything) and
"batch" (over dim 0, for free bits). e^d - 1 - d is the hard part: expm1(d) - d in float32
keeps an absolute error of half an ulp of d, a relative error of 2^-23 / |d|.

Eager, an autograd Function saves only the inputs, and backward recomputes what it needs.
- Up to _SMALL elements, where the number of operations sets the time, and for float64
  inputs: expm1(d) - d in float64. For a float32 d its error, 2^-53 |d|, is below a float32
  ulp of the result (2^-23 relative) wherever |d| >= 2^-28, and below 2^-80 under it.
- Above, a float32 sum on CPU without a prior (the KL term of a training step), see
  FusedKLSum and _twice_kl_sum: e^d - d summed in float64, minus one per element, in chunks
  that stay in the L2 cache. expm1 is several times slower than exp on CPU; the rounding of
  exp in float64, 2^-52 absolute near d = 0, is far below a float32 ulp of the sum unless the
  sum averages less than _SUM_FLOOR per element (every latent at its prior), and there expm1
  recomputes it.
- Otherwise (elementwise, free bits, a prior, half precision, CUDA): a series near 0, see
  _half_expm1_minus_x, relative error <= 4e-7 (measured: 3.6e-7) wherever the result is a
  normal float32, on CPU in chunks of _CHUNK elements per thread whose temporaries stay in
  the L2 cache and are updated in place, since eager PyTorch makes one pass over memory per
  operation.

Compiled, see _kl_traced: the same polynomial, selected by torch.where, on detached inputs,
and the gradients through a carrier; no autograd Function. This module holds the eager paths.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from vaekit._checks import result_dtype

__all__ = ["FusedKL", "FusedKLSum", "kl_forward", "kl_sum_forward"]

_SMALL = 1 << 12
_CHUNK = 1 << 15  # at::internal::GRAIN_SIZE: 128 KiB a temporary, 4 or 5 of them in L2
# Twice the KL per element, on average, below which _twice_kl_sum recomputes with expm1. Per
# element, exp's rounding in float64 and the float64 sums err by at most 4e-15 (1 + e^d + |d|),
# at most 1.2e-14 (1 + 2 KL): 3e-8 of the sum at the floor, less above it.
_SUM_FLOOR = 4e-7
_FLOAT32_MAX = torch.finfo(torch.float32).max
_SUM_CHUNK = 1 << 16  # 512 KiB of float64 buffer and 512 KiB of input per thread, in L2
# (e^x - 1 - x) / (2 x^2) on [-1, 1] as a polynomial in x, lowest degree first: the degree-6
# Chebyshev interpolant (numpy.polynomial.chebyshev.chebinterpolate, then cheb2poly), relative
# error 1.1e-7. _kl_traced uses it too.
_SERIES_FLOAT32 = (
    0.24999999999999994,
    0.08333348645430023,
    0.02083334860491873,
    0.004165443084429779,
    0.0006943223870387198,
    0.0001016452095474423,
    1.2644217451348741e-05,
)


@functools.cache
def _constants(device: torch.device) -> tuple[Tensor, ...]:
    """0.0 and the coefficients of the series, as 0-dim float32 tensors on ``device``:
    ``addcmul``, unlike a binary operation, takes no CPU scalar tensor next to CUDA ones."""
    return tuple(torch.tensor(a, device=device) for a in (0.0, *_SERIES_FLOAT32))


def _half_expm1_minus_x(x: Tensor) -> Tensor:
    r"""Compute :math:`(e^x - 1 - x) / 2` in float32 to ``x``'s precision, without ``expm1``.

    With :math:`c = \mathrm{clamp}(x, -1, 1)` and :math:`u = x - c`,

    .. math::
        e^x - 1 - x = c^2 p(c) + \big(e^c (e^u - 1) - u\big),

    where the polynomial :math:`p` matches :math:`(e^c - 1 - c) / c^2` on :math:`[-1, 1]`, and
    the second term, exactly 0 there, loses a few ulp outside it. Both terms are non-negative,
    and so is the sum. Branch-free, so that every step is one in-place pass over the chunk.
    """
    c = x.clamp(-1.0, 1.0)
    u = torch.sub(x, c)
    expm1_u = torch.exp(u).sub_(1.0)
    half = torch.addcmul(u.mul_(-0.5), torch.exp(c), expm1_u, value=0.5)
    buffers = (expm1_u, u)  # free now: Horner's rule alternates between them
    series = _constants(x.device)[1:]
    poly = torch.addcmul(series[-2], c, series[-1], out=buffers[0])
    for i, coeff in enumerate(reversed(series[:-2]), start=1):
        poly = torch.addcmul(coeff, poly, c, out=buffers[i % 2])
    return half.addcmul_(poly, c.square_())


def _kl_series(
    mu: Tensor, log_var: Tensor, prior_mu: Tensor | None, prior_log_var: Tensor | None
) -> Tensor:
    """The elementwise KL through the series, in a fresh float32 tensor updated in place."""
    diff = mu if prior_mu is None else mu - prior_mu
    if prior_log_var is None:
        return _half_expm1_minus_x(log_var).addcmul_(diff, diff, value=0.5)
    kl = _half_expm1_minus_x(log_var - prior_log_var)
    return kl.addcmul_(diff, diff * torch.exp(-prior_log_var), value=0.5)


def _twice_kl_float64(
    mu: Tensor, log_var: Tensor, prior_mu: Tensor | None, prior_log_var: Tensor | None
) -> Tensor:
    """Twice the elementwise KL through ``expm1`` in a fresh float64 tensor, updated in place
    (the caller halves it after reducing: one multiplication instead of one per element)."""
    if prior_log_var is None:
        kl = _float64_copy(log_var).expm1_().sub_(log_var)
    else:
        delta = _float64_copy(log_var).sub_(prior_log_var)
        kl = torch.expm1(delta).sub_(delta)
    diff = mu if prior_mu is None else _float64_copy(mu).sub_(prior_mu)
    if prior_log_var is None:
        return kl.addcmul_(diff, diff)
    return kl.addcmul_(diff, diff * torch.exp(-prior_log_var.double()))


def _float64_copy(t: Tensor) -> Tensor:
    return t.to(torch.float64, copy=True)


def _kl_chunk(
    mu: Tensor, log_var: Tensor, prior_mu: Tensor | None, prior_log_var: Tensor | None, mode: str
) -> Tensor:
    dtype = result_dtype(mu, log_var, prior_mu, prior_log_var)
    if mu.numel() <= _SMALL or dtype.itemsize > 4:
        return _reduce_mode(_twice_kl_float64(mu, log_var, prior_mu, prior_log_var), mode).mul_(0.5)
    pm = None if prior_mu is None else prior_mu.to(dtype)
    plv = None if prior_log_var is None else prior_log_var.to(dtype)
    return _reduce_mode(_kl_series(mu.to(dtype), log_var.to(dtype), pm, plv), mode)


def _twice_kl_sum(mu: Tensor, log_var: Tensor) -> float:
    """Twice the KL from N(0, I) summed over all elements, as a Python float (float64).

    Chunk by chunk, in float64: sum(e^lv) - sum(lv) - the chunk's size, plus ``dot(mu, mu)``,
    through one float64 buffer of a chunk's size. Where the result averages less than
    _SUM_FLOOR per element, the float64 rounding of e^lv near 1 could show, and
    ``expm1(lv) - lv`` sums it again. The scalars reach the host, which costs nothing on CPU.
    """
    mu, log_var = mu.reshape(-1), log_var.reshape(-1)
    chunk = _SUM_CHUNK * torch.get_num_threads()
    lv64 = torch.empty(min(mu.numel(), chunk), dtype=torch.float64)
    total = _chunk_sums(mu, log_var, lv64, exact=False)
    if total < _SUM_FLOOR * mu.numel():  # False for NaN, which stays
        total = _chunk_sums(mu, log_var, lv64, exact=True)
    return total


def _chunk_sums(mu: Tensor, log_var: Tensor, lv64: Tensor, *, exact: bool) -> float:
    total = 0.0
    size = lv64.numel()
    for m, lv in zip(torch.split(mu, size), torch.split(log_var, size), strict=True):
        n = m.numel()
        x = (lv64 if n == size else lv64[:n]).copy_(lv)
        if exact:
            total += torch.expm1(x).sub_(x).sum().item()
        else:  # the sum of lv first, then e^lv in place: one buffer, one pass fewer
            sum_lv = x.sum().item()
            total += x.exp_().sum().item() - sum_lv - n
        total += torch.dot(m, m).item()
    return total


def _reduce_mode(kl: Tensor, mode: str) -> Tensor:
    if mode == "none":
        return kl
    return kl.sum(0) if mode == "batch" else kl.sum()


def _chunk(t: Tensor) -> int:
    """Elements per chunk: on CPU _CHUNK per thread, the most an operation keeps on one thread;
    elsewhere the whole tensor, since every operation is a kernel launch."""
    return _CHUNK * torch.get_num_threads() if t.device.type == "cpu" else max(1, t.numel())


def _flat_chunks(*tensors: Tensor) -> zip[tuple[Tensor, ...]]:
    chunk = _chunk(tensors[0])
    return zip(*(torch.split(t.reshape(-1), chunk) for t in tensors), strict=True)


def _rows(t: Tensor | None, rows: slice, mu: Tensor) -> Tensor | None:
    """The part of ``t`` (broadcastable to ``mu``) that goes with ``mu[rows]``."""
    if t is None or t.dim() < mu.dim() or t.shape[0] == 1:
        return t
    return t[rows]


def kl_forward(
    mu: Tensor,
    log_var: Tensor,
    prior_mu: Tensor | None,
    prior_log_var: Tensor | None,
    mode: str,
    scale: float = 1.0,
) -> Tensor:
    """The KL in ``mode``, times ``scale``, with no autograd: the forward of :class:`FusedKL`."""
    dtype = result_dtype(mu, log_var, prior_mu, prior_log_var)
    if mu.numel() <= _SMALL:  # fewest operations: the half and the scale in one multiplication
        kl2 = _twice_kl_float64(mu, log_var, prior_mu, prior_log_var)
        return _reduce_mode(kl2, mode).mul_(0.5 * scale).to(dtype)
    if mu.numel() <= _chunk(mu):
        kl = _kl_chunk(mu, log_var, prior_mu, prior_log_var, mode)
    elif prior_mu is None and prior_log_var is None and mode != "batch":
        parts = [_kl_chunk(m, lv, None, None, mode) for m, lv in _flat_chunks(mu, log_var)]
        kl = torch.cat(parts).view(mu.shape) if mode == "none" else torch.stack(parts).sum()
    else:  # whole rows, which a prior broadcasts over and free bits sum over
        step = max(1, _chunk(mu) // mu[0].numel())
        parts = []
        for start in range(0, mu.shape[0], step):
            rows = slice(start, start + step)
            pm, plv = _rows(prior_mu, rows, mu), _rows(prior_log_var, rows, mu)
            parts.append(_kl_chunk(mu[rows], log_var[rows], pm, plv, mode))
        kl = torch.cat(parts) if mode == "none" else torch.stack(parts).sum(0)
    kl = kl.to(dtype)
    return kl if scale == 1.0 else kl.mul_(scale)


def differences(
    mu: Tensor, log_var: Tensor, prior_mu: Tensor | None, prior_log_var: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``mu - prior_mu``, ``log_var - prior_log_var`` and ``exp(-prior_log_var)`` (``None``
    without a prior variance), in the dtype vaekit computes in; differentiable."""
    dtype = result_dtype(mu, log_var, prior_mu, prior_log_var)
    mu, log_var = mu.to(dtype), log_var.to(dtype)
    diff = mu if prior_mu is None else mu - prior_mu.to(dtype)
    if prior_log_var is None:
        return diff, log_var, None
    prior_log_var = prior_log_var.to(dtype)
    return diff, log_var - prior_log_var, torch.exp(-prior_log_var)


def _kl_grads(
    grad: Tensor,
    mu: Tensor,
    log_var: Tensor,
    prior_mu: Tensor | None,
    prior_log_var: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Gradients of ``sum(grad * KL)`` in differentiable ops; ``grad`` broadcasts to ``mu``."""
    diff, delta, inv_prior_var = differences(mu, log_var, prior_mu, prior_log_var)
    grad_mu = grad * diff
    if inv_prior_var is not None:
        grad_mu = grad_mu * inv_prior_var
    grad_lv = (0.5 * grad) * torch.expm1(delta)
    grad_pm = grad_plv = None
    if prior_mu is not None:
        grad_pm = (-grad_mu).sum_to_size(prior_mu.shape).to(prior_mu.dtype)
    if prior_log_var is not None:
        grad_plv = -(grad_mu * diff * 0.5 + grad_lv)
        grad_plv = grad_plv.sum_to_size(prior_log_var.shape).to(prior_log_var.dtype)
    return grad_mu.to(mu.dtype), grad_lv.to(log_var.dtype), grad_pm, grad_plv


class FusedKL(torch.autograd.Function):
    """The eager KL: only the inputs are saved for backward, which recomputes what it needs."""

    @staticmethod
    def forward(
        ctx: Any,
        mu: Tensor,
        log_var: Tensor,
        prior_mu: Tensor | None,
        prior_log_var: Tensor | None,
        mode: str,
        scale: float,
    ) -> Tensor:
        ctx.save_for_backward(mu, log_var, prior_mu, prior_log_var)
        ctx.mode, ctx.scale = mode, scale
        return kl_forward(mu, log_var, prior_mu, prior_log_var, mode, scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        mu, log_var, prior_mu, prior_log_var = ctx.saved_tensors
        if ctx.scale != 1.0:
            grad = grad * ctx.scale
        if ctx.mode == "batch":
            grad = grad.unsqueeze(0)
        return (*_kl_grads(grad, mu, log_var, prior_mu, prior_log_var), None, None)


def _scalar(value: float, dtype: torch.dtype) -> Tensor:
    """A CPU 0-dim tensor of ``value`` rounded to ``dtype``. ``torch.full`` takes half the time
    of ``torch.tensor`` but refuses a finite value beyond float32's range, which a cast, and
    ``torch.tensor``, rounds to inf."""
    if abs(value) < _FLOAT32_MAX or dtype == torch.float64:  # False for NaN too
        return torch.full((), value, dtype=dtype)
    return torch.tensor(value, dtype=dtype)


def kl_sum_forward(mu: Tensor, log_var: Tensor, scale: float) -> Tensor:
    """``scale`` times the KL from N(0, I) summed over all elements, with no autograd: the
    forward of :class:`FusedKLSum`, the KL term of a training step."""
    dtype = result_dtype(mu, log_var)
    if mu.numel() <= _SMALL:  # the fewest operations: each costs more than its arithmetic
        lv, m = log_var.double(), mu.double()  # addcmul_ of mixed dtypes is slower than this
        kl = torch.expm1(lv).sub_(lv).addcmul_(m, m).sum()
        if mu.is_cpu:  # through the host: one operation instead of a multiplication and a cast
            return _scalar(0.5 * scale * kl.item(), dtype)
        return kl.mul_(0.5 * scale).to(dtype)
    if mu.is_cpu and mu.dtype == log_var.dtype == torch.float32:
        return _scalar(0.5 * scale * _twice_kl_sum(mu, log_var), dtype)
    return kl_forward(mu, log_var, None, None, "sum", scale)


class FusedKLSum(torch.autograd.Function):
    """:class:`FusedKL` for the default prior N(0, I) and a sum: the shortest path, forward
    and backward, for the KL term of a training step."""

    @staticmethod
    def forward(ctx: Any, mu: Tensor, log_var: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(mu, log_var)
        ctx.scale = scale
        return kl_sum_forward(mu, log_var, scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        """Up to _SMALL elements, in the fewest operations: ``addcmul`` of a 0-dim zero
        multiplies by ``grad`` and the scale at once. Above, where ``addcmul`` with 0-dim
        operands (not vectorized) takes three times as long as multiplying by a 0-dim tensor,
        and with ``(exp(lv) - 1) * h`` for the slower ``expm1(lv) * h``: an absolute error of
        half an ulp of ``max(1, exp(lv)) * h``, the precision of the sum it is a part of, and
        exactly 0 at ``lv = 0``."""
        mu, log_var = ctx.saved_tensors
        scale = ctx.scale
        if torch.is_grad_enabled() or not mu.dtype == log_var.dtype == grad.dtype:
            # double backward needs differentiable operations; mixed dtypes need casts
            grad_mu, grad_lv = _kl_grads(grad * scale, mu, log_var, None, None)[:2]
        elif mu.numel() <= _SMALL:
            zero = _constants(mu.device)[0]
            grad_mu = torch.addcmul(zero, mu, grad, value=scale)
            grad_lv = torch.addcmul(zero, torch.expm1(log_var), grad, value=0.5 * scale)
        else:
            grad = grad * scale
            grad_mu, grad_lv = mu * grad, torch.exp(log_var).sub_(1.0).mul_(grad * 0.5)
        return grad_mu, grad_lv, None
