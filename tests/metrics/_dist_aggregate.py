"""Two gloo processes run AggregatePosterior on uneven shards, then with one process empty.

Run as two ranks by tests/metrics/test_aggregate_posterior.py (tests/_distributed.py). Each rank
saves what ``compute()`` returned after each phase: ``"shards"`` (rank 0 holds batches 0-2,
rank 1 batches 3-4) and ``"rank1_none"`` (after a reset, rank 0 holds every batch and rank 1
none). :func:`run` computes the same in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests._distributed import rank_main

SHARDS = ((0, 1, 2), (3, 4))
SIZES = (40, 25, 33, 17, 5)
LATENT = (2, 3)
NUM_SAMPLES = 150  # more codes than the 120 posteriors: a second pass, in a new order


def make_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(n, *LATENT, generator=g) * 2, torch.randn(n, *LATENT, generator=g) - 1)
        for n in SIZES
    ]


def run(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """compute() over ``batches`` in one process."""
    from vaekit.metrics import AggregatePosterior

    metric = AggregatePosterior(num_samples=NUM_SAMPLES, seed=3).set_dtype(torch.float64)
    for mu, log_var in batches:
        metric.update(mu, log_var)
    return metric.compute()


def _run(out: Path) -> dict[str, Any]:
    import ignite.distributed as idist

    from vaekit.metrics import AggregatePosterior

    rank = idist.get_rank()
    data = make_batches()
    metric = AggregatePosterior(num_samples=NUM_SAMPLES, seed=3).set_dtype(torch.float64)
    results = {}
    for i in SHARDS[rank]:
        metric.update(*data[i])
    results["shards"] = metric.compute()
    metric.reset()
    if rank == 0:
        for batch in data:
            metric.update(*batch)
    results["rank1_none"] = metric.compute()
    results["local_after_sync"] = len(metric.mu)  # the unsynced states are back
    return results


if __name__ == "__main__":
    rank_main(_run)
