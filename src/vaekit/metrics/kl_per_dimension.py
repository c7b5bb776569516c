"""The mean KL of each latent element: where the information sits, and which units collapsed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor
from torchmetrics import Metric

from vaekit.functional.monitors import (
    _check_batched,
    _kl_per_dimension_compute,
    _kl_per_dimension_update,
)
from vaekit.metrics._base import (
    SyncFn,
    _agree_latent_shape,
    _check_latent_shape,
    _check_pair,
    _merged_latent_shape,
    _scalar_problem,
    _SumStateMetric,
)

__all__ = ["KLPerDimension"]


class KLPerDimension(_SumStateMetric):
    r"""Mean KL divergence from :math:`\mathcal N(0, 1)` of each latent element.

    .. math::
        \overline{\mathrm{KL}}_j = \frac1n \sum_{i=1}^{n}
        \mathrm{KL}\big(\mathcal N(\mu_{ij}, \sigma^2_{ij}) \,\|\, \mathcal N(0, 1)\big),

    with the per-element divergence of :func:`vaekit.functional.kl_divergence_normal`
    (``reduction="none"``). Summed over :math:`j` it is the KL term of the ELBO per data point;
    an element whose mean KL stays near 0 carries no information about the input (a collapsed
    unit), so ``(metric.compute() < 0.01).sum()`` counts collapsed units, and the vector is what
    a histogram of per-unit KL draws.

    ``update(mu, log_var)`` takes the posterior mean and log-variance, both of shape
    ``(B, *latent)``; the first update fixes ``latent`` for the lifetime of the metric. Inputs
    are detached; the sums are float64. ``compute()`` returns a tensor of shape ``latent`` in
    the metric's dtype (float32, or float64 after ``set_dtype(torch.float64)``); before any
    update, torchmetrics warns and the result is NaN. Across processes, one that has seen no
    sample (an uneven last shard) takes part in the same collectives and adds zeros of the
    latent shape of the others; when no process has seen one, a distributed ``compute()``
    returns NaN as it does before any update.

    Args:
        kwargs: torchmetrics' metric keyword arguments (``dist_sync_on_step``,
            ``process_group``, ``sync_on_compute``, ...).

    Raises:
        TypeError: at update, if ``mu`` or ``log_var`` is not a floating-point tensor.
        ValueError: at update, if their shapes differ, they are not on the metric's device,
            they have no batch dimension, or their latent shape differs from the earlier
            updates'; at merge, if the incoming latent shape differs; at a distributed
            ``compute()``, on every process, if the processes' latent shapes differ.

    Example:
        >>> import torch
        >>> from vaekit.metrics import KLPerDimension
        >>> kl = KLPerDimension()
        >>> kl.update(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 0.0]]))
        >>> kl.update(torch.tensor([[0.0, 3.0]]), torch.tensor([[0.0, 0.0]]))
        >>> kl.compute()  # (0.5 * 1 + 0.5 * 9) / 2 for the second element
        tensor([0.0000, 2.5000])
    """

    higher_is_better = None
    plot_lower_bound = 0.0

    _sums, _counts = ("kl_sum",), ("total",)
    kl_sum: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._latent_shape: tuple[int, ...] | None = None

    def update(self, mu: Tensor, log_var: Tensor) -> None:
        """Add a batch of posterior means and log-variances of shape ``(B, *latent)``."""
        self._check(mu, log_var)
        kl_sum, n = _kl_per_dimension_update(mu, log_var)
        self._latent_shape = tuple(mu.shape[1:])
        self.kl_sum = self.kl_sum + kl_sum
        self.total += n

    def _check(self, mu: Tensor, log_var: Tensor) -> None:
        _check_pair("mu", mu, "log_var", log_var, self.device)
        _check_batched("mu", mu)
        _check_latent_shape("mu", mu, self._shape)

    @property
    def _shape(self) -> tuple[int, ...] | None:
        """The latent shape of the updates so far: as ``update`` recorded it, or read from sums
        loaded from a checkpoint (torchmetrics' ``load_state_dict``, a TorchMetricsAdapter's),
        which carry the states but not this attribute."""
        if self._latent_shape is None and self.kl_sum.dim() > 0:
            return tuple(self.kl_sum.shape)
        return self._latent_shape

    def _aligned(self, incoming_state: dict[str, Any] | Metric) -> dict[str, Any] | Metric:
        if isinstance(incoming_state, KLPerDimension):
            theirs = incoming_state._latent_shape
        elif isinstance(incoming_state, dict) and {"kl_sum", "total"} <= set(incoming_state):
            seen = bool(incoming_state["total"] > 0)
            theirs = tuple(incoming_state["kl_sum"].shape) if seen else None
        else:
            return incoming_state  # torchmetrics raises its own error
        self._latent_shape = _merged_latent_shape(self._shape, theirs)
        return incoming_state

    def _state_shape_problem(self, states: Mapping[str, Any], where: str) -> str | None:
        return _scalar_problem(states, "total", where)  # kl_sum has the latent shape

    def compute(self) -> Tensor:
        """Return the mean KL of each latent element, of shape ``latent``, in the metric's dtype."""
        return self._result(_kl_per_dimension_compute(self.kl_sum, self.total))

    def _sync_replacements(self, gather: SyncFn, group: Any) -> dict[str, Tensor]:
        """Zero sums of the common latent shape for a process that has seen no sample.

        Such a process holds a 0-dim sum since its creation or last reset; gathered as it is, it
        would meet the latent-shaped sums of the others in mismatched collectives.
        """
        agreed = _agree_latent_shape(self._shape, gather, group, self.total.device)
        if agreed is not None and self.kl_sum.shape != agreed[0]:  # no sample since reset
            return {"kl_sum": self.kl_sum.new_zeros(agreed[0])}
        return {}

    def _plot_values(self, val: Tensor | Sequence[Tensor]) -> Tensor | Sequence[Tensor]:
        """The results flattened: one value per latent element."""
        return val.flatten() if isinstance(val, Tensor) else [v.flatten() for v in val]
