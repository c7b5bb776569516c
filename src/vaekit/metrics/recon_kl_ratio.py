"""The balance of the two ELBO terms: reconstruction over KL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from vaekit.functional.monitors import _recon_kl_ratio_compute, _recon_kl_ratio_update
from vaekit.metrics._base import _check_pair, _scalar_problem, _SumStateMetric

__all__ = ["ReconKLRatio"]


class ReconKLRatio(_SumStateMetric):
    r"""Ratio of the summed reconstruction loss to the summed KL term over everything seen.

    .. math::
        \mathrm{ratio} = \frac{\sum_i \mathrm{recon}_i}{\sum_i \mathrm{KL}_i}

    It is a ratio of sums, never a mean of per-batch ratios, so it does not depend on how the
    data is split into batches or processes. A ratio that keeps growing means the KL term is
    being squeezed towards zero; a KL sum of exactly 0 (complete posterior collapse) gives
    ``inf``. Before any update, torchmetrics warns and the result is NaN (0 / 0).

    ``update(recon, kl)`` takes two floating-point tensors of equal shape, each element one
    observation: per-sample vectors of shape ``(B,)`` or per-batch scalars, as long as both use
    the same reduction. Inputs are detached; the sums are float64.

    Args:
        kwargs: torchmetrics' metric keyword arguments (``dist_sync_on_step``,
            ``process_group``, ``sync_on_compute``, ...).

    Raises:
        TypeError: at update, if ``recon`` or ``kl`` is not a floating-point tensor.
        ValueError: at update, if their shapes differ or one is not on the metric's device.

    Example:
        >>> import torch
        >>> from vaekit.metrics import ReconKLRatio
        >>> ratio = ReconKLRatio()
        >>> ratio(torch.tensor([30.0, 50.0]), torch.tensor([2.0, 6.0]))  # this batch
        tensor(10.)
        >>> ratio.update(torch.tensor(20.0), torch.tensor(2.0))
        >>> ratio.compute()  # (30 + 50 + 20) / (2 + 6 + 2)
        tensor(10.)
        >>> ratio.update(torch.tensor(10.0), torch.tensor(0.0))
        >>> ratio.compute()  # 110 / 10: a ratio of sums, not the mean of 10, 10 and inf
        tensor(11.)
        >>> ratio.set_dtype(torch.float64).compute(), ratio.kl_sum.dtype
        (tensor(11., dtype=torch.float64), torch.float64)
    """

    higher_is_better = None

    _sums = ("recon_sum", "kl_sum")
    recon_sum: Tensor
    kl_sum: Tensor

    def update(self, recon: Tensor, kl: Tensor) -> None:
        """Add a batch of reconstruction losses and the KL terms that go with them."""
        self._check(recon, kl)
        recon_sum, kl_sum = _recon_kl_ratio_update(recon, kl)
        self.recon_sum += recon_sum
        self.kl_sum += kl_sum

    def _check(self, recon: Tensor, kl: Tensor) -> None:
        _check_pair("recon", recon, "kl", kl, self.device)

    def compute(self) -> Tensor:
        """Return the summed reconstruction loss over the summed KL, in the metric's dtype."""
        return self._result(_recon_kl_ratio_compute(self.recon_sum, self.kl_sum))

    def _state_shape_problem(self, states: Mapping[str, Any], where: str) -> str | None:
        return _scalar_problem(states, "recon_sum", where) or _scalar_problem(
            states, "kl_sum", where
        )
