"""Two gloo processes where one of them, or both, have seen no sample.

Run as two ranks by tests/metrics/test_distributed.py (tests/_distributed.py). For every scenario
and latent shape, each rank saves what ``compute()`` (or ``forward``) returned after each phase,
the synced ActiveUnits variances, its local states afterwards, and the ``dist_sync_fn`` calls it
made. :func:`reference` computes the
same values in one process over the samples of both ranks.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tests._distributed import TIMEOUT, rank_main

LATENTS = {"linear": (5,), "conv": (2, 3, 2)}  # (B, D) and (B, C, H, W) posteriors
SIZES = (6, 3, 4, 5)
EMPTY = -1  # an update with a batch of 0 samples
Shard = tuple[int, ...]  # indices into make_batches(), or EMPTY; () is no update at all


@dataclass(frozen=True)
class Scenario:
    """Phases of (rank 0's batches, rank 1's batches), each followed by compute() on both."""

    phases: tuple[tuple[Shard, Shard], ...]
    reset_before: tuple[int, ...] = ()  # phases before which both ranks reset their metrics
    options: dict[str, Any] = field(default_factory=dict)  # metric keywords
    record: bool = False  # a recording dist_sync_fn on a process group of its own
    forward: bool = False  # one forward() per rank and phase; its value is recorded


SCENARIOS = {
    "rank1_none": Scenario((((0, 1, 2), ()),)),
    "rank0_none": Scenario((((), (0, 1, 2)),)),
    "rank1_empty_batches": Scenario((((0, 1, 2), (EMPTY, EMPTY)),)),
    "nobody": Scenario((((), ()),)),
    "nobody_empty_batches": Scenario((((EMPTY,), (EMPTY, EMPTY)),)),
    # Rank 1 joins late; after a reset, rank 0 (whose ActiveUnits keeps its shift) sees nothing.
    "late_then_reset": Scenario(
        (((0, 1), ()), ((2,), (3,)), ((), (1,))), reset_before=(2,), record=True
    ),
    "on_step": Scenario(
        (((0,), (EMPTY,)), ((EMPTY,), (EMPTY,)), ((2,), (1,))),
        options={"dist_sync_on_step": True},
        forward=True,
    ),
    "no_sync_on_compute": Scenario(
        (((0, 1), (EMPTY,)),), options={"sync_on_compute": False}, record=True
    ),
}


def make_batches(latent: tuple[int, ...]) -> list[dict[str, Tensor]]:
    """Batches about a large offset, element scales 0 to 2 and a mean drifting with the scale."""
    g = torch.Generator().manual_seed(len(latent))
    scales = 2 * torch.linspace(0.0, 1.0, torch.Size(latent).numel()).reshape(latent) ** 3
    return [
        {
            "recon": torch.rand(n, generator=g) * 100,
            "kl": torch.rand(n, generator=g) * 5,
            "mu": 50.0 + (0.5 * i + torch.randn(n, *latent, generator=g)) * scales,
            "log_var": torch.randn(n, *latent, generator=g),
        }
        for i, n in enumerate(SIZES)
    ]


def _batch(latent: tuple[int, ...], index: int) -> dict[str, Tensor]:
    if index != EMPTY:
        return make_batches(latent)[index]
    vector, latents = torch.zeros(0), torch.zeros(0, *latent)
    return {"recon": vector, "kl": vector, "mu": latents, "log_var": latents}


class Recorder:
    """A dist_sync_fn that logs each call, then gathers as torchmetrics does."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.calls: list[tuple[tuple[int, ...], str, bool]] = []

    def __call__(self, tensor: Tensor, group: Any = None) -> list[Tensor]:
        from torchmetrics.utilities.distributed import gather_all_tensors

        self.calls.append((tuple(tensor.shape), str(tensor.dtype), group is self.group))
        return gather_all_tensors(tensor, group=group)


def _metrics(options: dict[str, Any]) -> dict[str, Any]:
    from vaekit.metrics import ActiveUnits, KLPerDimension, ReconKLRatio

    return {
        "ratio": ReconKLRatio(**options),
        "au": ActiveUnits(**options),
        "kl": KLPerDimension(**options),
    }


def _feed(metrics: dict[str, Any], batch: dict[str, Tensor], *, step: bool) -> dict[str, Any]:
    """Update the metrics with ``batch``, or call them on it and return what they return."""
    calls: dict[str, Callable[..., Any]] = {k: m if step else m.update for k, m in metrics.items()}
    return {
        "ratio": calls["ratio"](batch["recon"], batch["kl"]),
        "au": calls["au"](batch["mu"]),
        "kl": calls["kl"](batch["mu"], batch["log_var"]),
    }


def _results(metrics: dict[str, Any]) -> dict[str, Any]:
    from vaekit.functional.monitors import _active_units_variance

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out: dict[str, Any] = {k: m.compute() for k, m in metrics.items()}
    out["warned"] = any("before the ``update``" in str(w.message) for w in caught)
    au = metrics["au"]
    if au.sync_on_compute:
        with au.sync_context(dist_sync_fn=au.dist_sync_fn):
            out["au_variance"] = _active_units_variance(au.sum_mu, au.sum_mu_sq, au.total)
    out["local"] = {k: v.clone() for k, v in au.metric_state.items()}
    out["local"]["kl_sum"] = metrics["kl"].kl_sum.clone()
    return out


def run_rank(name: str, latent: tuple[int, ...], rank: int, group: Any) -> list[dict[str, Any]]:
    """What ``rank`` sees in scenario ``name``: one result per phase."""
    scenario = SCENARIOS[name]
    options = dict(scenario.options)
    recorder = Recorder(group) if scenario.record else None
    if recorder is not None:
        options |= {"dist_sync_fn": recorder, "process_group": group}
    metrics = _metrics(options)
    phases = []
    for i, shards in enumerate(scenario.phases):
        if i in scenario.reset_before:
            for m in metrics.values():
                m.reset()
        steps = [_feed(metrics, _batch(latent, b), step=scenario.forward) for b in shards[rank]]
        phases.append({"steps": steps if scenario.forward else [], **_results(metrics)})
    if recorder is not None:
        phases[-1]["calls"] = recorder.calls
    return phases


def _alone(latent: tuple[int, ...], batches: tuple[int, ...]) -> dict[str, Tensor]:
    metrics = _metrics({})
    for b in batches:
        _feed(metrics, _batch(latent, b), step=False)
    return {k: m.compute() for k, m in metrics.items()}


def reference(name: str, latent: tuple[int, ...]) -> list[dict[str, Any]]:
    """One process over both ranks' batches, per phase: the results and the batches they cover.

    For a ``forward`` scenario, the steps hold compute() over that step's batches of both ranks.
    """
    scenario = SCENARIOS[name]
    metrics = _metrics({})
    seen: list[int] = []
    phases = []
    for i, (mine, theirs) in enumerate(scenario.phases):
        if i in scenario.reset_before:
            for m in metrics.values():
                m.reset()
            seen = []
        for b in mine + theirs:
            _feed(metrics, _batch(latent, b), step=False)
        seen += [b for b in mine + theirs if b != EMPTY]
        steps = zip(mine, theirs, strict=True) if scenario.forward else []
        phases.append(
            {"steps": [_alone(latent, s) for s in steps], "seen": list(seen), **_results(metrics)}
        )
    return phases


def _run(out: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    import torch.distributed as dist

    rank = dist.get_rank()
    group = dist.new_group([0, 1], timeout=TIMEOUT)
    return {
        (name, kind): run_rank(name, latent, rank, group)
        for name in SCENARIOS
        for kind, latent in LATENTS.items()
    }


if __name__ == "__main__":
    rank_main(_run)
