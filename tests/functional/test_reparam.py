"""reparameterize: statistics, exact noise reuse, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from vaekit.functional import reparameterize


def test_equals_mu_plus_std_times_the_generators_noise():
    mu, log_var = torch.randn(4, 3), torch.randn(4, 3)
    z = reparameterize(mu, log_var, generator=torch.Generator().manual_seed(7))
    eps = torch.randn(4, 3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(z, mu + eps * torch.exp(0.5 * log_var))


def test_generator_reproducibility_and_independence_of_global_rng():
    mu, log_var = torch.zeros(2, 5), torch.zeros(2, 5)
    a = reparameterize(mu, log_var, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(123)
    b = reparameterize(mu, log_var, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, reparameterize(mu, log_var))


def test_sample_statistics():
    mu = torch.tensor([-2.0, 0.0, 3.0])
    log_var = torch.tensor([-2.0, 0.0, 1.5])
    n = 200_000
    z = reparameterize(mu, log_var, n_samples=n, generator=torch.Generator().manual_seed(0))
    assert z.shape == (n, 3)
    std = torch.exp(0.5 * log_var)
    # 6 standard errors: a false failure has probability ~1e-9 per element
    assert ((z.double().mean(0) - mu).abs() < 6 * std / n**0.5).all()
    se_std = std / (2 * n) ** 0.5
    assert ((z.double().std(0) - std).abs() < 6 * se_std).all()


def test_gradients_are_the_pathwise_derivatives():
    mu = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    log_var = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    z = reparameterize(mu, log_var, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z.sum().backward()
    assert mu.grad is not None
    assert log_var.grad is not None
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    torch.testing.assert_close(log_var.grad, 0.5 * eps * torch.exp(0.5 * log_var.detach()))


def test_gradcheck_with_fixed_noise():
    mu = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    log_var = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)

    def fn(m, lv):
        return reparameterize(m, lv, n_samples=2, generator=torch.Generator().manual_seed(0))

    assert torch.autograd.gradcheck(fn, (mu, log_var))
    assert torch.autograd.gradgradcheck(fn, (mu, log_var))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_keeps_the_input_dtype(dtype):
    z = reparameterize(torch.zeros(2, 3, dtype=dtype), torch.zeros(2, 3, dtype=dtype))
    assert z.dtype == dtype


def test_n_samples_shape_and_broadcasting():
    mu, log_var = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), -1e4)
    z = reparameterize(mu + 2, log_var, n_samples=5)
    assert z.shape == (5, 2, 3, 4, 4)
    assert (z == 2).all()


def test_errors():
    with pytest.raises(ValueError, match=r"Arguments mu and log_var should have the same shape"):
        reparameterize(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(
        ValueError, match=r"Argument n_samples should be a positive int, but given 0"
    ):
        reparameterize(torch.zeros(2), torch.zeros(2), n_samples=0)
    with pytest.raises(TypeError, match=r"Argument n_samples should be an int, but given float"):
        reparameterize(torch.zeros(2), torch.zeros(2), n_samples=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Argument mu should be a floating-point tensor"):
        reparameterize(torch.zeros(2, dtype=torch.long), torch.zeros(2))
