"""ImportanceWeightedNLL against float64 references: any split over batches, merges and two
gloo processes equals one update; with it, the synced optimal variance of VAELoss."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests._distributed import spawn_ranks
from tests.metrics import _dist_likelihood as dist_script
from vaekit.functional import bits_per_dim
from vaekit.metrics import ImportanceWeightedNLL

HERE = Path(__file__).parent


def weights(k=9, n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, n, generator=g, dtype=torch.float64) * 4.0 - 100.0


def reference(log_weights):
    """-mean_i log(mean_k exp(log w_ki)) with the largest weight factored out, in float64."""
    w = log_weights.double()
    top = w.max(dim=0).values
    return -(top + (w - top).exp().mean(dim=0).log()).mean()


def metric64(*args: Any, **kwargs: Any) -> ImportanceWeightedNLL:
    """The metric with float64 results, to compare its float64 sums at float64's precision."""
    return ImportanceWeightedNLL(*args, **kwargs).set_dtype(torch.float64)


def test_compute_is_the_mean_negative_bound():
    metric = metric64()
    w = weights()
    metric.update(w)
    torch.testing.assert_close(metric.compute(), reference(w), rtol=1e-14, atol=0)
    assert metric.compute().dtype == torch.float64
    assert metric.nll_sum.dtype == torch.float64
    default = ImportanceWeightedNLL()  # float64 sums, a result in torchmetrics' float32
    default.update(w)
    assert default.compute().dtype == torch.float32
    assert default.nll_sum.dtype == torch.float64
    torch.testing.assert_close(default.compute(), reference(w).float())


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(0, 20), max_size=5))
def test_any_split_into_batches_equals_one_update(cuts):
    w = weights()
    whole = metric64()
    whole.update(w)
    split = metric64()
    bounds = [0, *sorted(cuts), 20]
    for lo, hi in itertools.pairwise(bounds):
        split.update(w[:, lo:hi])  # empty batches too
    torch.testing.assert_close(split.compute(), whole.compute(), rtol=1e-14, atol=0)


def test_merged_states_equal_one_update():
    w = weights()
    whole, a, b = metric64(), metric64(), metric64()
    whole.update(w)
    a.update(w[:, :7])
    b.update(w[:, 7:])
    a.compute()  # a cached result must not survive the merge
    a.merge_state(b)
    torch.testing.assert_close(a.compute(), whole.compute(), rtol=1e-14, atol=0)


def test_float32_weights_are_summed_in_float64():
    w = weights().float()
    metric = metric64()
    for i in range(20):
        metric.update(w[:, i : i + 1])
    torch.testing.assert_close(metric.compute(), reference(w), rtol=1e-14, atol=0)


def test_bits_per_dim():
    w = weights()
    nats = metric64()
    nats.update(w)
    for num_bins, data_range in ((None, (0.0, 1.0)), (256, (0.0, 1.0)), (256, (-1.0, 1.0))):
        metric = metric64("bits_per_dim", num_dims=64, num_bins=num_bins, data_range=data_range)
        metric.update(w)
        want = bits_per_dim(nats.compute(), 64, num_bins=num_bins, data_range=data_range)
        torch.testing.assert_close(metric.compute(), want, rtol=1e-15, atol=0)
    uniform = metric64("bits_per_dim", num_dims=3)
    uniform.update(torch.full((4, 5), -3 * math.log(256), dtype=torch.float64))
    assert uniform.compute().item() == 8.0


def test_forward_returns_the_batch_and_accumulates():
    w = weights()
    metric = metric64()
    torch.testing.assert_close(metric(w[:, :5]), reference(w[:, :5]))
    metric(w[:, 5:])
    torch.testing.assert_close(metric.compute(), reference(w))
    metric.reset()
    assert metric.total.item() == 0


def test_before_any_update_it_warns_and_is_nan():
    metric = metric64()
    with pytest.warns(UserWarning, match="was called before the ``update`` method"):
        assert torch.isnan(metric.compute())


def test_inputs_are_detached():
    w = weights().requires_grad_()
    metric = metric64()
    metric.update(w)
    assert not metric.nll_sum.requires_grad


def test_errors():
    with pytest.raises(
        ValueError, match=r"Argument unit should be one of 'nats', 'bits_per_dim', but given 'bits'"
    ):
        ImportanceWeightedNLL("bits")
    with pytest.raises(
        ValueError,
        match=r"Argument num_dims should be given with unit='bits_per_dim' \(the elements per "
        r"data point\), but given None",
    ):
        ImportanceWeightedNLL("bits_per_dim")
    for name in ("num_dims", "num_bins"):
        with pytest.raises(
            ValueError, match=rf"Argument {name} should be None with unit='nats' \(it converts"
        ):
            ImportanceWeightedNLL(**{name: 256})
    with pytest.raises(ValueError, match=r"Argument num_dims should be a positive int, but given"):
        ImportanceWeightedNLL("bits_per_dim", num_dims=0)
    with pytest.raises(TypeError, match=r"Argument num_dims should be an int, but given float"):
        ImportanceWeightedNLL("bits_per_dim", num_dims=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Argument num_bins should be an int >= 2, but given 1"):
        ImportanceWeightedNLL("bits_per_dim", num_dims=2, num_bins=1)
    with pytest.raises(ValueError, match=r"Argument data_range should be a pair"):
        ImportanceWeightedNLL("bits_per_dim", num_dims=2, data_range=(0.0, 0.0))
    metric = metric64()
    for bad in (torch.zeros(5), torch.zeros(0, 3), torch.zeros(2, 3, 1)):
        with pytest.raises(
            ValueError, match=r"Argument log_weights should have shape \(K, B\) with K >= 1"
        ):
            metric.update(bad)
    with pytest.raises(TypeError, match=r"Argument log_weights should be a floating-point"):
        metric.update(torch.zeros(2, 3, dtype=torch.long))
    assert metric.total.item() == 0  # nothing was added


def test_a_batch_that_forward_refuses_keeps_the_sums():
    w = weights()
    metric = metric64()
    metric.update(w)
    with pytest.raises(ValueError, match=r"Argument log_weights should have shape \(K, B\)"):
        metric(torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(metric.compute(), reference(w))
    assert metric.update_count == 1


# ---------------------------------------------------------------- two gloo processes


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return spawn_ranks(HERE / "_dist_likelihood.py", tmp_path_factory.mktemp("likelihood"))


@pytest.mark.slow
def test_two_ranks_equal_one_process(ranks: list[dict[str, Any]]) -> None:
    # The metric over uneven shards equals one update with every batch.
    w = torch.cat(dist_script.make_weights(), dim=1)
    nats = metric64()
    nats.update(w)
    for r in ranks:
        torch.testing.assert_close(r["nats"], nats.compute(), rtol=1e-14, atol=0)
        torch.testing.assert_close(r["bits"], bits_per_dim(nats.compute(), 12), rtol=1e-14, atol=0)
    # sync_dist=True: the optimal variance of the global batch on every rank, so the ranks'
    # summed terms add up to one process's on the concatenated batch, gradients included.
    x_hat, x = dist_script.make_batch()
    single = dist_script.run_loss(x_hat, x)
    for recon_var in dist_script.RECON_VARS:
        synced = [r["synced"] for r in ranks]
        total = synced[0][recon_var] + synced[1][recon_var]
        torch.testing.assert_close(total, single[recon_var], rtol=1e-13, atol=0)
        grad = torch.cat([s[f"{recon_var}_grad"] for s in synced])
        torch.testing.assert_close(grad, single[f"{recon_var}_grad"], rtol=1e-12, atol=1e-15)
        local = ranks[0]["local"][recon_var] + ranks[1]["local"][recon_var]
        assert abs(local - single[recon_var]) > 1e-3  # each rank's own variance is not it
