"""Two gloo processes on the loopback run every vaekit metric on uneven shards of one data set.

Run as two ranks by tests/metrics/test_distributed.py (tests/_distributed.py). Each rank saves
what ``compute()`` returned, the synced ActiveUnits variances, and the ``engine.state.metrics``
of an Ignite run through TorchMetricsAdapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests._distributed import rank_main

# Uneven shards: rank 0 gets batches 0-2 (23 samples), rank 1 batches 3-4 (12 samples).
SHARDS = ((0, 1, 2), (3, 4))
SIZES = (9, 7, 7, 11, 1)
SCALES = torch.tensor([0.0, 0.05, 0.3, 1.0, 2.0])  # variances 0, 0.0025, 0.09, 1, 4
DRIFT = torch.tensor([0.0, 0.0, 0.0, 1.5, 3.0])  # per batch, on the active units only


def make_batches() -> list[dict[str, torch.Tensor]]:
    """The whole data set, in order; the offset drifts so that each rank's first batch differs."""
    g = torch.Generator().manual_seed(0)
    batches = []
    for i, n in enumerate(SIZES):
        mu = 50.0 + i * DRIFT + torch.randn(n, 5, generator=g) * SCALES
        batches.append(
            {
                "recon": torch.rand(n, generator=g) * 100,
                "kl": torch.rand(n, generator=g) * 5,
                "mu": mu,
                "log_var": torch.randn(n, 5, generator=g),
            }
        )
    return batches


def run_metrics(batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """compute() of each metric over ``batches``, and the synced ActiveUnits variances."""
    from vaekit.functional.monitors import _active_units_variance
    from vaekit.metrics import ActiveUnits, KLPerDimension, ReconKLRatio

    ratio, au, kl = ReconKLRatio(), ActiveUnits(), KLPerDimension()
    for b in batches:
        ratio.update(b["recon"], b["kl"])
        au.update(b["mu"])
        kl.update(b["mu"], b["log_var"])
    results = {"ratio": ratio.compute(), "au": au.compute(), "kl": kl.compute()}
    with au.sync_context():
        results["au_variance"] = _active_units_variance(au.sum_mu, au.sum_mu_sq, au.total)
    return results


def run_engine(batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """engine.state.metrics after two epochs over ``batches``, metrics attached by the bridge."""
    from ignite.engine import Engine

    from vaekit.handlers import TorchMetricsAdapter
    from vaekit.metrics import ActiveUnits, KLPerDimension, ReconKLRatio

    engine = Engine(lambda engine, batch: batch)
    TorchMetricsAdapter(ReconKLRatio(), output_transform=lambda o: (o["recon"], o["kl"])).attach(
        engine, "ratio"
    )
    TorchMetricsAdapter(ActiveUnits(), output_transform=lambda o: o["mu"]).attach(engine, "au")
    TorchMetricsAdapter(
        KLPerDimension(), output_transform=lambda o: {"mu": o["mu"], "log_var": o["log_var"]}
    ).attach(engine, "kl")
    engine.run(batches, max_epochs=2)
    return dict(engine.state.metrics)


def _run(out: Path) -> dict[str, Any]:
    import ignite.distributed as idist

    rank = idist.get_rank()
    data = make_batches()
    mine = [data[i] for i in SHARDS[rank]]
    results = run_metrics(mine)
    results["engine"] = run_engine(mine)
    return results


if __name__ == "__main__":
    rank_main(_run)
