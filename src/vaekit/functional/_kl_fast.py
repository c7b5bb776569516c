"""The eager fast path of :func:`vaekit.functional.kl_divergence_normal`.

One table says which inputs take it; :func:`applies` tests it, and ``kl.py`` calls it in one
place:

================================================  ============================================
inputs                                            path
================================================  ============================================
float32 or half precision on the CPU, not under   :class:`KLSum`: float64 accumulation, only
:func:`torch.compile`, prior ``N(0, I)``,         the inputs saved for backward
reduction ``"sum"``, ``"mean"`` or
``"batchmean"``, no free bits
anything else (float64 included)                  the reference, ``kl._kl_elementwise``
================================================  ============================================

:class:`KLSum` computes :math:`\\sum (e^{\\log\\sigma^2} - 1 - \\log\\sigma^2) + \\mu^2` with
float64 accumulation (elementwise in float64 up to a chunk; beyond, float32 exponentials and
squares summed in float64 through one buffer that stays in the L2 cache, within 3e-7 of the
float64 sum), and its gradients :math:`\\mu` and :math:`\\tfrac12 (e^{\\log\\sigma^2} - 1)` with
``expm1``, exact to an ulp in the input's precision. Its ``jvp`` serves forward-mode AD and
``torch.func.jvp``; its ``vmap`` hands a batch to the reference. Its backward is written in
differentiable operations, so double backward works.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

__all__ = ["KLSum", "applies", "kl_sum"]

_CHUNK = 1 << 16  # elements: a float32 buffer of 256 KiB, which stays in the L2 cache
_LOG_VAR_MAX = 700.0  # e^700 / 2 is finite in float64 and far beyond float32's range
_DTYPES = frozenset((torch.float32, torch.float16, torch.bfloat16))  # a float32 result


def applies(mu: Tensor, log_var: Tensor, *, prior: bool, reduction: str, free_bits: float) -> bool:
    """Whether the KL of these (checked) arguments takes :class:`KLSum`: the table above.
    ``prior`` says whether a prior mean or log-variance is given."""
    return (
        not prior
        and reduction != "none"
        and free_bits == 0
        and mu.is_cpu
        and mu.dtype in _DTYPES
        and log_var.dtype in _DTYPES
        and not torch.compiler.is_compiling()
    )


def kl_sum(mu: Tensor, log_var: Tensor, scale: float) -> Tensor:
    """``scale`` times the KL from ``N(0, I)`` summed over every element."""
    return KLSum.apply(mu, log_var, scale)  # type: ignore[no-untyped-call,no-any-return]


def _twice_kl_sum(mu: Tensor, log_var: Tensor) -> Tensor:
    """Twice the KL from N(0, I) summed over every element, a float64 0-dim tensor.

    Up to a chunk, ``expm1(lv) - lv + mu^2`` elementwise in float64. Beyond, chunk by chunk
    through one float32 buffer that stays in the L2 cache: ``sum(exp(lv)) - n - sum(lv) +
    sum(mu^2)``, each ``exp`` and square in float32 and every sum in float64. ``exp`` errs by at
    most an ulp, 2^-23 of ``exp(lv)``, and a square by half an ulp, so the total errs by at most
    2^-23 sum(exp(lv)) + 2^-24 sum(mu^2): below 2^-22 + 2^-24 of the total, 3e-7, where
    ``sum(exp(lv)) <= 2 total``. Where it is not (every latent near its prior, or an overflow),
    the elementwise form sums again.
    """
    mu, log_var = mu.reshape(-1), log_var.reshape(-1)
    if mu.numel() <= _CHUNK:
        return _elementwise_sum(mu, log_var)
    buffer = torch.empty(_CHUNK)
    total = torch.zeros((), dtype=torch.float64)
    sum_exp = torch.zeros((), dtype=torch.float64)
    for m, lv in zip(torch.split(mu, _CHUNK), torch.split(log_var, _CHUNK), strict=True):
        x = buffer[: m.numel()]
        sum_exp.add_(torch.exp(lv.float(), out=x).sum(dtype=torch.float64))
        total.sub_(lv.sum(dtype=torch.float64))
        total.add_(torch.square(m.float(), out=x).sum(dtype=torch.float64))
    total.add_(sum_exp).sub_(mu.numel())
    if bool(total.isfinite()) and sum_exp <= 2 * total:
        return total
    parts = zip(torch.split(mu, _CHUNK), torch.split(log_var, _CHUNK), strict=True)
    return torch.stack([_elementwise_sum(m, lv) for m, lv in parts]).sum()


def _elementwise_sum(mu: Tensor, log_var: Tensor) -> Tensor:
    """``sum(expm1(lv) - lv + mu^2)`` in float64; ``lv`` clamped at _LOG_VAR_MAX, where the KL
    is far beyond float32's range anyway, so that ``lv = inf`` does not give ``inf - inf``."""
    lv = log_var.double().clamp_(max=_LOG_VAR_MAX)  # a copy: the input is not float64
    m = mu.double()
    return torch.expm1(lv).sub_(lv).addcmul_(m, m).sum()


class KLSum(torch.autograd.Function):
    """The KL from N(0, I), summed and scaled; only the inputs are saved for backward."""

    @staticmethod
    def forward(mu: Tensor, log_var: Tensor, scale: float) -> Tensor:
        return _twice_kl_sum(mu, log_var).mul_(0.5 * scale).float()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, float], output: Tensor) -> None:
        mu, log_var, scale = inputs
        ctx.save_for_backward(mu, log_var)
        ctx.save_for_forward(mu, log_var)
        ctx.scale = scale

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        mu, log_var = ctx.saved_tensors
        grad = grad * ctx.scale  # float32, as the output; half-precision inputs get their own
        grad_mu = grad_lv = None
        if ctx.needs_input_grad[0]:
            grad_mu = (mu * grad).to(mu.dtype)
        if ctx.needs_input_grad[1]:
            half_expm1 = torch.expm1(log_var.float())
            if torch.is_grad_enabled():  # double backward: expm1 saves its result
                half_expm1 = half_expm1 * (0.5 * grad)
            else:  # in place, one pass over memory fewer
                half_expm1.mul_(0.5 * grad)
            grad_lv = half_expm1.to(log_var.dtype)
        return grad_mu, grad_lv, None

    @staticmethod
    def jvp(ctx: Any, mu_t: Tensor | None, log_var_t: Tensor | None, _: None) -> Tensor:
        mu, log_var = ctx.saved_tensors
        scale: float = ctx.scale
        tangent = torch.zeros((), dtype=torch.float32, device=mu.device)
        if mu_t is not None:
            tangent = tangent + (mu.float() * mu_t.float()).sum()
        if log_var_t is not None:
            tangent = tangent + 0.5 * (torch.expm1(log_var.float()) * log_var_t.float()).sum()
        return tangent * scale

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[int | None, ...], mu: Tensor, log_var: Tensor, scale: float
    ) -> tuple[Tensor, int]:
        from vaekit.functional.kl import _kl_elementwise  # kl.py imports this module

        mu, log_var = (
            t.expand(info.batch_size, *t.shape) if d is None else t.movedim(d, 0)
            for t, d in zip((mu, log_var), in_dims[:2], strict=True)
        )
        kl = _kl_elementwise(mu, log_var, None, None)
        return kl.reshape(info.batch_size, -1).sum(1) * scale, 0


# Function.apply binds its arguments through inspect.signature(forward) on every call once
# setup_context is defined, which costs more than the KL of a small latent; a precomputed
# signature turns that into a lookup.
KLSum.forward.__signature__ = inspect.signature(KLSum.forward)  # type: ignore[attr-defined]
