"""Active units (Burda et al., 2016): latent elements whose posterior mean depends on the data."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from vaekit._checks import check_number, check_tensor
from vaekit.functional.monitors import (
    _active_units_compute,
    _active_units_rebase,
    _active_units_update,
    _check_batched,
)
from vaekit.metrics._base import (
    SyncFn,
    _agree_latent_shape,
    _check_device,
    _check_latent_shape,
    _latent_shape_problem,
    _scalar_problem,
    _SumStateMetric,
)

__all__ = ["ActiveUnits"]

_NAN_STRATEGIES = ("warn", "ignore", "error")


class ActiveUnits(_SumStateMetric):
    r"""Number of latent elements whose posterior mean varies across the data (Burda et al., 2016).

    A latent element :math:`u` is active when the variance over the data of its posterior mean
    exceeds a threshold (Burda, Grosse and Salakhutdinov, 2016, "Importance weighted
    autoencoders", who use 0.01):

    .. math::
        A_u = \mathrm{Var}_x\big(\mathbb E_{q(u \mid x)}[u]\big) > \text{threshold}.

    An inactive element encodes nothing about its input: its posterior has collapsed onto one
    point for all data, usually the prior.

    The variance is the population variance (divide by :math:`n`, not :math:`n - 1`) of the
    means seen: Burda et al. define it as :math:`\mathrm{Cov}_x` under the data distribution,
    which the samples seen are; it is defined from one sample on and merges exactly. The sample
    variance is :math:`n / (n - 1)` times larger, which makes no difference to the count unless
    a variance lies within that factor of the threshold.

    **Exact and stable accumulation.** The accumulators are float64 sums, reduced by summation
    across batches and processes: the count :math:`n`, :math:`S_1 = \sum (\mu - k)` and
    :math:`S_2 = \sum (\mu - k)^2`, from which the variance is :math:`S_2/n - (S_1/n)^2`. With
    :math:`k = 0` this difference of two large numbers loses every digit when the mean is large
    relative to the spread (in float64, a relative error of about
    :math:`10^{-16} (\bar\mu / \sigma)^2`). So the shift :math:`k`, a fourth state, is the mean
    of the first batch since creation or :meth:`reset`, close to the mean of all data. Sums
    about two shifts are combined by moving one set to the other shift, :math:`S_1 + n\delta`
    and :math:`S_2 + 2\delta S_1 + n\delta^2`, exact algebra on small numbers: ``forward``
    takes the batch's sums about the shift of the sums before it, ``merge_state`` moves the
    incoming sums to this metric's shift, and ``sync`` has every process gather its sums moved
    to the shift of the first process that has one (process 0 unless it has seen no sample), so
    every process sums identical terms and gets the identical result (the shift state is then
    reduced with ``max`` over equal copies); each keeps its own sums afterwards. A process that
    has seen no sample (an uneven last shard) takes part in the same collectives and adds zero
    sums; when no process has seen one, a distributed ``compute()`` returns 0 as it does before
    any update.

    ``update(mu)`` takes the posterior mean of shape ``(B, *latent)``; the first update fixes
    ``latent`` for the lifetime of the metric. Inputs are detached. Before any update,
    torchmetrics warns and the count is 0. :meth:`reset` restores the state of a new metric.

    **Non-finite means.** One NaN or infinity would make a unit's variance NaN, which counts
    as inactive, and a shift taken from it would spoil every later sum. As with torchmetrics'
    aggregators, ``nan_strategy`` says what happens to a sample (a row of ``mu``) holding a NaN
    or an infinity: ``"warn"`` (the default) leaves it out with a RuntimeWarning, ``"ignore"``
    leaves it out silently, ``"error"`` raises and leaves the metric unchanged. Finding them
    costs one device synchronisation per update.

    Args:
        threshold: variance above which a latent element counts as active, ``>= 0``.
        nan_strategy: ``"warn"`` | ``"ignore"`` | ``"error"``, for samples that are not finite.
        kwargs: torchmetrics' metric keyword arguments (``dist_sync_on_step``,
            ``process_group``, ``sync_on_compute``, ...).

    Raises:
        TypeError: if ``threshold`` is not a number; at update, if ``mu`` is not a
            floating-point tensor.
        ValueError: if ``threshold`` is negative or not finite or ``nan_strategy`` is unknown;
            at update, if ``mu`` has no batch dimension, is not on the metric's device, has a
            latent shape other than the earlier updates', or, with ``nan_strategy="error"``,
            holds a NaN or an infinity; at merge, if the incoming latent shape differs; at a
            distributed ``compute()``, on every process, if the processes' latent shapes
            differ.

    Example:
        >>> import torch
        >>> from vaekit.metrics import ActiveUnits
        >>> au = ActiveUnits()
        >>> _ = torch.manual_seed(0)
        >>> for _ in range(4):
        ...     x = torch.randn(32, 1)
        ...     mu = torch.cat([x, 0.01 * x, torch.full_like(x, 1e4)], dim=1)
        ...     au.update(mu)
        >>> au.compute()  # variances about 1, 1e-4 and 0
        tensor(1)
        >>> mu = torch.tensor([[0.0, 1.0], [float("nan"), 2.0], [1.0, 3.0]])
        >>> au = ActiveUnits(nan_strategy="ignore")
        >>> au.update(mu)
        >>> au.compute(), au.total  # variances 0.25 and 1 of the two finite samples
        (tensor(2), tensor(2))
        >>> ActiveUnits(nan_strategy="error").update(mu)
        Traceback (most recent call last):
        ...
        ValueError: Argument mu should hold finite values with nan_strategy='error', but given 1 of 3 samples with NaN or infinite values
    """  # noqa: E501

    higher_is_better = True
    plot_lower_bound = 0.0

    _sums, _counts = ("sum_mu", "sum_mu_sq"), ("total",)
    total: Tensor
    sum_mu: Tensor
    sum_mu_sq: Tensor
    shift: Tensor

    def __init__(
        self, *, threshold: float = 0.01, nan_strategy: str = "warn", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.threshold = check_number("threshold", threshold, low=0.0)
        if nan_strategy not in _NAN_STRATEGIES:
            choices = ", ".join(repr(c) for c in _NAN_STRATEGIES)
            raise ValueError(
                f"Argument nan_strategy should be one of {choices}, but given {nan_strategy!r}"
            )
        self.nan_strategy = nan_strategy
        # -inf marks "no shift yet"; "max" keeps the one shift all copies share once one is set.
        shift = torch.tensor(-math.inf, dtype=torch.float64)
        self.add_state("shift", default=shift, dist_reduce_fx="max")
        self._forward_shift: Tensor | None = None  # the accumulated sums' shift, during forward

    def _has_shift(self) -> bool:
        return self.shift.dim() > 0 or bool(torch.isfinite(self.shift))

    def update(self, mu: Tensor) -> None:
        """Add a batch of posterior means of shape ``(B, *latent)``."""
        mu = self._checked(mu)
        shift = self.shift if self._has_shift() else self._forward_shift
        if shift is None and mu.shape[0] == 0:
            return
        sum_mu, sum_mu_sq, n, shift = _active_units_update(mu, shift)
        self.shift = shift
        self.sum_mu = self.sum_mu + sum_mu
        self.sum_mu_sq = self.sum_mu_sq + sum_mu_sq
        self.total += n

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Add a batch and return the count over that batch alone, as torchmetrics' forward.

        The batch is checked before torchmetrics swaps the accumulated states out: a refused
        batch leaves them as they were. torchmetrics then updates a reset metric with the batch
        and adds its sums to the accumulated ones; the batch's sums are taken about the
        accumulated sums' shift, so that the two add term by term.
        """
        mu = self._checked(*args, **kwargs)
        self._forward_shift = self.shift if self._has_shift() else None
        try:
            return super().forward(mu)
        finally:
            self._forward_shift = None

    def _checked(self, mu: Tensor) -> Tensor:
        """``mu`` checked against this metric, without its samples that are not finite."""
        check_tensor("mu", mu)
        _check_batched("mu", mu)
        _check_device("mu", mu, self.device)
        _check_latent_shape("mu", mu, tuple(self.shift.shape) if self._has_shift() else None)
        n = mu.shape[0]
        finite = torch.isfinite(mu.detach()).reshape(n, math.prod(mu.shape[1:])).all(dim=1)
        bad = n - int(finite.sum())  # the one device synchronisation
        if bad == 0:
            return mu
        if self.nan_strategy == "error":
            raise ValueError(
                "Argument mu should hold finite values with nan_strategy='error', but given "
                f"{bad} of {n} samples with NaN or infinite values"
            )
        if self.nan_strategy == "warn":
            warnings.warn(
                f"ActiveUnits left out {bad} of the {n} samples of mu that hold NaN or infinite "
                "values (nan_strategy='warn')",
                RuntimeWarning,
                stacklevel=3,
            )
        return mu[finite]

    def compute(self) -> Tensor:
        """Return the number of active latent elements, an int64 scalar."""
        return _active_units_compute(self.sum_mu, self.sum_mu_sq, self.total, self.threshold)

    def _state_shape_problem(self, states: Mapping[str, Any], where: str) -> str | None:
        problem = _scalar_problem(states, "total", where)
        if problem is not None:
            return problem
        names: tuple[str, ...] = ("sum_mu", "sum_mu_sq", "shift")
        if not bool(states["total"] > 0):
            names = names[:2]  # zero sums are about any shift
        return _latent_shape_problem(states, names, where)

    def _aligned(self, incoming_state: dict[str, Any] | Metric) -> dict[str, Any] | Metric:
        state: dict[str, Any]
        if isinstance(incoming_state, ActiveUnits):
            state = dict(incoming_state.metric_state)
        elif isinstance(incoming_state, dict) and {"sum_mu", "sum_mu_sq", "total"} <= set(
            incoming_state
        ):
            state = dict(incoming_state)
            # A dict without a shift holds plain sums, i.e. sums about 0.
            state.setdefault("shift", torch.zeros_like(state["sum_mu"], dtype=torch.float64))
        else:
            return incoming_state  # torchmetrics raises its own error
        theirs: Tensor = state["shift"]
        if not bool(state["total"] > 0):  # zero sums: about any shift
            state["shift"] = self.shift
            return state
        if not self._has_shift():  # this metric's sums are zero
            self.shift = theirs.clone()
            return state
        if theirs.shape != self.shift.shape:
            raise ValueError(
                f"Argument incoming_state should have latent shape {tuple(self.shift.shape)}, "
                f"but given latent shape {tuple(theirs.shape)}"
            )
        state["sum_mu"], state["sum_mu_sq"] = _active_units_rebase(
            state["sum_mu"], state["sum_mu_sq"], state["total"], theirs - self.shift
        )
        state["shift"] = self.shift
        return state

    def _sync_replacements(self, gather: SyncFn, group: Any) -> dict[str, Tensor]:
        """Sums about the shift of the first process that has one, and that shift.

        A process with no sample since its creation or last reset gathers zero sums of the
        agreed latent shape.
        """
        local = tuple(self.shift.shape) if self._has_shift() else None
        agreed = _agree_latent_shape(local, gather, group, self.total.device)
        if agreed is None:
            return {}
        latent, first = agreed
        sum_mu, sum_mu_sq, shift = self.sum_mu, self.sum_mu_sq, self.shift
        if sum_mu.shape != latent:  # none since creation or reset: 0-dim zeros
            sum_mu, sum_mu_sq = sum_mu.new_zeros(latent), sum_mu_sq.new_zeros(latent)
        if local is None:
            shift = shift.new_zeros(latent)  # any shift: its sums are zero
        common = gather(shift, group=group)[first].to(shift)
        sum_mu, sum_mu_sq = _active_units_rebase(sum_mu, sum_mu_sq, self.total, shift - common)
        return {"sum_mu": sum_mu, "sum_mu_sq": sum_mu_sq, "shift": common}
