"""The monitors' update/compute pairs against float64 and torch.distributions references."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import Normal, kl_divergence

from vaekit.functional.monitors import (
    _active_units_compute,
    _active_units_rebase,
    _active_units_update,
    _active_units_variance,
    _kl_per_dimension_compute,
    _kl_per_dimension_update,
    _recon_kl_ratio_update,
)

F64 = torch.float64


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ReconKLRatio


def test_recon_kl_ratio_update_sums_in_float64() -> None:
    recon, kl = _randn(7, 3).abs() * 100, _randn(7, 3, seed=1).abs()
    recon_sum, kl_sum = _recon_kl_ratio_update(recon, kl)
    assert recon_sum.dtype == kl_sum.dtype == F64
    assert recon_sum.shape == kl_sum.shape == ()
    torch.testing.assert_close(recon_sum, recon.double().sum())
    torch.testing.assert_close(kl_sum, kl.double().sum())


def test_recon_kl_ratio_update_detaches() -> None:
    recon = torch.ones(3, requires_grad=True)
    sums = _recon_kl_ratio_update(recon, recon * 2)
    assert not any(s.requires_grad for s in sums)


def test_recon_kl_ratio_update_errors() -> None:
    msg = r"Argument recon should be a torch\.Tensor, but given list"
    with pytest.raises(TypeError, match=msg):
        _recon_kl_ratio_update([1.0], torch.ones(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Argument kl should be a floating-point tensor"):
        _recon_kl_ratio_update(torch.ones(2), torch.ones(2, dtype=torch.int64))
    with pytest.raises(
        ValueError,
        match=r"Arguments recon and kl should have the same shape, "
        r"but given recon.shape=\(3,\) and kl.shape=\(1,\)",
    ):
        _recon_kl_ratio_update(torch.ones(3), torch.ones(1))


# ActiveUnits


@given(
    n=st.integers(1, 40),
    d=st.integers(1, 5),
    offset=st.floats(-1e3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_active_units_variance_is_population_variance(
    n: int, d: int, offset: float, seed: int
) -> None:
    mu = _randn(n, d, seed=seed, dtype=F64) * torch.linspace(0.0, 2.0, d, dtype=F64) + offset
    s1, s2, count, _ = _active_units_update(mu)
    variance = _active_units_variance(s1, s2, torch.tensor(count))
    reference = mu.var(dim=0, correction=0)
    torch.testing.assert_close(variance, reference, rtol=1e-9, atol=1e-12)


def test_active_units_update_default_shift_is_batch_mean() -> None:
    mu = _randn(5, 3) + 10
    s1, s2, n, shift = _active_units_update(mu)
    torch.testing.assert_close(shift, mu.double().mean(dim=0))
    torch.testing.assert_close(s1, torch.zeros(3, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(s2, (mu.double() - shift).square().sum(dim=0))
    assert n == 5


def test_active_units_update_empty_batch() -> None:
    s1, s2, n, shift = _active_units_update(torch.zeros(0, 2, 3))
    assert n == 0
    assert torch.equal(shift, torch.zeros(2, 3, dtype=F64))
    assert torch.equal(s1, torch.zeros(2, 3, dtype=F64))
    assert torch.equal(s2, torch.zeros(2, 3, dtype=F64))


def test_active_units_update_errors() -> None:
    with pytest.raises(TypeError, match="Argument mu should be a floating-point tensor"):
        _active_units_update(torch.ones(2, 3, dtype=torch.int32))
    with pytest.raises(
        ValueError,
        match=r"Argument mu should have a batch dimension, shape \(B, \*latent\), "
        "but given a 0-dimensional tensor",
    ):
        _active_units_update(torch.tensor(1.0))


@given(
    delta=st.floats(-1e3, 1e3),
    shift=st.floats(-1e3, 1e3),
    n=st.integers(1, 30),
    seed=st.integers(0, 2**16),
)
def test_active_units_rebase_equals_sums_about_the_new_shift(
    delta: float, shift: float, n: int, seed: int
) -> None:
    x = _randn(n, 2, seed=seed, dtype=F64) * 3 + shift
    old = torch.full((2,), shift, dtype=F64)
    s1, s2, count, _ = _active_units_update(x, old)
    r1, r2 = _active_units_rebase(s1, s2, torch.tensor(count), torch.full((2,), delta, dtype=F64))
    new = old - delta
    torch.testing.assert_close(r1, (x - new).sum(dim=0), rtol=1e-9, atol=1e-7)
    torch.testing.assert_close(r2, (x - new).square().sum(dim=0), rtol=1e-9, atol=1e-7)


def test_active_units_shift_avoids_cancellation() -> None:
    # Mean 1e8, spread 1: raw float64 moments cancel (1e16 against 1), shifted sums do not.
    mu = 1e8 + _randn(1000, 1, dtype=F64)
    reference = mu.var(dim=0, correction=0)
    s1, s2, n, _ = _active_units_update(mu)
    shifted = _active_units_variance(s1, s2, torch.tensor(n))
    torch.testing.assert_close(shifted, reference, rtol=1e-9, atol=0)
    r1, r2, _, _ = _active_units_update(mu, torch.zeros(1, dtype=F64))
    naive = _active_units_variance(r1, r2, torch.tensor(n))
    assert (naive - reference).abs().item() > 0.1  # the failure the shift prevents


def test_active_units_variance_is_never_negative() -> None:
    s1 = torch.tensor([3.0], dtype=F64)
    s2 = torch.tensor([4.5 - 1e-12], dtype=F64)  # rounding below (s1 / n)**2 * n
    assert _active_units_variance(s1, s2, torch.tensor(2)).item() == 0.0


def test_active_units_compute_counts_strictly_above_threshold() -> None:
    mu = torch.tensor([[0.0, 0.0, 0.0], [0.25, 2.0, 0.0]], dtype=F64)  # variances 1/64, 1, 0
    s1, s2, n, _ = _active_units_update(mu, torch.zeros(3, dtype=F64))
    total = torch.tensor(n)
    assert _active_units_compute(s1, s2, total, threshold=1 / 64).item() == 1
    assert _active_units_compute(s1, s2, total, threshold=0.0156).item() == 2
    assert _active_units_compute(s1, s2, total, threshold=0.0).item() == 2
    assert _active_units_compute(s1, s2, total, threshold=1.0).item() == 0
    assert _active_units_compute(s1, s2, total, threshold=0.0).dtype == torch.int64


# KLPerDimension


@pytest.mark.parametrize("shape", [(6,), (6, 3), (4, 2, 3, 3)])
def test_kl_per_dimension_against_torch_distributions(shape: tuple[int, ...]) -> None:
    mu, log_var = _randn(*shape), _randn(*shape, seed=1)
    kl_sum, n = _kl_per_dimension_update(mu, log_var)
    mu64, std64 = mu.double(), (0.5 * log_var.double()).exp()
    reference = kl_divergence(Normal(mu64, std64), Normal(0.0, 1.0))
    assert n == shape[0]
    assert kl_sum.dtype == F64
    torch.testing.assert_close(kl_sum, reference.sum(dim=0), rtol=1e-5, atol=1e-6)
    mean = _kl_per_dimension_compute(kl_sum, torch.tensor(n))
    torch.testing.assert_close(mean, reference.mean(dim=0), rtol=1e-5, atol=1e-6)


def test_kl_per_dimension_update_errors() -> None:
    with pytest.raises(TypeError, match=r"Argument log_var should be a torch\.Tensor"):
        _kl_per_dimension_update(torch.zeros(2, 2), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mu.shape=\(2, 2\) and log_var.shape=\(2, 3\)"):
        _kl_per_dimension_update(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="Argument mu should have a batch dimension"):
        _kl_per_dimension_update(torch.tensor(0.0), torch.tensor(0.0))
