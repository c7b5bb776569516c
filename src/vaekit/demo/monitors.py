"""The metrics of a demo run, attached to the engines through vaekit's Ignite bridge."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ignite.engine import Engine
from torch import Tensor
from torchmetrics import MeanMetric

from vaekit.handlers import TorchMetricsAdapter
from vaekit.metrics import ActiveUnits, AggregatePosterior, KLPerDimension, ReconKLRatio

__all__ = ["attach_metrics"]


def _weighted(key: str) -> Callable[[Mapping[str, Tensor]], tuple[Tensor, Tensor]]:
    return lambda out: (out[key], out["n"])


def attach_metrics(
    trainer: Engine, evaluator: Engine, *, device: str = "cpu", sigma: bool = False
) -> None:
    """Attach the training-loss average to ``trainer`` and the monitors to ``evaluator``.

    With ``sigma``, ``trainer``'s outputs also hold the decoder's standard deviation of the
    step, averaged over the epoch as ``sigma``.

    ``evaluator``'s outputs hold a batch's mean ``recon`` and ``kl`` (per data point), its
    posterior ``mu`` and ``log_var`` and its size ``n``; weighting by ``n`` makes every metric
    exact over the whole data, whatever the batch sizes and the number of processes.
    :class:`~vaekit.metrics.AggregatePosterior` adds ``mi`` (:math:`I(x; z)`), ``marginal_kl``,
    ``tc`` and ``dim_kl``, over all the posteriors of the data. The metrics live on ``device``,
    the device of the engines' outputs.
    """
    TorchMetricsAdapter(MeanMetric().to(device), output_transform=lambda o: o["loss"]).attach(
        trainer, "train_loss"
    )
    if sigma:
        TorchMetricsAdapter(MeanMetric().to(device), output_transform=lambda o: o["sigma"]).attach(
            trainer, "sigma"
        )
    for name in ("recon", "kl"):
        TorchMetricsAdapter(MeanMetric().to(device), output_transform=_weighted(name)).attach(
            evaluator, name
        )
    TorchMetricsAdapter(
        ReconKLRatio().to(device),
        output_transform=lambda o: (o["recon"] * o["n"], o["kl"] * o["n"]),
    ).attach(evaluator, "recon_kl_ratio")
    TorchMetricsAdapter(ActiveUnits().to(device), output_transform=lambda o: o["mu"]).attach(
        evaluator, "active_units"
    )
    TorchMetricsAdapter(
        KLPerDimension().to(device), output_transform=lambda o: (o["mu"], o["log_var"])
    ).attach(evaluator, "kl_per_dim")
    TorchMetricsAdapter(
        AggregatePosterior().to(device), output_transform=lambda o: (o["mu"], o["log_var"])
    ).attach(evaluator, "aggregate_posterior")
