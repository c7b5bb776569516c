"""LearnedVariance: the reference's soft clip, convergence to the optimal variance, a child of
VAELoss that its optimiser and its checkpoint see."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from vaekit import LearnedVariance, VAELoss
from vaekit.functional import vae_loss


def test_the_variance_is_the_soft_clipped_log_sigma_of_the_reference():
    module = LearnedVariance((3, 1, 1), init_log_sigma=0.0)
    with torch.no_grad():
        module.log_sigma.copy_(torch.tensor([-9.0, -6.0, 1.5]).reshape(3, 1, 1))
    log_sigma = -6.0 + np.logaddexp(0.0, np.array([-9.0, -6.0, 1.5]) + 6.0)  # m + softplus
    want = torch.tensor(np.exp(2 * log_sigma), dtype=torch.float32).reshape(3, 1, 1)
    torch.testing.assert_close(module(), want)
    assert module().shape == (3, 1, 1)
    unclipped = LearnedVariance(init_log_sigma=-9.0, min_log_sigma=None)
    torch.testing.assert_close(unclipped(), torch.tensor(math.exp(-18.0)))


@pytest.mark.parametrize("shape", [(), (3, 1, 1)])
def test_trained_alone_it_converges_to_log_root_mse(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 4, 4, generator=g, dtype=torch.float64)
    scales = torch.tensor([0.05, 0.2, 0.6], dtype=torch.float64).reshape(3, 1, 1)
    x_hat = x + scales * torch.randn(64, 3, 4, 4, generator=g, dtype=torch.float64)  # fixed
    variance = LearnedVariance(shape).double()
    loss_fn = VAELoss("gaussian", recon_var=variance)
    optimiser = torch.optim.Adam(loss_fn.parameters(), lr=0.05)
    mu = log_var = torch.zeros(64, 2, dtype=torch.float64)
    for _ in range(600):
        optimiser.zero_grad()
        loss_fn(x_hat, x, mu, log_var).loss.backward()
        optimiser.step()
    dims = (0, 1, 2, 3) if shape == () else (0, 2, 3)
    root_mse = (x - x_hat).square().mean(dim=dims).sqrt()
    learned = 0.5 * variance().detach().log().reshape(-1)
    torch.testing.assert_close(learned, root_mse.log().reshape(-1), rtol=0, atol=1e-4)


def test_vae_loss_module_registers_it_and_checkpoints_it():
    variance = LearnedVariance((2, 1), init_log_sigma=-1.0)
    loss_fn = VAELoss("gaussian", recon_var=variance)
    assert [name for name, _ in loss_fn.named_parameters()] == ["recon_var.log_sigma"]
    assert list(loss_fn.state_dict()) == ["recon_var.log_sigma"]
    with torch.no_grad():
        variance.log_sigma.add_(0.25)
    buffer = io.BytesIO()
    torch.save(loss_fn.state_dict(), buffer)
    buffer.seek(0)
    fresh = VAELoss("gaussian", recon_var=LearnedVariance((2, 1)))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(fresh.recon_var(), variance())


@pytest.mark.parametrize("recon", ["gaussian", "discretized_gaussian", "discretized_logistic"])
def test_the_module_equals_the_function_given_its_output(recon):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (4, 2, 3), generator=g) / 255.0
    x_hat = torch.rand(4, 2, 3, generator=g, requires_grad=True)
    mu, log_var = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    variance = LearnedVariance((2, 1), init_log_sigma=-2.0)
    got = VAELoss(recon, recon_var=variance)(x_hat, x, mu, log_var)
    want = vae_loss(x_hat, x, mu, log_var, recon=recon, recon_var=variance())
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    (grad,) = torch.autograd.grad(got.loss, variance.log_sigma)
    assert grad.abs().sum() > 0


def test_repr():
    want = "LearnedVariance(shape=(3, 1, 1), min_log_sigma=-6.0)"
    assert repr(LearnedVariance((3, 1, 1))) == want
    assert "(recon_var): LearnedVariance(shape=(), min_log_sigma=None)" in repr(
        VAELoss("gaussian", recon_var=LearnedVariance(min_log_sigma=None))
    )


def test_errors():
    with pytest.raises(TypeError, match=r"Argument shape should be a tuple of ints, but given int"):
        LearnedVariance(3)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"Argument shape should be a tuple of ints, but given \(3, 1.0\)"
    ):
        LearnedVariance((3, 1.0))  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"Argument shape should be a tuple of non-negative ints, but given \(-1,\)",
    ):
        LearnedVariance((-1,))
    for bad in (math.inf, math.nan):
        with pytest.raises(ValueError, match=r"Argument init_log_sigma should be a finite number"):
            LearnedVariance(init_log_sigma=bad)
    with pytest.raises(TypeError, match=r"Argument init_log_sigma should be a float, but given"):
        LearnedVariance(init_log_sigma="0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Argument min_log_sigma should be a finite number"):
        LearnedVariance(min_log_sigma=-math.inf)
    with pytest.raises(
        ValueError,
        match=r"Argument recon_var should be None unless recon is one of 'gaussian', "
        r"'discretized_gaussian', 'discretized_logistic', but given recon_var=LearnedVariance",
    ):
        VAELoss("mse", recon_var=LearnedVariance())
    with pytest.raises(ValueError, match=r"Argument sync_dist should be False unless recon_var"):
        VAELoss("gaussian", recon_var=LearnedVariance(), sync_dist=True)
    with pytest.raises(
        TypeError,
        match=r"Argument recon_var should be a number, 'optimal', 'optimal_channel' or a "
        r"vaekit.nn.LearnedVariance, but given Linear",
    ):
        VAELoss("gaussian", recon_var=torch.nn.Linear(1, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Argument recon_var should broadcast to x.shape"):
        VAELoss("gaussian", recon_var=LearnedVariance((5,)))(
            torch.rand(2, 3), torch.rand(2, 3), torch.zeros(2, 1), torch.zeros(2, 1)
        )
