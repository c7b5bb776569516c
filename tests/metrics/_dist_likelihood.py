"""Two gloo processes: ImportanceWeightedNLL on uneven shards, and VAELoss with a batch-optimal
variance synced across them.

Run as two ranks by tests/metrics/test_importance_weighted_nll.py (tests/_distributed.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests._distributed import rank_main

SHARDS = ((0, 1, 2), (3, 4))  # rank 0: batches 0-2, rank 1: batches 3-4
SIZES = (5, 3, 4, 6, 1)  # data points per batch
K = 7
SYNC_SHARDS = (slice(0, 5), slice(5, 8))  # the loss's batch: 5 data points on rank 0, 3 on 1
RECON_VARS = ("optimal", "optimal_channel")


def make_weights() -> list[torch.Tensor]:
    """(K, B) log importance weights of each batch."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(K, n, generator=g, dtype=torch.float64) * 3.0 - 80.0 for n in SIZES]


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """x_hat and x of the loss's global batch, (8, 3, 2, 2), channels of different errors."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 2, 2, generator=g, dtype=torch.float64)
    scale = torch.tensor([0.05, 0.3, 1.0], dtype=torch.float64).reshape(3, 1, 1)
    return x + scale * torch.randn(8, 3, 2, 2, generator=g, dtype=torch.float64), x


def run_loss(x_hat: torch.Tensor, x: torch.Tensor, **settings: Any) -> dict[str, torch.Tensor]:
    """The summed reconstruction term with each optimal variance, and its gradient."""
    from vaekit import VAELoss

    results = {}
    for recon_var in RECON_VARS:
        x_hat_ = x_hat.clone().requires_grad_()
        loss_fn = VAELoss("gaussian", recon_var=recon_var, reduction="sum", **settings)
        recon = loss_fn(x_hat_, x, torch.zeros(len(x), 1), torch.zeros(len(x), 1)).recon
        recon.backward()
        results[recon_var] = recon.detach()
        results[f"{recon_var}_grad"] = x_hat_.grad
    return results


def _run(out: Path) -> dict[str, Any]:
    import ignite.distributed as idist

    from vaekit.metrics import ImportanceWeightedNLL

    rank = idist.get_rank()
    weights = make_weights()
    nats = ImportanceWeightedNLL().set_dtype(torch.float64)
    bits = ImportanceWeightedNLL("bits_per_dim", num_dims=12).set_dtype(torch.float64)
    for i in SHARDS[rank]:
        nats.update(weights[i])
        bits.update(weights[i])
    x_hat, x = make_batch()
    mine = SYNC_SHARDS[rank]
    return {
        "nats": nats.compute(),
        "bits": bits.compute(),
        "synced": run_loss(x_hat[mine], x[mine], sync_dist=True),
        "local": run_loss(x_hat[mine], x[mine]),
    }


if __name__ == "__main__":
    rank_main(_run)
