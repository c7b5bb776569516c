"""Two gloo processes checkpoint a TorchMetricsAdapter part-way through, and each loads its own.

Run by tests/handlers/test_metrics.py as two processes, ``python _dist_checkpoint.py OUT_DIR``
with the environment variables ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
(launching the ranks directly saves the start-up of a launcher process). Each rank feeds its
first shard to an adapter, saves ``state_dict()`` (gathered from both ranks; rank 0 writes it to
``OUT_DIR/checkpoint.pt``), loads that file into a fresh adapter, feeds its second shard and
computes. It writes to ``OUT_DIR/rank<r>.pt`` its local states before the save and after the
load, and the synced result.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

TIMEOUT = timedelta(seconds=60)  # a collective mismatch fails instead of hanging
SHARDS = (((0, 2), (4,)), ((1,), (3, 5)))  # per rank: the batches before and after the save


def make_batches() -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [
        {
            "recon": torch.rand(n, generator=g) * 100,
            "kl": torch.rand(n, generator=g) * 5,
            "mu": 20.0 + torch.randn(n, 4, generator=g) * torch.tensor([0.0, 0.05, 1.0, 2.0]),
            "log_var": torch.randn(n, 4, generator=g),
        }
        for n in (5, 3, 6, 2, 4, 7)
    ]


def make_adapter() -> Any:
    from torchmetrics import MetricCollection

    from vaekit.handlers import TorchMetricsAdapter
    from vaekit.metrics import ActiveUnits, KLPerDimension, ReconKLRatio

    metrics = {"ratio": ReconKLRatio(), "au": ActiveUnits(), "kl": KLPerDimension()}
    return TorchMetricsAdapter(MetricCollection(metrics))


def local_states(adapter: Any) -> dict[str, dict[str, Tensor]]:
    return {
        name: {k: v.clone() for k, v in m.metric_state.items()}
        for name, m in adapter.metric.items(keep_base=True)
    }


def _run(out_dir: str) -> None:
    import ignite.distributed as idist

    rank = idist.get_rank()
    batches = make_batches()
    before, after = SHARDS[rank]
    adapter = make_adapter()
    for i in before:
        adapter.update(batches[i])
    saved = local_states(adapter)
    state = adapter.state_dict()
    path = Path(out_dir) / "checkpoint.pt"
    if rank == 0:
        torch.save(state, path)
    idist.barrier()

    resumed = make_adapter()
    resumed.load_state_dict(torch.load(path, weights_only=True))
    loaded = local_states(resumed)
    for i in after:
        resumed.update(batches[i])
    result = resumed.compute()
    torch.save(
        {"saved": saved, "loaded": loaded, "result": result}, Path(out_dir) / f"rank{rank}.pt"
    )


if __name__ == "__main__":
    import ignite.distributed as idist

    idist.initialize("gloo", timeout=TIMEOUT)
    try:
        _run(sys.argv[1])
    finally:
        idist.finalize()
