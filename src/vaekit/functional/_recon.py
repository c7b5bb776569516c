r"""The reconstruction term, elementwise: the one place a ``recon`` setting becomes a loss.

:func:`vaekit.functional.vae_loss` (and :class:`vaekit.VAELoss`) and
:func:`vaekit.functional.log_likelihood` both call :func:`_recon_elementwise`, so that a model
is trained and evaluated with the same likelihood, variance included.

The Gaussian variance :math:`\sigma^2` of ``"gaussian"`` and of the discretised likelihoods is
one of: a number or a tensor the user gives (used as given), the batch optimum
(``"optimal"``, ``"optimal_channel"``), or the output of a :class:`vaekit.nn.LearnedVariance`
(which clips its own). A variance vaekit derives passes through the soft clip of Rybkin et
al.'s (2021) reference code, :math:`\log\sigma \mapsto m + \operatorname{softplus}(\log\sigma -
m)`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from vaekit._checks import (
    check_broadcastable_to,
    check_int,
    check_number,
    check_same_device,
    check_tensor,
    result_dtype,
)
from vaekit.functional._discretized import _discretized_log_prob

__all__: list[str] = []

RECONS = (
    "mse",
    "l1",
    "bce",
    "bce_with_logits",
    "gaussian",
    "discretized_gaussian",
    "discretized_logistic",
)
"""Every reconstruction name :func:`vaekit.functional.vae_loss` takes."""
SCALED = ("gaussian", "discretized_gaussian", "discretized_logistic")
"""The reconstructions with a variance, ``recon_var``."""
DISCRETIZED = ("discretized_gaussian", "discretized_logistic")
LIKELIHOODS = ("bce", "bce_with_logits", *SCALED)
"""The reconstructions that are normalised negative log-likelihoods."""
OPTIMAL = ("optimal", "optimal_channel")
"""The batch-optimal variances."""

ReconFn: TypeAlias = Callable[[Tensor, Tensor], Tensor]
"""A reconstruction loss ``fn(x_hat, x)`` returning one loss per element of ``x``."""

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_LOGISTIC_SCALE = 0.5 * math.log(3.0) - math.log(math.pi)  # log(s / sigma), var = pi^2 s^2/3

_NOT_NORMALISED = {
    "mse": "a squared error is not a log-likelihood; use recon='gaussian', whose negative "
    "log-likelihood with recon_var=1 is half the squared error plus a constant",
    "l1": "an absolute error is not a log-likelihood; use recon='gaussian' or a discretized "
    "likelihood",
}


@dataclass(frozen=True)
class ReconSettings:
    """The checked settings of a reconstruction term, other than its variance."""

    recon: str | ReconFn
    min_log_sigma: float | None = -6.0
    num_bins: int = 256
    data_range: tuple[float, float] = (0.0, 1.0)
    sync_dist: bool = False


def check_recon(recon: object) -> str | ReconFn:
    """Return ``recon`` if it is a known reconstruction name or a callable, else raise."""
    if isinstance(recon, str):
        if recon not in RECONS:
            raise ValueError(
                f"Argument recon should be one of {_choices(RECONS)} or a callable, but given "
                f"{recon!r}"
            )
        return recon
    if not callable(recon):
        raise TypeError(
            f"Argument recon should be a str or a callable, but given {type(recon).__name__}"
        )
    return recon


def check_likelihood(recon: object) -> str:
    """Return ``recon`` if it names a normalised likelihood, else raise and say what to use."""
    if isinstance(recon, str) and recon in LIKELIHOODS:
        return recon
    expected = f"Argument recon should be a normalised likelihood, one of {_choices(LIKELIHOODS)}"
    if isinstance(recon, str):
        why = _NOT_NORMALISED.get(recon)
        raise ValueError(f"{expected}, but given {recon!r}" + (f": {why}" if why else ""))
    if callable(recon):
        raise ValueError(
            f"{expected}, but given a callable, which vaekit cannot know to be one: compute "
            "log p(x | z) yourself and pass it to log_importance_weights"
        )
    raise TypeError(f"Argument recon should be a str, but given {type(recon).__name__}")


def check_recon_var(value: object, recon: str | ReconFn) -> float | str | Tensor:
    """Return the variance setting: a float > 0, ``"optimal"``, ``"optimal_channel"`` or a
    floating tensor; ``None`` is 1. Raise if it is invalid or ``recon`` takes no variance.

    A tensor's values are checked on the CPU only: reading them elsewhere would force a sync.
    """
    if value is None:
        return 1.0
    check_takes_variance(value, recon)
    if isinstance(value, str):
        if value not in OPTIMAL:
            raise ValueError(
                f"Argument recon_var should be a number > 0, a tensor or one of "
                f"{_choices(OPTIMAL)}, but given {value!r}"
            )
        return value
    if isinstance(value, Tensor):
        check_tensor("recon_var", value)
        if value.device.type == "cpu" and not torch.compiler.is_compiling():
            values = value.detach()
            if not bool(((values > 0) & values.isfinite()).all()):
                raise ValueError(
                    "Argument recon_var should be finite and > 0 everywhere, but given a "
                    f"tensor with values from {values.min().item()} to {values.max().item()}"
                )
        return value
    return check_number("recon_var", value, low=0.0, low_open=True)


def check_takes_variance(value: object, recon: str | ReconFn) -> None:
    """Raise ValueError unless ``recon`` takes a variance."""
    if recon not in SCALED:
        raise ValueError(
            f"Argument recon_var should be None unless recon is one of {_choices(SCALED)}, "
            f"but given recon_var={value!r} with recon={recon!r}"
        )


def check_recon_settings(
    recon: str | ReconFn,
    recon_var: object,
    *,
    min_log_sigma: object,
    num_bins: object,
    data_range: object,
    sync_dist: object,
) -> ReconSettings:
    """Check the settings that go with a checked ``recon`` and its variance setting."""
    if not isinstance(sync_dist, bool):
        raise TypeError(
            f"Argument sync_dist should be a bool, but given {type(sync_dist).__name__}"
        )
    if sync_dist and not (isinstance(recon_var, str) and recon_var in OPTIMAL):
        raise ValueError(
            "Argument sync_dist should be False unless recon_var is 'optimal' or "
            f"'optimal_channel' (only a batch-optimal variance is shared across processes), "
            f"but given sync_dist=True with recon_var={recon_var!r}"
        )
    return ReconSettings(
        recon,
        check_min_log_sigma(min_log_sigma),
        check_int("num_bins", num_bins, low=2),
        check_data_range(data_range),
        sync_dist,
    )


def check_min_log_sigma(value: object) -> float | None:
    """Return ``None`` or a finite float."""
    return None if value is None else check_number("min_log_sigma", value)


def check_data_range(value: object) -> tuple[float, float]:
    """Return ``(low, high)`` as floats if they are finite numbers with ``low < high``."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise TypeError(
            f"Argument data_range should be a pair (low, high) of numbers, but given {value!r}"
        )
    low, high = value
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
            raise TypeError(
                f"Argument data_range should be a pair (low, high) of numbers, but given {value!r}"
            )
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            "Argument data_range should be a pair (low, high) of finite numbers with "
            f"low < high, but given {value!r}"
        )
    return float(low), float(high)


def check_variance_inputs(recon_var: float | str | Tensor, x: Tensor) -> None:
    """Raise unless the variance fits ``x``: a tensor broadcasts to it on its device, and
    ``"optimal_channel"`` finds a channel dimension 1."""
    if isinstance(recon_var, Tensor):
        check_broadcastable_to("recon_var", recon_var, "x", x)
        check_same_device("x", x, "recon_var", recon_var)
    elif recon_var == "optimal_channel" and x.dim() < 2:
        raise ValueError(
            "Argument recon_var='optimal_channel' needs a channel dimension 1 of x, but given "
            f"x.shape={tuple(x.shape)}"
        )


def _recon_elementwise(
    x_hat: Tensor, x: Tensor, settings: ReconSettings, recon_var: float | str | Tensor
) -> Tensor:
    """The reconstruction loss of each element: a negative log-likelihood in nats for the
    likelihoods. ``x_hat`` is ``x.shape`` or, for several decoded samples, ``(K, *x.shape)``."""
    recon = settings.recon
    dtype = result_dtype(x_hat, x)
    if not isinstance(recon, str):
        return _call(recon, x_hat, x, dtype)
    x_hat, x = x_hat.to(dtype), x.to(dtype)
    if recon in SCALED:
        return _scaled_nll(x_hat, x, settings, recon_var)
    x = x.expand_as(x_hat)
    if recon == "mse":
        return F.mse_loss(x_hat, x, reduction="none")
    if recon == "l1":
        return F.l1_loss(x_hat, x, reduction="none")
    if recon == "bce":
        return _bce(x_hat, x)
    return F.binary_cross_entropy_with_logits(x_hat, x, reduction="none")


def _scaled_nll(
    x_hat: Tensor, x: Tensor, settings: ReconSettings, recon_var: float | str | Tensor
) -> Tensor:
    recon = settings.recon
    log_sigma: Tensor | float
    if isinstance(recon_var, str):
        square = (x - x_hat).square()
        log_sigma = _optimal_log_sigma(square, x.dim(), settings, recon_var)
        if recon == "gaussian":
            return 0.5 * square * torch.exp(-2 * log_sigma) + log_sigma + _HALF_LOG_2PI
    elif recon == "gaussian":
        square = (x - x_hat).square()
        if isinstance(recon_var, Tensor):
            var = recon_var.to(x.dtype)
            return 0.5 * (square / var + var.log()) + _HALF_LOG_2PI
        return (0.5 / recon_var) * square + (0.5 * math.log(recon_var) + _HALF_LOG_2PI)
    elif isinstance(recon_var, Tensor):
        log_sigma = 0.5 * recon_var.to(x.dtype).log()
    else:
        log_sigma = 0.5 * math.log(recon_var)
    logistic = recon == "discretized_logistic"
    return -_discretized_log_prob(
        x,
        x_hat,
        log_sigma + _LOG_LOGISTIC_SCALE if logistic else log_sigma,
        kind="logistic" if logistic else "gaussian",
        num_bins=settings.num_bins,
        data_range=settings.data_range,
    )


def _optimal_log_sigma(
    square: Tensor, x_dim: int, settings: ReconSettings, recon_var: str
) -> Tensor:
    """The clipped log standard deviation of the batch's mean squared error: over every
    element, or per channel (dimension 1 of ``x``); over every process with ``sync_dist``."""
    if recon_var == "optimal":
        total, count = square.sum(), square.numel()
    else:
        channel = square.dim() - x_dim + 1
        others = [d for d in range(square.dim()) if d != channel]
        total = square.sum(dim=others, keepdim=True)
        count = square.numel() // max(1, square.shape[channel])
    if settings.sync_dist and _distributed():
        total, global_count = _sum_over_processes(total, count)
        return optimal_log_sigma(total, global_count, settings.min_log_sigma)
    return optimal_log_sigma(total, count, settings.min_log_sigma)


def optimal_log_sigma(total: Tensor, count: Tensor | int, min_log_sigma: float | None) -> Tensor:
    r"""The soft-clipped :math:`\log\sigma^*` of the batch-optimal variance ``total / count``.

    The clip :math:`m + \operatorname{softplus}(\log\sigma - m)` is
    :math:`\log(e^{\log\sigma} + e^m)`, computed as a ``logaddexp``: exactly, and a perfect
    reconstruction (:math:`\sigma^* = 0`) gets :math:`\log\sigma = m` and a zero, not a NaN,
    gradient.
    """
    var = total / count
    positive = var > 0
    log_sigma = torch.where(positive, 0.5 * torch.where(positive, var, 1.0).log(), -math.inf)
    return soft_clip(log_sigma, min_log_sigma)


def soft_clip(log_sigma: Tensor, min_log_sigma: float | None) -> Tensor:
    r""":math:`m + \operatorname{softplus}(\log\sigma - m)`, exactly; ``log_sigma`` itself for
    ``None``."""
    if min_log_sigma is None:
        return log_sigma
    return torch.logaddexp(log_sigma, torch.full_like(log_sigma, min_log_sigma))


def _sum_over_processes(total: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The sums of ``total`` and ``count`` over the processes in one collective,
    differentiable in ``total``."""
    stats = _all_reduce_sum(torch.cat([total.reshape(-1), total.new_tensor([float(count)])]))
    return stats[:-1].reshape(total.shape), stats[-1]


def _distributed() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def _all_reduce_sum(value: Tensor) -> Tensor:
    """A differentiable sum over the default process group: its backward sums the gradients.

    torch's functional collectives hold the one differentiable all-reduce that torch 2.13 does
    not deprecate; this is the one place vaekit touches that private module.
    """
    from torch.distributed import _functional_collectives as funcol

    group = cast("torch.distributed.ProcessGroup", torch.distributed.group.WORLD)
    reduced: Tensor = funcol.wait_tensor(funcol.all_reduce(value, "sum", group))  # type: ignore[no-untyped-call]
    return reduced


def _call(recon: ReconFn, x_hat: Tensor, x: Tensor, dtype: torch.dtype) -> Tensor:
    loss = recon(x_hat, x)
    if not isinstance(loss, Tensor):
        raise TypeError(
            f"Argument recon should return a torch.Tensor, but given {type(loss).__name__}"
        )
    if not loss.is_floating_point():
        raise TypeError(
            "Argument recon should return a real floating-point tensor, "
            f"but given dtype {loss.dtype}"
        )
    if loss.shape != x.shape:
        raise ValueError(
            f"Argument recon should return an elementwise loss of x.shape={tuple(x.shape)}, "
            f"but given recon(x_hat, x).shape={tuple(loss.shape)}"
        )
    return loss.to(torch.promote_types(dtype, loss.dtype))


def _bce(probs: Tensor, x: Tensor) -> Tensor:
    try:
        return F.binary_cross_entropy(probs, x, reduction="none")
    except RuntimeError as error:  # torch's check of the values, in its own words
        if "between 0 and 1" not in str(error):
            raise
        raise ValueError(
            "Argument x_hat should hold probabilities in [0, 1] for recon='bce', but given "
            f"values from {probs.min().item()} to {probs.max().item()}; for logits, use "
            "recon='bce_with_logits'"
        ) from error


def _choices(names: tuple[str, ...]) -> str:
    return ", ".join(repr(n) for n in names)
