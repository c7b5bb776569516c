"""TorchMetricsAdapter inside real Ignite Engine runs, against plain tensor references."""

# ruff: noqa: I001  (ignite is imported after vaekit.handlers, whose guard quiets torch.jit)

from __future__ import annotations

from typing import Any

import pytest
import torch
from torchmetrics import MetricCollection
from torchmetrics.regression import MeanSquaredError

from vaekit.handlers import TorchMetricsAdapter
from vaekit.metrics import ActiveUnits, KLPerDimension, ReconKLRatio

from ignite.engine import Engine, Events

EPOCHS = 3


def _epochs() -> list[list[dict[str, torch.Tensor]]]:
    """Data that changes every epoch, so that a missing reset shows."""
    g = torch.Generator().manual_seed(0)
    return [
        [
            {
                "recon": torch.rand(n, generator=g) * 100,
                "kl": torch.rand(n, generator=g) * (epoch + 1),
                "mu": torch.randn(n, 4, generator=g) * torch.tensor([0.0, 0.05, 1.0, epoch]),
                "log_var": torch.randn(n, 4, generator=g),
            }
            for n in (5, 8, 3)
        ]
        for epoch in range(EPOCHS)
    ]


class _Replay:
    """An Engine process function that replays the batches of the current epoch."""

    def __init__(self, epochs: list[list[dict[str, torch.Tensor]]]) -> None:
        self.epochs = epochs

    def __call__(self, engine: Engine, index: int) -> dict[str, torch.Tensor]:
        return self.epochs[engine.state.epoch - 1][index]


def _run(epochs: list[list[dict[str, torch.Tensor]]], attach: Any) -> list[dict[str, Any]]:
    engine = Engine(_Replay(epochs))
    attach(engine)
    seen: list[dict[str, Any]] = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))
    engine.run(range(len(epochs[0])), max_epochs=len(epochs))
    return seen


def _cat(batches: list[dict[str, torch.Tensor]], key: str) -> torch.Tensor:
    return torch.cat([b[key] for b in batches]).double()


def test_vaekit_metrics_reset_every_epoch() -> None:
    epochs = _epochs()

    def attach(engine: Engine) -> None:
        TorchMetricsAdapter(
            ReconKLRatio(), output_transform=lambda o: (o["recon"], o["kl"])
        ).attach(engine, "ratio")
        TorchMetricsAdapter(ActiveUnits(), output_transform=lambda o: o["mu"]).attach(engine, "au")
        TorchMetricsAdapter(
            KLPerDimension(), output_transform=lambda o: {"mu": o["mu"], "log_var": o["log_var"]}
        ).attach(engine, "kl")

    seen = _run(epochs, attach)
    assert len(seen) == EPOCHS
    for batches, metrics in zip(epochs, seen, strict=True):
        ratio = _cat(batches, "recon").sum() / _cat(batches, "kl").sum()
        assert isinstance(metrics["ratio"], float)
        assert metrics["ratio"] == pytest.approx(ratio.item(), rel=1e-12)
        variance = _cat(batches, "mu").var(dim=0, correction=0)
        assert isinstance(metrics["au"], int)
        assert metrics["au"] == (variance > 0.01).sum().item()
        mu, log_var = _cat(batches, "mu"), _cat(batches, "log_var")
        kl = 0.5 * (mu.square() + log_var.exp() - 1 - log_var)
        assert metrics["kl"].device.type == "cpu"
        torch.testing.assert_close(metrics["kl"], kl.mean(dim=0), rtol=1e-5, atol=1e-6)
    assert [m["au"] for m in seen] == [1, 2, 2]  # the last unit wakes up after epoch 1


def test_builtin_torchmetrics_metric_and_collection() -> None:
    epochs = _epochs()

    def attach(engine: Engine) -> None:
        pair = lambda o: (o["recon"], o["kl"])  # noqa: E731
        TorchMetricsAdapter(MeanSquaredError(), output_transform=pair).attach(engine, "mse")
        collection = MetricCollection({"ratio": ReconKLRatio(), "mse2": MeanSquaredError()})
        TorchMetricsAdapter(collection, output_transform=pair).attach(engine, "both")

    seen = _run(epochs, attach)
    for batches, metrics in zip(epochs, seen, strict=True):
        mse = (_cat(batches, "recon") - _cat(batches, "kl")).square().mean().item()
        assert metrics["mse"] == pytest.approx(mse, rel=1e-5)
        assert metrics["mse2"] == pytest.approx(mse, rel=1e-5)  # a mapping is also flattened
        assert set(metrics["both"]) == {"ratio", "mse2"}


def test_batch_wise_usage_gives_each_batch_value() -> None:
    epochs = _epochs()
    engine = Engine(_Replay(epochs))
    TorchMetricsAdapter(ReconKLRatio(), output_transform=lambda o: (o["recon"], o["kl"])).attach(
        engine, "ratio", usage="batch_wise"
    )
    values: list[float] = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: values.append(e.state.metrics["ratio"])
    )
    engine.run(range(3), max_epochs=EPOCHS)
    expected = [
        (b["recon"].double().sum() / b["kl"].double().sum()).item() for e in epochs for b in e
    ]
    assert values == pytest.approx(expected, rel=1e-12)


def test_running_epoch_wise_usage_accumulates_over_epochs() -> None:
    # RunningEpochWise updates once per epoch, from the output of the epoch's last iteration.
    epochs = _epochs()
    engine = Engine(_Replay(epochs))
    TorchMetricsAdapter(ReconKLRatio(), output_transform=lambda o: (o["recon"], o["kl"])).attach(
        engine, "ratio", usage="running_epoch_wise"
    )
    state = engine.run(range(3), max_epochs=EPOCHS)
    last = [e[-1] for e in epochs]
    expected = _cat(last, "recon").sum() / _cat(last, "kl").sum()
    assert state.metrics["ratio"] == pytest.approx(expected.item(), rel=1e-12)


def test_single_tensor_output_is_one_argument() -> None:
    engine = Engine(lambda engine, batch: batch)
    TorchMetricsAdapter(ActiveUnits(threshold=0.5)).attach(engine, "au")
    batches = [torch.tensor([[0.0, 0.0], [2.0, 0.1]]), torch.tensor([[0.0, 0.0], [2.0, 0.1]])]
    assert engine.run(batches).metrics["au"] == 1  # variances 1 and 0.0025


def test_constructor_errors() -> None:
    with pytest.raises(
        TypeError,
        match="Argument metric should be a torchmetrics Metric or MetricCollection, "
        "but given function",
    ):
        TorchMetricsAdapter(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match="Argument output_transform should be callable, but given int"
    ):
        TorchMetricsAdapter(ReconKLRatio(), output_transform=3)  # type: ignore[arg-type]


def test_reset_and_repr() -> None:
    metric = ReconKLRatio()
    adapter = TorchMetricsAdapter(metric)
    adapter.update((torch.tensor(4.0), torch.tensor(2.0)))
    assert adapter.compute().item() == 2.0
    adapter.reset()
    assert metric.update_count == 0
    assert repr(adapter) == "TorchMetricsAdapter(ReconKLRatio())"
