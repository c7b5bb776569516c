"""The test negative log-likelihood of a VAE: the importance-weighted bound over a data set."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from vaekit._checks import check_int
from vaekit.functional._recon import check_data_range
from vaekit.functional.likelihood import (
    _check_log_weights,
    _importance_weighted_nll_compute,
    _importance_weighted_nll_update,
    bits_per_dim,
)
from vaekit.metrics._base import _SumStateMetric

__all__ = ["ImportanceWeightedNLL"]

UNITS = ("nats", "bits_per_dim")


class ImportanceWeightedNLL(_SumStateMetric):
    r"""Mean negative importance-weighted bound over every data point seen: the test NLL.

    .. math::
        \mathrm{NLL} = -\frac1n \sum_{i=1}^n \mathcal L_K(x_i),
        \qquad \mathcal L_K(x_i) = \operatorname{logsumexp}_k \log w_{ki} - \log K,

    with :func:`vaekit.functional.iwae_bound` (Burda, Grosse & Salakhutdinov, 2016), an upper
    bound on :math:`-\log p(x)` that tightens as :math:`K` grows. ``update(log_weights)`` takes
    the ``(K, B)`` log importance weights of a batch, from
    :func:`vaekit.functional.log_importance_weights`; inputs are detached, the bound of each
    data point is computed in float64 and summed, so any split of the data into batches and
    processes gives the same result up to float64 rounding; the result comes in the metric's
    dtype, float32 unless ``set_dtype`` says otherwise.

    ``compute()`` is in nats per data point, or with ``unit="bits_per_dim"`` in bits per
    dimension by :func:`vaekit.functional.bits_per_dim` (``num_dims`` elements per data point;
    ``num_bins`` and ``data_range`` add the dequantisation offset of a continuous density).
    Before any update, torchmetrics warns and the result is NaN.

    Args:
        unit: ``"nats"`` or ``"bits_per_dim"``.
        num_dims: the elements per data point, required by (and only with)
            ``"bits_per_dim"``.
        num_bins: see :func:`vaekit.functional.bits_per_dim`; only with ``"bits_per_dim"``.
        data_range: see :func:`vaekit.functional.bits_per_dim`.
        kwargs: torchmetrics' metric keyword arguments (``dist_sync_on_step``,
            ``process_group``, ``sync_on_compute``, ...).

    Raises:
        TypeError: if a setting is of the wrong type; at update, if ``log_weights`` is not a
            floating-point tensor.
        ValueError: if ``unit`` is unknown, ``num_dims`` is missing for ``"bits_per_dim"`` or
            given with ``"nats"`` (as ``num_bins``), or a number is out of range; at update,
            if ``log_weights`` is not ``(K, B)`` with ``K >= 1``.

    Example:
        >>> import math, torch
        >>> from vaekit.metrics import ImportanceWeightedNLL
        >>> nll = ImportanceWeightedNLL()
        >>> nll.update(torch.tensor([[-2.0, -4.0], [-2.0, -4.0]]))  # K = 2 equal weights
        >>> nll.update(torch.tensor([[-1.0], [-1.0 + math.log(3.0)]]))  # weights e^-1, 3 e^-1
        >>> nll.compute()  # (2 + 4 + (1 - log 2)) / 3
        tensor(2.1023)
        >>> bpd = ImportanceWeightedNLL("bits_per_dim", num_dims=2)
        >>> bpd(torch.full((1, 3), -2 * math.log(256), dtype=torch.float64))  # uniform: 8 bits
        tensor(8.)
    """

    higher_is_better = False
    plot_lower_bound = None

    _sums, _counts = ("nll_sum",), ("total",)
    nll_sum: Tensor
    total: Tensor

    def __init__(
        self,
        unit: str = "nats",
        num_dims: int | None = None,
        num_bins: int | None = None,
        data_range: tuple[float, float] = (0.0, 1.0),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(unit, str) or unit not in UNITS:
            raise ValueError(
                f"Argument unit should be one of {', '.join(map(repr, UNITS))}, but given {unit!r}"
            )
        if unit == "bits_per_dim" and num_dims is None:
            raise ValueError(
                "Argument num_dims should be given with unit='bits_per_dim' (the elements per "
                "data point), but given None"
            )
        for name, value in (("num_dims", num_dims), ("num_bins", num_bins)):
            if unit == "nats" and value is not None:
                raise ValueError(
                    f"Argument {name} should be None with unit='nats' (it converts to bits per "
                    f"dimension), but given {value!r}"
                )
        self.unit = unit
        self.num_dims = None if num_dims is None else check_int("num_dims", num_dims, low=1)
        self.num_bins = None if num_bins is None else check_int("num_bins", num_bins, low=2)
        self.data_range = check_data_range(data_range)

    def update(self, log_weights: Tensor) -> None:
        """Add the ``(K, B)`` log importance weights of a batch."""
        nll_sum, n = _importance_weighted_nll_update(log_weights)
        self.nll_sum += nll_sum.to(self.nll_sum.device)
        self.total += n

    def _check(self, log_weights: Tensor) -> None:
        _check_log_weights(log_weights)

    def compute(self) -> Tensor:
        """Return the mean NLL in nats per data point, or in bits per dimension."""
        nll = _importance_weighted_nll_compute(self.nll_sum, self.total)
        if self.num_dims is not None:
            nll = bits_per_dim(
                nll, self.num_dims, num_bins=self.num_bins, data_range=self.data_range
            )
        return self._result(nll)
