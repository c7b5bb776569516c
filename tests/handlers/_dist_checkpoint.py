"""Two gloo processes checkpoint a TorchMetricsAdapter part-way through, and each loads its own.

Run as two ranks by tests/handlers/test_metrics.py (tests/_distributed.py). Each rank feeds its
first shard to an adapter, saves ``state_dict()`` (gathered from both ranks; rank 0 writes it to
``OUT_DIR/checkpoint.pt``), loads that file into a fresh adapter, feeds its second shard and
computes. It saves its local states before the save and after the load, and the synced result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tests._distributed import rank_main

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


def _run(out: Path) -> dict[str, Any]:
    import ignite.distributed as idist

    rank = idist.get_rank()
    batches = make_batches()
    before, after = SHARDS[rank]
    adapter = make_adapter()
    for i in before:
        adapter.update(batches[i])
    saved = local_states(adapter)
    state = adapter.state_dict()
    path = out / "checkpoint.pt"
    if rank == 0:
        torch.save(state, path)
    idist.barrier()

    resumed = make_adapter()
    resumed.load_state_dict(torch.load(path, weights_only=True))
    loaded = local_states(resumed)
    for i in after:
        resumed.update(batches[i])
    return {"saved": saved, "loaded": loaded, "result": resumed.compute()}


if __name__ == "__main__":
    rank_main(_run)
