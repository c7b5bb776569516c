"""reparameterize: statistics, exact noise reuse, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from vaekit.functional import reparameterize


def seeded(device, seed):
    return torch.Generator(device).manual_seed(seed)


def posterior(shape, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=g).to(device, dtype) for _ in range(2))


def test_equals_mu_plus_std_times_the_generators_noise(device, dtype):
    mu, log_var = posterior((4, 3), device, dtype)
    z = reparameterize(mu, log_var, generator=seeded(device, 7))
    eps = torch.randn(4, 3, generator=seeded(device, 7), device=device, dtype=dtype)
    assert (z.dtype, z.device) == (dtype, device)
    noise = eps.double() * torch.exp(0.5 * log_var.double())
    # A few roundings of the terms in dtype: the sum may cancel, so the bound is the terms'.
    bound = 4 * torch.finfo(dtype).eps * (mu.double().abs() + noise.abs())
    assert ((z.double() - (mu.double() + noise)).abs() <= bound).all()


def test_generator_reproducibility_and_independence_of_global_rng(device):
    mu, log_var = torch.zeros(2, 5, device=device), torch.zeros(2, 5, device=device)
    a = reparameterize(mu, log_var, generator=seeded(device, 3))
    torch.manual_seed(123)
    b = reparameterize(mu, log_var, generator=seeded(device, 3))
    assert torch.equal(a, b)
    assert not torch.equal(a, reparameterize(mu, log_var))


def test_sample_statistics(device, dtype):
    mu = torch.tensor([-2.0, 0.0, 3.0], device=device, dtype=dtype)
    log_var = torch.tensor([-2.0, 0.0, 1.5], device=device, dtype=dtype)
    n = 200_000
    z = reparameterize(mu, log_var, n_samples=n, generator=seeded(device, 0))
    assert z.shape == (n, 3)
    std = torch.exp(0.5 * log_var.double())
    # 6 standard errors: a false failure has probability ~1e-9 per element
    assert ((z.double().mean(0) - mu).abs() < 6 * std / n**0.5).all()
    se_std = std / (2 * n) ** 0.5
    assert ((z.double().std(0) - std).abs() < 6 * se_std).all()


def test_gradients_are_the_pathwise_derivatives(device):
    mu, log_var = (t.requires_grad_() for t in posterior((3, 4), device, torch.float64))
    z = reparameterize(mu, log_var, generator=seeded(device, 1))
    eps = torch.randn(3, 4, generator=seeded(device, 1), dtype=torch.float64, device=device)
    z.sum().backward()
    assert mu.grad is not None
    assert log_var.grad is not None
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    torch.testing.assert_close(log_var.grad, 0.5 * eps * torch.exp(0.5 * log_var.detach()))


def test_gradcheck_with_fixed_noise(device):
    mu, log_var = (t.requires_grad_() for t in posterior((2, 3), device, torch.float64))

    def fn(m, lv):
        return reparameterize(m, lv, n_samples=2, generator=seeded(device, 0))

    assert torch.autograd.gradcheck(fn, (mu, log_var))
    assert torch.autograd.gradgradcheck(fn, (mu, log_var))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_keeps_the_input_dtype(dtype, device):
    zeros = torch.zeros(2, 3, dtype=dtype, device=device)
    z = reparameterize(zeros, zeros)
    assert (z.dtype, z.device) == (dtype, device)


def test_n_samples_shape_and_broadcasting(device):
    mu = torch.zeros(2, 3, 4, 4, device=device)
    log_var = torch.full((2, 3, 4, 4), -1e4, device=device)
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
