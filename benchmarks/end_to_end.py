"""One training step of a small conv VAE: the vaekit toolkit against the notebook's code.

Run from the repository root (needs the ``metrics`` and ``ignite`` extras)::

    python benchmarks/end_to_end.py

Both steps train identical copies of the model on the same 28x28 batches. The toolkit step uses
GaussianReparam, VAELoss, a BetaScheduler and ReconKLRatio and ActiveUnits updates; the
hand-written one does the same work as the notebook does. Steps alternate, and the figure is
the median of the paired ratios.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from ignite.engine import Engine
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vaekit import GaussianReparam, VAELoss
from vaekit.handlers import BetaScheduler
from vaekit.metrics import ActiveUnits, ReconKLRatio
from vaekit.schedules import LinearWarmup

LATENT, BATCH, WARMUP = 16, 64, 1000


class ConvVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 4, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 2 * LATENT),
        )
        self.decoder = nn.Sequential(
            nn.Linear(LATENT, 32 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (32, 7, 7)),
            nn.ConvTranspose2d(32, 16, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 4, 2, 1),
        )


def hand_written(model: ConvVAE) -> Callable[[Tensor], None]:
    """The notebook's step, with a linear beta warm-up and the monitors computed by hand."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = {"step": 0, "recon": 0.0, "kl": 0.0}
    mu_sum, mu_sq = torch.zeros(LATENT), torch.zeros(LATENT)
    count = [0]

    def step(x: Tensor) -> None:
        mu, log_var = model.encoder(x).chunk(2, dim=1)
        std = torch.exp(0.5 * log_var)
        z = mu + torch.randn_like(std) * std
        x_hat = model.decoder(z)
        recon = F.binary_cross_entropy_with_logits(x_hat, x, reduction="sum") / x.shape[0]
        kld = torch.mean(-0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=1))
        beta = min(1.0, state["step"] / WARMUP)
        loss = recon + beta * kld
        opt.zero_grad()
        loss.backward()
        opt.step()
        state["step"] += 1
        state["recon"] += recon.item()
        state["kl"] += kld.item()
        mu_sum.add_(mu.detach().sum(0))
        mu_sq.add_(mu.detach().square().sum(0))
        count[0] += x.shape[0]

    return step


def toolkit(model: ConvVAE) -> Callable[[Tensor], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    reparam = GaussianReparam(dim=1)
    loss_fn = VAELoss("bce_with_logits", beta=0.0)
    engine = Engine(lambda engine, batch: None)
    scheduler = BetaScheduler(LinearWarmup(WARMUP), target=loss_fn)
    ratio, active = ReconKLRatio(), ActiveUnits()

    def step(x: Tensor) -> None:
        scheduler(engine)
        z, mu, log_var = reparam(model.encoder(x))
        out = loss_fn(model.decoder(z), x, mu, log_var)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        ratio.update(out.recon.detach(), out.kl.detach())
        active.update(mu.detach())

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="paired steps to time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = ConvVAE()
    steps = {"hand": hand_written(copy.deepcopy(model)), "toolkit": toolkit(model)}
    batches = [torch.rand(BATCH, 1, 28, 28).round() for _ in range(8)]
    for x in batches[:3]:  # warm up
        for fn in steps.values():
            fn(x)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.steps):
        order = list(steps) if i % 2 == 0 else list(reversed(steps))
        for name in order:
            start = time.perf_counter()
            steps[name](batches[i % len(batches)])
            times[name].append(time.perf_counter() - start)
    ratio = statistics.median(a / b for a, b in zip(times["toolkit"], times["hand"], strict=True))
    print(
        f"conv VAE, 28x28, batch {BATCH}, latent {LATENT}, 1 thread: toolkit step / hand-written "
        f"step = {ratio:.3f} (median of {args.steps} pairs; hand-written "
        f"{1e3 * statistics.median(times['hand']):.1f} ms per step)"
    )


if __name__ == "__main__":
    main()
