"""vaekit.demo.model: the MLP VAE on image-shaped and flat data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vaekit.demo.model import VAE


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 4, 5), (10,)])
def test_shapes_and_gradients(shape: tuple[int, ...]):
    torch.manual_seed(0)
    vae = VAE(shape, latent_dim=3, hidden=16)
    x = torch.rand(6, *shape)
    logits, post = vae(x)
    assert logits.shape == x.shape
    assert post.z.shape == post.mu.shape == post.log_var.shape == (6, 3)
    F.binary_cross_entropy_with_logits(logits, x).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.parameters())


def test_generator_fixes_the_noise_and_eval_decodes_the_mean():
    torch.manual_seed(0)
    vae = VAE((4,), latent_dim=2, hidden=8)
    x = torch.rand(5, 4)
    a, _ = vae(x, generator=torch.Generator().manual_seed(1))
    b, _ = vae(x, generator=torch.Generator().manual_seed(1))
    c, _ = vae(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    vae.eval()
    logits, post = vae(x)
    assert torch.equal(post.z, post.mu)
    assert torch.equal(logits, vae.decoder(post.mu))


def test_a_learned_variance_is_one_of_the_models_parameters():
    torch.manual_seed(0)
    assert VAE((4,), latent_dim=2, hidden=8).variance is None
    vae = VAE((4,), latent_dim=2, hidden=8, learned_variance=True)
    assert vae.variance is not None
    assert "variance.log_sigma" in vae.state_dict()
    assert any(p is vae.variance.log_sigma for p in vae.parameters())  # the optimiser's, DDP's
