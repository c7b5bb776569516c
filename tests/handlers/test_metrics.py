"""TorchMetricsAdapter inside real Ignite Engine runs, against plain tensor references."""

# ruff: noqa: I001  (ignite is imported after vaekit.handlers, whose guard quiets torch.jit)

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics import Metric, MetricCollection
from torchmetrics.aggregation import CatMetric, MeanMetric
from torchmetrics.regression import MeanSquaredError

from tests._distributed import spawn_ranks
from tests.handlers import _dist_checkpoint
from vaekit.handlers import TorchMetricsAdapter
from vaekit.metrics import ActiveUnits, KLPerDimension, ReconKLRatio

from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from ignite.metrics import Average
from ignite.metrics import Metric as IgniteMetric
from ignite.metrics.metric import (
    BatchWise,
    MetricUsage,
    RunningBatchWise,
    RunningEpochWise,
    SingleEpochRunningBatchWise,
)

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
        assert metrics["ratio"] == pytest.approx(ratio.item(), rel=1e-7)  # a float32 result
        variance = _cat(batches, "mu").var(dim=0, correction=0)
        assert isinstance(metrics["au"], int)
        assert metrics["au"] == (variance > 0.01).sum().item()
        mu, log_var = _cat(batches, "mu"), _cat(batches, "log_var")
        kl = 0.5 * (mu.square() + log_var.exp() - 1 - log_var)
        assert metrics["kl"].device.type == "cpu"
        torch.testing.assert_close(metrics["kl"], kl.mean(dim=0).float(), rtol=1e-5, atol=1e-6)
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
        (b["recon"].double().sum() / b["kl"].double().sum()).float().item()
        for e in epochs
        for b in e
    ]
    assert values == expected  # the float64 ratio, rounded once to float32


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
    assert state.metrics["ratio"] == pytest.approx(expected.item(), rel=1e-7)


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


@pytest.mark.parametrize(
    ("output", "transform", "message"),
    [
        (
            (torch.ones(2), torch.ones(2), torch.ones(2, 4)),
            None,
            "Argument output_transform is needed: ReconKLRatio.update(recon, kl) cannot take "
            "engine.state.output, a tuple of 3 items (too many positional arguments); pass an "
            "output_transform that returns its arguments (a tuple or a dict of keywords)",
        ),
        (
            {"recon": torch.ones(2), "kl": torch.ones(2), "mu": torch.ones(2, 4)},
            None,
            "Argument output_transform is needed: ReconKLRatio.update(recon, kl) cannot take "
            "engine.state.output, a dict with keys ['kl', 'mu', 'recon'] (got an unexpected "
            "keyword argument 'mu'); pass an output_transform that returns its arguments (a "
            "tuple or a dict of keywords)",
        ),
        (
            {"recon": torch.ones(2), "kl": torch.ones(2)},
            lambda o: o["recon"],
            "Argument output_transform should return the arguments of "
            "ReconKLRatio.update(recon, kl), but given a Tensor (missing a required argument: "
            "'kl')",
        ),
    ],
)
def test_output_that_does_not_fit_update_names_output_transform(
    output: Any, transform: Any, message: str
) -> None:
    engine = Engine(lambda engine, batch: output)
    kwargs = {} if transform is None else {"output_transform": transform}
    TorchMetricsAdapter(ReconKLRatio(), **kwargs).attach(engine, "ratio")
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$") as info:
        engine.run([0])
    assert info.value.__cause__ is None


def test_a_type_error_of_the_metric_itself_is_not_rewritten() -> None:
    adapter = TorchMetricsAdapter(ReconKLRatio())
    with pytest.raises(
        TypeError, match=r"^Argument kl should be a floating-point tensor, but given dtype"
    ):
        adapter.update((torch.ones(2), torch.ones(2, dtype=torch.int64)))


def test_reset_and_repr() -> None:
    metric = ReconKLRatio()
    adapter = TorchMetricsAdapter(metric)
    adapter.update((torch.tensor(4.0), torch.tensor(2.0)))
    assert adapter.compute().item() == 2.0
    adapter.reset()
    assert metric.update_count == 0
    assert repr(adapter) == "TorchMetricsAdapter(ReconKLRatio())"


def test_every_public_member_is_the_adapters_own() -> None:
    # Each is documented for the adapter, not by Ignite's docstrings of (y_pred, y) metrics.
    public = {n for n in dir(IgniteMetric) if not n.startswith("_")}
    for name in sorted(public):
        assert name in vars(TorchMetricsAdapter), name
        member = vars(TorchMetricsAdapter)[name]
        if callable(member):
            assert member.__doc__, name
            assert "Example:" in member.__doc__, name


def test_detach_and_is_attached() -> None:
    engine = Engine(lambda engine, batch: batch)
    adapter = TorchMetricsAdapter(ReconKLRatio())
    adapter.attach(engine, "ratio", usage="batch_wise")
    assert adapter.is_attached(engine, usage="batch_wise")
    assert not adapter.is_attached(engine)
    adapter.detach(engine, usage="batch_wise")
    assert not adapter.is_attached(engine, usage="batch_wise")
    engine.run([(torch.tensor(1.0), torch.tensor(1.0))])
    assert "ratio" not in engine.state.metrics


@pytest.mark.parametrize(
    ("state", "error", "message"),
    [
        ([1, 2], TypeError, r"^Argument state_dict should be a mapping, but given list$"),
        (
            {"metrics": {}},
            ValueError,
            r"^Argument state_dict should be a TorchMetricsAdapter.state_dict\(\), "
            r"but given dict with keys \['metrics'\]$",
        ),
        (
            {"__metric_state_per_rank": "abc"},
            ValueError,
            r"^Argument state_dict should be a TorchMetricsAdapter.state_dict\(\), "
            r"but given dict with keys \['__metric_state_per_rank'\]$",
        ),
        (
            {"__metric_state_per_rank": []},
            ValueError,
            r"^Argument state_dict should hold the states of 1 processes, one per process as "
            r"now, but given those of 0$",
        ),
    ],
)
def test_a_state_dict_of_another_layout_is_refused(
    state: Any, error: type[Exception], message: str
) -> None:
    adapter = TorchMetricsAdapter(ReconKLRatio())
    adapter.update((torch.tensor([4.0]), torch.tensor([2.0])))
    with pytest.raises(error, match=message):
        adapter.load_state_dict(state)
    assert adapter.metric.recon_sum.item() == 4.0
    assert adapter.metric.update_count == 1


# Checkpoints: a run stopped after iteration STOP and resumed in a fresh engine with fresh
# adapters must give the results of the uninterrupted run, bit for bit (same sums, same order).
STOPS = (2, 3, 5, 8)  # part-way through epochs 1, 2 and 3, and at the end of epoch 1
EPOCH_LENGTH = 3


class _ByIteration:
    """A process function that serves the batch of ``engine.state.iteration``.

    Ignite restarts the data iterator when a run resumes; indexing by iteration gives the resumed
    run the batches that the interrupted one had not seen, as a resumable data pipeline would.
    """

    def __init__(self, epochs: list[list[dict[str, torch.Tensor]]]) -> None:
        self.batches = [batch for epoch in epochs for batch in epoch]

    def __call__(self, engine: Engine, _: int) -> dict[str, torch.Tensor]:
        return self.batches[engine.state.iteration - 1]


def _pair(o: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return o["recon"], o["kl"]


def _collection() -> MetricCollection:
    """mse and rmse have equal states, so torchmetrics puts them in one compute group; the
    CatMetric keeps a list state."""
    metrics = {
        "ratio": ReconKLRatio(),
        "mse": MeanSquaredError(),
        "rmse": MeanSquaredError(squared=False),
        "cat": CatMetric(),
    }
    return MetricCollection(metrics, compute_groups=True, prefix="both_")


def _collection_kwargs(o: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**o, "preds": o["recon"], "target": o["kl"], "value": o["kl"]}


def _adapters() -> dict[str, TorchMetricsAdapter]:
    return {
        "ratio": TorchMetricsAdapter(ReconKLRatio(), output_transform=_pair),
        "au": TorchMetricsAdapter(ActiveUnits(), output_transform=lambda o: o["mu"]),
        "kl": TorchMetricsAdapter(
            KLPerDimension(), output_transform=lambda o: {"mu": o["mu"], "log_var": o["log_var"]}
        ),
        "both": TorchMetricsAdapter(_collection(), output_transform=_collection_kwargs),
    }


def _resumable(
    epochs: list[list[dict[str, torch.Tensor]]],
) -> tuple[Engine, dict[str, TorchMetricsAdapter], list[dict[str, Any]]]:
    """An engine with every adapter attached, and the list its epochs' metrics go to."""
    engine = Engine(_ByIteration(epochs))
    adapters = _adapters()
    for name, adapter in adapters.items():
        adapter.attach(engine, name)
    seen: list[dict[str, Any]] = []
    engine.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: seen.append({"epoch": e.state.epoch, **e.state.metrics})
    )
    return engine, adapters, seen


def _run_all(engine: Engine) -> None:
    engine.run(range(EPOCH_LENGTH), max_epochs=EPOCHS)


def _exactly(actual: Any, expected: Any) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def _after(seen: list[dict[str, Any]], stop: int) -> list[dict[str, Any]]:
    """The epochs a run resumed after iteration ``stop`` completes."""
    return [m for m in seen if m["epoch"] > stop // EPOCH_LENGTH]


@pytest.mark.parametrize("stop", STOPS)
def test_resume_after_terminate_gives_the_uninterrupted_results(stop: int) -> None:
    epochs = _epochs()
    engine, _, uninterrupted = _resumable(epochs)
    _run_all(engine)

    engine, adapters, _ = _resumable(epochs)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=stop), lambda e: e.terminate())
    _run_all(engine)
    saved = {name: adapter.state_dict() for name, adapter in adapters.items()}
    saved["trainer"] = engine.state_dict()

    engine, adapters, resumed = _resumable(epochs)
    engine.load_state_dict(saved.pop("trainer"))
    for name, state in saved.items():
        adapters[name].load_state_dict(state)
    engine.run(range(EPOCH_LENGTH))
    assert [m["epoch"] for m in resumed] == list(range(stop // EPOCH_LENGTH + 1, EPOCHS + 1))
    _exactly(resumed, _after(uninterrupted, stop))


@pytest.mark.parametrize("stop", STOPS)
def test_resume_from_an_ignite_checkpoint_on_disk(stop: int, tmp_path: Path) -> None:
    epochs = _epochs()
    engine, adapters, uninterrupted = _resumable(epochs)
    to_save: dict[str, Any] = {"trainer": engine, **adapters}
    checkpoint = Checkpoint(to_save, DiskSaver(tmp_path))
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=stop), checkpoint)
    _run_all(engine)
    (path,) = tmp_path.iterdir()

    engine, adapters, resumed = _resumable(epochs)
    Checkpoint.load_objects({"trainer": engine, **adapters}, path)  # weights_only=True
    engine.run(range(EPOCH_LENGTH))
    _exactly(resumed, _after(uninterrupted, stop))


@pytest.mark.parametrize(
    "usage",
    [BatchWise(), RunningBatchWise(), RunningEpochWise(), SingleEpochRunningBatchWise()],
    ids=lambda u: u.usage_name,
)
def test_resume_with_other_usages(usage: MetricUsage) -> None:
    # Batch-wise: every iteration starts afresh. Running: the loaded states carry on.
    stop = 5
    epochs = _epochs()

    def attached() -> tuple[Engine, TorchMetricsAdapter, list[tuple[int, float]]]:
        engine = Engine(_ByIteration(epochs))
        adapter = TorchMetricsAdapter(ReconKLRatio(), output_transform=_pair)
        adapter.attach(engine, "ratio", usage=usage)
        seen: list[tuple[int, float]] = []

        engine.add_event_handler(
            usage.COMPLETED, lambda e: seen.append((e.state.iteration, e.state.metrics["ratio"]))
        )
        return engine, adapter, seen

    engine, adapter, uninterrupted = attached()
    saved: dict[str, Any] = {}
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=stop),
        lambda e: saved.update(trainer=e.state_dict(), ratio=adapter.state_dict()),
    )
    _run_all(engine)

    engine, adapter, resumed = attached()
    engine.load_state_dict(saved["trainer"])
    adapter.load_state_dict(saved["ratio"])
    engine.run(range(EPOCH_LENGTH))
    assert len(resumed) >= 2
    assert resumed == [(i, value) for i, value in uninterrupted if i > stop]


def _vaekit_collection() -> MetricCollection:
    return MetricCollection({"ratio": ReconKLRatio(), "au": ActiveUnits(), "kl": KLPerDimension()})


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=6), data=st.data())
def test_any_split_resumes_to_the_uninterrupted_result(sizes: list[int], data: Any) -> None:
    stop = data.draw(st.integers(0, len(sizes)), label="stop")
    g = torch.Generator().manual_seed(sum(sizes))
    batches = [
        {
            "recon": torch.rand(n, generator=g),
            "kl": torch.rand(n, generator=g),
            "mu": 3.0 + torch.randn(n, 2, 3, generator=g),
            "log_var": torch.randn(n, 2, 3, generator=g),
        }
        for n in sizes
    ]
    uninterrupted = TorchMetricsAdapter(_vaekit_collection())
    first = TorchMetricsAdapter(_vaekit_collection())
    for batch in batches[:stop]:
        first.update(batch)
    second = TorchMetricsAdapter(_vaekit_collection())
    second.load_state_dict(first.state_dict())
    for batch in batches[stop:]:
        second.update(batch)
    for batch in batches:
        uninterrupted.update(batch)
    _exactly(second.compute(), uninterrupted.compute())


def _feed(adapter: TorchMetricsAdapter, batches: list[dict[str, torch.Tensor]]) -> None:
    for batch in batches:
        adapter.update(_collection_kwargs(batch))


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else [v.clone() for v in value]


def _states(adapter: TorchMetricsAdapter) -> dict[str, Any]:
    """Copies of the update count and states of every torchmetrics metric in ``adapter``."""
    return {
        name: {"count": m.update_count, **{k: _copy(v) for k, v in m.metric_state.items()}}
        for name, m in adapter.metric.named_modules()
        if isinstance(m, Metric)
    }


def test_state_dict_loads_with_weights_only_and_shares_nothing() -> None:
    batches = _epochs()[0]
    adapter = TorchMetricsAdapter(_collection())
    _feed(adapter, batches[:2])
    state = adapter.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    before = _states(adapter)

    restored = TorchMetricsAdapter(_collection())
    restored.load_state_dict(loaded)
    _exactly(_states(restored), before)
    assert len(restored.metric.cat.value) == 2  # a list state
    _feed(adapter, batches[2:])  # neither the saved dict nor the loaded one follows
    _feed(restored, batches[2:])
    _exactly(restored.compute(), adapter.compute())
    reference = TorchMetricsAdapter(_collection())
    _feed(reference, batches)
    _exactly(restored.compute(), reference.compute())
    for kept in (state, loaded):
        fresh = TorchMetricsAdapter(_collection())
        fresh.load_state_dict(kept)
        _exactly(_states(fresh), before)


def test_load_into_a_collection_whose_compute_groups_formed() -> None:
    # A roll-back: the collection has formed its groups, so its members share their states.
    batches = _epochs()[0]
    adapter = TorchMetricsAdapter(_collection())
    _feed(adapter, batches[:1])
    state = adapter.state_dict()
    _feed(adapter, batches[1:])
    assert adapter.metric.compute_groups[1] == ["mse", "rmse"]
    adapter.compute()  # a cached result, which the load must drop
    adapter.load_state_dict(state)
    collection = adapter.metric
    assert collection.rmse.sum_squared_error is collection.mse.sum_squared_error
    first = TorchMetricsAdapter(_collection())
    _feed(first, batches[:1])
    _exactly(adapter.compute(), first.compute())
    _feed(adapter, batches[1:])
    reference = TorchMetricsAdapter(_collection())
    _feed(reference, batches)
    _exactly(adapter.compute(), reference.compute())


def test_states_load_onto_the_metrics_dtype_and_device() -> None:
    source = TorchMetricsAdapter(MeanMetric())
    source.update(torch.tensor([0.1, 0.2]))
    target = TorchMetricsAdapter(MeanMetric().set_dtype(torch.float64))
    target.load_state_dict(source.state_dict())
    assert target.metric.mean_value.dtype == torch.float64
    assert target.metric.mean_value.item() == torch.tensor(0.1 + 0.2).item()  # the float32 sum
    vaekit = TorchMetricsAdapter(ReconKLRatio())
    vaekit.update((torch.tensor([0.1, 0.2], dtype=torch.float64), torch.tensor([0.3, 0.4])))
    sums = TorchMetricsAdapter(ReconKLRatio().set_dtype(torch.float32))  # keeps float64 sums
    sums.load_state_dict(vaekit.state_dict())
    assert sums.metric.recon_sum.dtype == torch.float64
    assert sums.metric.recon_sum.item() == 0.1 + 0.2

    on_meta = TorchMetricsAdapter(ReconKLRatio().to("meta"))
    on_meta.load_state_dict(vaekit.state_dict())
    assert on_meta.metric.kl_sum.device.type == "meta"

    cat = TorchMetricsAdapter(CatMetric())
    cat.update(torch.tensor([1.0, 2.0]))
    lists = TorchMetricsAdapter(CatMetric().to("meta"))
    lists.load_state_dict(cat.state_dict())
    assert [v.device.type for v in lists.metric.value] == ["meta"]
    kept_on_cpu = TorchMetricsAdapter(CatMetric(compute_on_cpu=True).to("meta"))
    kept_on_cpu.load_state_dict(cat.state_dict())
    assert [v.device.type for v in kept_on_cpu.metric.value] == ["cpu"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checkpoint_moves_between_cpu_and_cuda() -> None:
    batches = _epochs()[0]
    on_cuda = TorchMetricsAdapter(_collection().to("cuda"))
    for batch in batches[:2]:
        on_cuda.update(_collection_kwargs({k: v.cuda() for k, v in batch.items()}))
    on_cpu = TorchMetricsAdapter(_collection())
    on_cpu.load_state_dict(on_cuda.state_dict())
    torch.testing.assert_close(
        _states(on_cpu), _states(on_cuda), rtol=0, atol=0, check_device=False
    )
    assert on_cpu.metric.ratio.recon_sum.device.type == "cpu"
    back = TorchMetricsAdapter(_collection().to("cuda"))
    back.load_state_dict(on_cpu.state_dict())
    _exactly(_states(back), _states(on_cuda))
    assert all(v.device.type == "cuda" for v in back.metric.cat.value)


def _tampered(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The state dict of a fed ReconKLRatio adapter, its one process's part edited by ``change``."""
    adapter = TorchMetricsAdapter(ReconKLRatio())
    adapter.update((torch.tensor([9.0]), torch.tensor([1.0])))
    state = adapter.state_dict()
    (per_rank,) = state["__metric_state_per_rank"]
    change(per_rank["metrics"][""])
    return state


MISMATCHES: list[tuple[Callable[[], Metric | MetricCollection], dict[str, Any], str]] = [
    (
        MeanSquaredError,
        TorchMetricsAdapter(ReconKLRatio()).state_dict(),
        r"Argument state_dict should hold the states of MeanSquaredError, "
        r"but given the states of ReconKLRatio",
    ),
    (
        lambda: MetricCollection({"ratio": ReconKLRatio(), "mse": MeanSquaredError()}),
        TorchMetricsAdapter(
            MetricCollection({"ratio": ReconKLRatio(), "error": MeanSquaredError()})
        ).state_dict(),
        r"Argument state_dict should hold the states of mse=MeanSquaredError, "
        r"ratio=ReconKLRatio, but given the states of error=MeanSquaredError, ratio=ReconKLRatio",
    ),
    (
        lambda: MetricCollection({"ratio": ReconKLRatio()}),
        TorchMetricsAdapter(ReconKLRatio()).state_dict(),
        r"Argument state_dict should hold the states of ratio=ReconKLRatio, "
        r"but given the states of ReconKLRatio",
    ),
    (
        ReconKLRatio,
        _tampered(lambda e: e["states"].update(total=e["states"].pop("kl_sum"))),
        r"Argument state_dict should hold the states \['kl_sum', 'recon_sum'\] of "
        r"ReconKLRatio, but given \['recon_sum', 'total'\]",
    ),
    (
        ReconKLRatio,
        _tampered(lambda e: e["states"].update(kl_sum=[torch.tensor(1.0)])),
        r"Argument state_dict should hold a Tensor for the state kl_sum of ReconKLRatio, "
        r"but given list",
    ),
    (
        ReconKLRatio,
        _tampered(lambda e: e.update(update_count=-1)),
        r"Argument state_dict should hold a non-negative int update count for ReconKLRatio, "
        r"but given -1",
    ),
    (
        ReconKLRatio,
        _tampered(lambda e: e["states"].update(recon_sum=torch.full((3,), 0.5))),
        r"Argument state_dict should hold a tensor of shape \(\) for the state recon_sum of "
        r"ReconKLRatio, but given shape \(3,\)$",
    ),
    (
        ReconKLRatio,
        _tampered(lambda e: e["states"].update(kl_sum=torch.tensor(1 + 2j))),
        r"Argument state_dict should hold a tensor of a floating-point dtype for the state "
        r"kl_sum of ReconKLRatio, but given dtype torch.complex64$",
    ),
    (
        ReconKLRatio,
        Average().state_dict(),  # an Ignite metric's
        r"Argument state_dict should be a TorchMetricsAdapter.state_dict\(\), "
        r"but given OrderedDict with keys \['accumulator', 'num_examples'\]",
    ),
]


@pytest.mark.parametrize(("make", "state", "message"), MISMATCHES)
def test_mismatched_state_dict_raises_and_changes_nothing(
    make: Callable[[], Metric | MetricCollection], state: dict[str, Any], message: str
) -> None:
    adapter = TorchMetricsAdapter(make())
    adapter.metric.update(torch.tensor([4.0, 5.0]), torch.tensor([1.0, 3.0]))
    before, value = _states(adapter), adapter.compute()
    with pytest.raises(ValueError, match=message):
        adapter.load_state_dict(state)
    _exactly(_states(adapter), before)
    _exactly(adapter.compute(), value)


def _fed_state(metric: Metric, *batch: torch.Tensor) -> dict[str, Any]:
    adapter = TorchMetricsAdapter(metric)
    adapter.update(batch if len(batch) > 1 else batch[0])
    return adapter.state_dict()


def _edited(state: dict[str, Any], **states: torch.Tensor) -> dict[str, Any]:
    (per_rank,) = state["__metric_state_per_rank"]
    per_rank["metrics"][""]["states"].update(states)
    return state


LATENT = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 0.0, 3.0]])
SHAPE_MISMATCHES: list[tuple[Callable[[], Metric], dict[str, Any], str]] = [
    (
        MeanMetric,
        _edited(_fed_state(MeanMetric(), torch.tensor([1.0, 2.0])), weight=torch.ones(3)),
        r"^Argument state_dict should hold a tensor of shape \(\) for the state weight of "
        r"MeanMetric, but given shape \(3,\)$",
    ),
    (
        ActiveUnits,
        _edited(_fed_state(ActiveUnits(), LATENT), total=torch.tensor(2.0)),
        r"^Argument state_dict should hold a tensor of an integer dtype for the state total of "
        r"ActiveUnits, but given dtype torch.float32$",
    ),
    (
        ActiveUnits,
        _edited(_fed_state(ActiveUnits(), LATENT), total=torch.tensor([2, 2])),
        r"^Argument state_dict should hold a tensor of shape \(\) for the state total of "
        r"ActiveUnits, but given shape \(2,\)$",
    ),
    (
        ActiveUnits,
        _edited(_fed_state(ActiveUnits(), LATENT), sum_mu_sq=torch.zeros(3, dtype=torch.float64)),
        r"^Argument state_dict should hold states sum_mu, sum_mu_sq, shift of one latent shape "
        r"for ActiveUnits, but given sum_mu \(4,\), sum_mu_sq \(3,\), shift \(4,\)$",
    ),
    (
        KLPerDimension,
        _edited(_fed_state(KLPerDimension(), LATENT, LATENT), total=torch.tensor([2])),
        r"^Argument state_dict should hold a tensor of shape \(\) for the state total of "
        r"KLPerDimension, but given shape \(1,\)$",
    ),
]


@pytest.mark.parametrize(("make", "state", "message"), SHAPE_MISMATCHES)
def test_states_of_another_shape_or_dtype_kind_are_refused_at_load(
    make: Callable[[], Metric], state: dict[str, Any], message: str
) -> None:
    adapter = TorchMetricsAdapter(make())
    before = _states(adapter)
    with pytest.raises(ValueError, match=message):
        adapter.load_state_dict(state)
    _exactly(_states(adapter), before)


def test_latent_shaped_states_load_fresh_fed_or_reset() -> None:
    for make, batch in ((ActiveUnits, (LATENT,)), (KLPerDimension, (LATENT, LATENT))):
        fed = _fed_state(make(), *batch)
        fresh = TorchMetricsAdapter(make()).state_dict()
        target = TorchMetricsAdapter(make())
        target.load_state_dict(fed)
        _exactly(target.compute(), _fed_adapter(make, batch).compute())
        target.load_state_dict(fresh)  # a fresh metric's 0-dim sums load into a fed one
        _exactly(_states(target), _states(TorchMetricsAdapter(make())))


def _fed_adapter(make: Callable[[], Metric], batch: tuple[torch.Tensor, ...]) -> Any:
    adapter = TorchMetricsAdapter(make())
    adapter.update(batch if len(batch) > 1 else batch[0])
    return adapter


def test_failed_load_leaves_the_members_it_checked_untouched() -> None:
    # The first member matches; the second's states do not: nothing may be loaded.
    def two() -> MetricCollection:
        return MetricCollection({"a": ReconKLRatio(), "b": ReconKLRatio()})

    saved = TorchMetricsAdapter(two())
    saved.update((torch.tensor([1.0]), torch.tensor([2.0])))
    state = saved.state_dict()
    (per_rank,) = state["__metric_state_per_rank"]
    del per_rank["metrics"]["b"]["states"]["kl_sum"]
    adapter = TorchMetricsAdapter(two())
    adapter.update((torch.tensor([7.0]), torch.tensor([3.0])))
    before = _states(adapter)
    with pytest.raises(ValueError, match=r"of b=ReconKLRatio, but given \['recon_sum'\]"):
        adapter.load_state_dict(state)
    _exactly(_states(adapter), before)


@pytest.mark.slow
def test_two_gloo_ranks_each_restore_their_own_states(tmp_path: Path) -> None:
    ranks = spawn_ranks(Path(_dist_checkpoint.__file__), tmp_path)

    for rank in ranks:
        _exactly(rank["loaded"], rank["saved"])
    assert not torch.equal(
        ranks[0]["saved"]["ratio"]["kl_sum"], ranks[1]["saved"]["ratio"]["kl_sum"]
    )
    batches = _dist_checkpoint.make_batches()
    single = _dist_checkpoint.make_adapter()
    for batch in batches:
        single.update(batch)
    expected = single.compute()
    for rank in ranks:
        assert rank["result"]["au"].item() == expected["au"].item() == 2
        torch.testing.assert_close(rank["result"], expected, rtol=1e-12, atol=1e-12)
