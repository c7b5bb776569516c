"""KLPerDimension: the library's exact per-element KL, averaged over all samples seen."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from tests.metrics._checks import assert_posterior_updates_are_checked
from vaekit.functional import kl_divergence_normal
from vaekit.metrics import KLPerDimension


def _pair(n: int, seed: int, *latent: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *latent, generator=g), torch.randn(n, *latent, generator=g)


@pytest.mark.parametrize("dtype", [None, torch.float64])
@pytest.mark.parametrize("latent", [(), (5,), (2, 4, 4)])
def test_mean_kl_per_element_against_torch_distributions(
    latent: tuple[int, ...], dtype: torch.dtype | None
) -> None:
    mu, log_var = _pair(50, 0, *latent)
    metric = KLPerDimension() if dtype is None else KLPerDimension().set_dtype(dtype)
    for m, lv in zip(mu.split(16), log_var.split(16), strict=True):
        metric.update(m, lv)
    q = Normal(mu.double(), (0.5 * log_var.double()).exp())
    reference = kl_divergence(q, Normal(0.0, 1.0)).mean(dim=0)
    result = metric.compute()
    assert result.shape == latent
    assert result.dtype == (dtype or torch.float32)  # torchmetrics' default, or set_dtype's
    assert torch.allclose(result, reference.to(result.dtype), rtol=1e-5, atol=1e-6)


def test_uses_the_library_kl() -> None:
    mu, log_var = _pair(9, 1, 3)
    log_var[:, 0] = 1e-4  # where the textbook formula loses its digits
    metric = KLPerDimension().set_dtype(torch.float64)  # the float64 mean of the sums
    metric.update(mu, log_var)
    library = kl_divergence_normal(mu, log_var, reduction="none").double().mean(dim=0)
    torch.testing.assert_close(metric.compute(), library, rtol=1e-12, atol=0)


def test_sum_over_elements_is_the_batchmean_kl() -> None:
    mu, log_var = _pair(32, 2, 6)
    metric = KLPerDimension()
    metric.update(mu, log_var)
    batchmean = kl_divergence_normal(mu, log_var)  # float32, as the result
    torch.testing.assert_close(metric.compute().sum(), batchmean, rtol=1e-6, atol=0)


def test_collapsed_units_show_zero_kl() -> None:
    mu, log_var = _pair(20, 3, 4)
    mu[:, 1], log_var[:, 1] = 0.0, 0.0  # unit 1 sits on the prior
    metric = KLPerDimension()
    metric.update(mu, log_var)
    assert metric.compute()[1].item() == 0.0
    assert (metric.compute() < 0.01).sum().item() == 1


def test_errors() -> None:
    metric = KLPerDimension()
    assert_posterior_updates_are_checked(metric)
    assert metric.total.item() == 2  # the refused updates added nothing


def test_merge_state_checks_the_latent_shape() -> None:
    left, right = KLPerDimension(), KLPerDimension()
    left.update(*_pair(2, 5, 3))
    right.update(*_pair(2, 6, 1))
    msg = r"Argument incoming_state should have latent shape \(3,\), but given latent shape \(1,\)"
    with pytest.raises(ValueError, match=msg):
        left.merge_state(right)
    with pytest.raises(ValueError, match=msg):
        left.merge_state(right.metric_state)
    fresh = KLPerDimension()
    fresh.merge_state(right)
    with pytest.raises(ValueError, match=r"should have shape \(B, 1\) like the earlier updates"):
        fresh.update(*_pair(2, 7, 3))


def test_loaded_states_keep_the_latent_shape_check() -> None:
    saved = KLPerDimension()
    saved.persistent(True)  # torchmetrics' own checkpoint route: states in the module state dict
    saved.update(*_pair(2, 8, 3))
    loaded = KLPerDimension()
    loaded.persistent(True)
    loaded.load_state_dict(saved.state_dict())
    with pytest.raises(ValueError, match=r"should have shape \(B, 3\) like the earlier updates"):
        loaded.update(*_pair(2, 9, 1))  # would broadcast into the (3,) sums otherwise
    loaded.update(*_pair(2, 9, 3))
    saved.update(*_pair(2, 9, 3))
    torch.testing.assert_close(loaded.compute(), saved.compute(), rtol=0, atol=0)


@pytest.mark.parametrize("call", ["update", "forward"])
def test_inputs_on_another_device_are_refused_and_keep_the_sums(call: str) -> None:
    metric = KLPerDimension()
    metric.update(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2))
    feed = metric.update if call == "update" else metric
    with pytest.raises(
        ValueError,
        match=r"^Argument log_var should be on the metric's device cpu, "
        r"but given a tensor on meta$",
    ):
        feed(torch.zeros(4, 2), torch.zeros(4, 2, device="meta"))
    torch.testing.assert_close(metric.compute(), torch.tensor([0.5, 0.0]), rtol=0, atol=0)
