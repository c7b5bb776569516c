"""The README's quick start: one training step of a tiny VAE on 8x8 images."""

import torch
from torch import nn

from vaekit import GaussianReparam, KLDivergenceNormal

torch.manual_seed(0)
encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), GaussianReparam(128, 8))
decoder = nn.Sequential(
    nn.Linear(8, 128), nn.ReLU(), nn.Linear(128, 64), nn.Unflatten(1, (1, 8, 8))
)
x = torch.rand(32, 1, 8, 8)
z, mu, log_var = encoder(x)
recon = (decoder(z) - x).square().sum(dim=(1, 2, 3)).mean()  # per data point, like the KL
kl = KLDivergenceNormal()(mu, log_var)
loss = recon + 1.0 * kl
loss.backward()
print(f"recon {recon.item():.4f}  kl {kl.item():.4f}  loss {loss.item():.4f}")
