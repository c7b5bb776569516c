"""ActiveUnits: Burda et al.'s count from float64 shifted sums, exact across batches and merges."""

from __future__ import annotations

import pytest
import torch
from torchmetrics import MetricCollection

from tests.metrics._threads import ThreadWorld
from vaekit.functional.monitors import _active_units_variance
from vaekit.metrics import ActiveUnits

F64 = torch.float64


def _mu(n: int, seed: int, offset: float = 0.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    scales = torch.tensor([0.0, 0.05, 0.2, 1.0], dtype=dtype)  # variances 0, 0.0025, 0.04, 1
    g = torch.Generator().manual_seed(seed)
    return offset + torch.randn(n, 4, generator=g, dtype=dtype) * scales


def _variance(metric: ActiveUnits) -> torch.Tensor:
    return _active_units_variance(metric.sum_mu, metric.sum_mu_sq, metric.total)


@pytest.mark.parametrize(("threshold", "expected"), [(0.01, 2), (0.001, 3), (0.5, 1), (2.0, 0)])
def test_count_against_reference(threshold: float, expected: int) -> None:
    mu = _mu(4000, 0)
    metric = ActiveUnits(threshold=threshold)
    for chunk in mu.split(512):
        metric.update(chunk)
    reference = (mu.double().var(dim=0, correction=0) > threshold).sum()
    assert metric.compute().item() == reference.item() == expected
    assert metric.compute().dtype == torch.int64


def test_latent_of_any_rank() -> None:
    mu = torch.randn(64, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    mu[:, 0] = 0.5  # one channel collapsed onto a constant
    metric = ActiveUnits()
    metric.update(mu[:40])
    metric.update(mu[40:])
    assert metric.compute().item() == 9
    torch.testing.assert_close(_variance(metric), mu.double().var(dim=0, correction=0))


def test_large_mean_keeps_its_digits() -> None:
    # float64 inputs with mean 1e8 and spread 1 over many batches: raw moments would cancel.
    mu = 1e8 + torch.randn(3000, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    metric = ActiveUnits(threshold=0.9)
    for chunk in mu.split(100):
        metric(chunk)  # forward: the shift survives its internal reset
    reference = (mu - 1e8).var(dim=0, correction=0)  # the subtraction is exact (Sterbenz)
    torch.testing.assert_close(_variance(metric), reference, rtol=1e-12, atol=0)


def _fresh_states() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in ActiveUnits().metric_state.items()}


def test_shift_is_the_first_batch_mean_and_reset_restores_a_new_metric() -> None:
    metric = ActiveUnits()
    first = _mu(8, 3, offset=5.0)
    metric.update(first)
    torch.testing.assert_close(metric.shift, first.double().mean(dim=0))
    metric.reset()
    torch.testing.assert_close(dict(metric.metric_state), _fresh_states(), rtol=0, atol=0)
    second = _mu(6, 4, offset=-5.0)
    metric.update(second)
    torch.testing.assert_close(metric.shift, second.double().mean(dim=0))
    torch.testing.assert_close(_variance(metric), second.double().var(dim=0, correction=0))


def _poisoned(bad: float) -> torch.Tensor:
    """Clean data with 2 active units (variances 0.04 and 1), one sample spoilt by ``bad``."""
    mu = _mu(64, 9)
    mu[5, 2] = bad
    return mu


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("position", ["first", "later"])
def test_non_finite_samples_are_left_out_with_a_warning(bad: float, position: str) -> None:
    clean = _mu(64, 10)
    spoilt = _poisoned(bad)
    batches = [spoilt, clean] if position == "first" else [clean, spoilt]
    metric = ActiveUnits()
    for batch in batches:
        if batch is spoilt:
            with pytest.warns(
                RuntimeWarning,
                match=r"^ActiveUnits left out 1 of the 64 samples of mu that hold NaN or "
                r"infinite values \(nan_strategy='warn'\)$",
            ):
                metric.update(batch)
        else:
            metric.update(batch)
    kept = torch.cat([b[torch.isfinite(b).all(dim=1)] for b in batches]).double()
    assert metric.total.item() == 127
    torch.testing.assert_close(_variance(metric), kept.var(dim=0, correction=0))
    assert metric.compute().item() == 2
    metric.reset()  # and the next epoch of clean data starts afresh
    metric.update(clean)
    assert metric.compute().item() == 2
    torch.testing.assert_close(metric.shift, clean.double().mean(dim=0))


def test_ignore_leaves_out_silently_and_error_changes_nothing() -> None:
    ignoring = ActiveUnits(nan_strategy="ignore")
    ignoring.update(_poisoned(float("nan")))  # filterwarnings=error: no warning
    assert (ignoring.total.item(), ignoring.compute().item()) == (63, 2)

    strict = ActiveUnits(nan_strategy="error")
    strict.update(_mu(10, 11, offset=2.0))
    before = {k: v.clone() for k, v in strict.metric_state.items()}
    message = (
        r"^Argument mu should hold finite values with nan_strategy='error', "
        r"but given 1 of 64 samples with NaN or infinite values$"
    )
    with pytest.raises(ValueError, match=message):
        strict.update(_poisoned(float("inf")))
    with pytest.raises(ValueError, match=message):
        strict(_poisoned(float("nan")))  # forward: checked before the states are swapped out
    torch.testing.assert_close(dict(strict.metric_state), before, rtol=0, atol=0)


def test_all_samples_of_the_first_batch_non_finite_set_no_shift() -> None:
    metric = ActiveUnits(nan_strategy="ignore")
    metric.update(torch.full((4, 3), float("nan")))
    torch.testing.assert_close(dict(metric.metric_state), _fresh_states(), rtol=0, atol=0)
    mu = _mu(16, 12, offset=7.0)[:, :3]
    metric.update(mu)
    torch.testing.assert_close(metric.shift, mu.double().mean(dim=0))


def test_nan_strategy_is_checked() -> None:
    with pytest.raises(
        ValueError,
        match=r"^Argument nan_strategy should be one of 'warn', 'ignore', 'error', "
        r"but given 'disable'$",
    ):
        ActiveUnits(nan_strategy="disable")


def test_forward_of_another_latent_shape_is_refused_and_keeps_the_sums() -> None:
    metric = ActiveUnits()
    metric(_mu(8, 13))
    before = {k: v.clone() for k, v in metric.metric_state.items()}
    with pytest.raises(ValueError, match=r"Argument mu should have shape \(B, 4\)"):
        metric(torch.zeros(8, 3))
    torch.testing.assert_close(dict(metric.metric_state), before, rtol=0, atol=0)


def test_input_on_another_device_is_refused() -> None:
    metric = ActiveUnits()
    with pytest.raises(
        ValueError,
        match=r"^Argument mu should be on the metric's device cpu, but given a tensor on meta$",
    ):
        metric.update(torch.zeros(4, 2, device="meta"))
    torch.testing.assert_close(dict(metric.metric_state), _fresh_states(), rtol=0, atol=0)


def test_empty_first_batch_is_a_no_op() -> None:
    metric = ActiveUnits()
    metric.update(torch.zeros(0, 4))
    mu = _mu(10, 5, offset=3.0)
    metric.update(mu)
    torch.testing.assert_close(metric.shift, mu.double().mean(dim=0))
    assert metric.total.item() == 10


def test_merge_rebases_onto_this_metrics_shift() -> None:
    a, b = _mu(30, 6, offset=100.0), _mu(20, 7, offset=-100.0)
    left, right = ActiveUnits(), ActiveUnits()
    left.update(a)
    right.update(b)
    assert left.compute().item() == 2
    left.merge_state(right)  # means 200 apart: the merged variance is large everywhere
    both = torch.cat([a, b]).double()
    torch.testing.assert_close(_variance(left), both.var(dim=0, correction=0))
    assert left.compute().item() == 4  # a stale cache would still say 2


def test_merge_dict_without_shift_holds_plain_sums() -> None:
    a, b = _mu(30, 8, offset=2.0), _mu(20, 9, offset=2.0)
    metric = ActiveUnits()
    metric.update(a)
    raw = {
        "total": torch.tensor(20),
        "sum_mu": b.double().sum(0),
        "sum_mu_sq": b.double().square().sum(0),
    }
    metric.merge_state(raw)
    torch.testing.assert_close(
        _variance(metric), torch.cat([a, b]).double().var(dim=0, correction=0)
    )


def test_compute_groups_share_the_states() -> None:
    mu = _mu(500, 10, offset=1.0)
    collection = MetricCollection({"au_low": ActiveUnits(threshold=0.001), "au": ActiveUnits()})
    for chunk in mu.split(100):
        collection.update(chunk)
    assert {k: v.item() for k, v in collection.compute().items()} == {"au_low": 3, "au": 2}


def test_threshold_errors() -> None:
    with pytest.raises(TypeError, match="Argument threshold should be a float, but given str"):
        ActiveUnits(threshold="0.01")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"Argument threshold should be a finite number >= 0, but given -0.1"
    ):
        ActiveUnits(threshold=-0.1)
    with pytest.raises(
        ValueError, match=r"Argument threshold should be a finite number >= 0, but given inf"
    ):
        ActiveUnits(threshold=float("inf"))


def test_shape_errors() -> None:
    metric = ActiveUnits()
    with pytest.raises(TypeError, match="Argument mu should be a floating-point tensor"):
        metric.update(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="Argument mu should have a batch dimension"):
        metric.update(torch.tensor(1.0))
    metric.update(torch.randn(3, 4))
    with pytest.raises(
        ValueError,
        match=r"Argument mu should have shape \(B, 4\) like the earlier updates, "
        r"but given mu.shape=\(3, 5\)",
    ):
        metric.update(torch.randn(3, 5))
    other = ActiveUnits()
    other.update(torch.randn(3, 2, 2))
    with pytest.raises(
        ValueError,
        match=r"Argument incoming_state should have latent shape \(4,\), "
        r"but given latent shape \(2, 2\)",
    ):
        metric.merge_state(other)


def test_sync_moves_the_sums_to_the_shift_of_the_first_process_with_one() -> None:
    # Process 0 has seen nothing; processes 1 and 2 have means 1e6 apart.
    data = [None, _mu(7, 11, offset=1e6, dtype=F64), _mu(5, 12, offset=2e6, dtype=F64)]
    world = ThreadWorld(3)

    def rank(r: int) -> dict[str, torch.Tensor]:
        metric = ActiveUnits(dist_sync_fn=world.gather, distributed_available_fn=lambda: True)
        if data[r] is not None:
            metric.update(data[r])
        before = {k: v.clone() for k, v in metric.metric_state.items()}
        with metric.sync_context(dist_sync_fn=world.gather):
            synced = {k: v.clone() for k, v in metric.metric_state.items()}
        assert all(torch.equal(v, before[k]) for k, v in metric.metric_state.items())
        return synced

    results = world.run(rank)
    shift = data[1].mean(dim=0)
    both = torch.cat([data[1], data[2]]) - shift
    for synced in results:
        assert isinstance(synced, dict), synced
        assert torch.equal(synced["shift"], shift)
        assert synced["total"].item() == 12
        torch.testing.assert_close(synced["sum_mu"], both.sum(dim=0), rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(
            synced["sum_mu_sq"], both.square().sum(dim=0), rtol=1e-12, atol=0
        )
    assert all(torch.equal(results[0][k], results[2][k]) for k in results[0])  # type: ignore[index]
