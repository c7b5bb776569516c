"""Two gloo processes with uneven shards compute the single-process result, on every rank.

Each fixture runs a script that spawns two gloo processes (tests/_distributed.py); tests read
what they saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.distributions import Normal, kl_divergence

import vaekit.handlers  # noqa: F401  (imports ignite with torch.jit's deprecations filtered)
from tests._distributed import spawn_ranks
from tests.metrics import _dist_empty_rank as empty
from tests.metrics._dist_metrics import make_batches, run_engine, run_metrics
from tests.metrics._threads import ThreadWorld
from vaekit.functional.monitors import _active_units_variance
from vaekit.metrics import ActiveUnits, KLPerDimension

HERE = Path(__file__).parent
FLOAT32_ROUNDING = 2**-23  # one float32 ulp, relative: float64 sums in another order, rounded


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return spawn_ranks(HERE / "_dist_metrics.py", tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    return run_metrics(make_batches())


@pytest.mark.slow
def test_every_rank_computes_the_single_process_result(
    ranks: list[dict[str, Any]], single: dict[str, Any]
) -> None:
    for r in ranks:
        assert r["au"].item() == single["au"].item()
        for key in ("ratio", "kl", "au_variance"):
            torch.testing.assert_close(r[key], single[key], rtol=1e-12, atol=1e-12)
    for key in ("ratio", "au", "kl", "au_variance"):
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # bitwise the same everywhere


@pytest.mark.slow
def test_against_float64_references(ranks: list[dict[str, Any]]) -> None:
    data = make_batches()
    cat = {k: torch.cat([b[k] for b in data]).double() for k in data[0]}
    variance = cat["mu"].var(dim=0, correction=0)
    torch.testing.assert_close(ranks[0]["au_variance"], variance, rtol=1e-9, atol=1e-12)
    assert ranks[0]["au"].item() == (variance > 0.01).sum().item() == 3
    ratio = cat["recon"].sum() / cat["kl"].sum()
    assert ranks[0]["ratio"].dtype == torch.float32  # the float64 ratio, rounded once
    torch.testing.assert_close(ranks[0]["ratio"], ratio.float(), rtol=FLOAT32_ROUNDING, atol=0)


@pytest.mark.slow
def test_the_bridge_adds_no_second_reduction(ranks: list[dict[str, Any]]) -> None:
    expected = run_engine(make_batches())
    for r in ranks:
        assert r["engine"]["au"] == expected["au"]
        assert r["engine"]["ratio"] == pytest.approx(expected["ratio"], rel=1e-12)
        torch.testing.assert_close(r["engine"]["kl"], expected["kl"], rtol=1e-12, atol=1e-12)


# One rank, or both, without a sample (tests/metrics/_dist_empty_rank.py).

CASES = [(name, kind) for name in empty.SCENARIOS for kind in empty.LATENTS]
SYNCED = [c for c in CASES if c[0] != "no_sync_on_compute"]
WITH_SAMPLES = [c for c in SYNCED if not c[0].startswith("nobody")]


def _ids(case: tuple[str, str]) -> str:
    return "-".join(case)


@pytest.fixture(scope="module")
def empty_rank(tmp_path_factory: pytest.TempPathFactory) -> list[dict[Any, Any]]:
    return spawn_ranks(HERE / "_dist_empty_rank.py", tmp_path_factory.mktemp("empty_rank"))


def _phases(
    ranks: list[dict[Any, Any]], case: tuple[str, str]
) -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(rank 0, rank 1, the single-process reference) after each phase of ``case``."""
    expected = empty.reference(case[0], empty.LATENTS[case[1]])
    return list(zip(ranks[0][case], ranks[1][case], expected, strict=True))


def _same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12, equal_nan=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", SYNCED, ids=_ids)
def test_every_rank_computes_the_single_process_result_when_one_has_no_sample(
    empty_rank: list[dict[Any, Any]], case: tuple[str, str]
) -> None:
    for phase in _phases(empty_rank, case):
        *on_ranks, expected = phase
        for r in on_ranks:
            assert r["au"].item() == expected["au"].item()
            for key in ("ratio", "kl", "au_variance"):
                _same(r[key], expected[key])
            for got, want in zip(r["steps"], expected["steps"], strict=True):  # forward
                assert got["au"].item() == want["au"].item()
                _same(got["kl"], want["kl"])
                _same(got["ratio"], want["ratio"])
        for key in ("ratio", "au", "kl", "au_variance"):
            torch.testing.assert_close(
                on_ranks[0][key], on_ranks[1][key], rtol=0, atol=0, equal_nan=True
            )


@pytest.mark.slow
@pytest.mark.parametrize("case", WITH_SAMPLES, ids=_ids)
def test_a_rank_without_samples_against_float64_references(
    empty_rank: list[dict[Any, Any]], case: tuple[str, str]
) -> None:
    batches = empty.make_batches(empty.LATENTS[case[1]])
    for r, _, expected in _phases(empty_rank, case):
        cat = {k: torch.cat([batches[i][k] for i in expected["seen"]]).double() for k in batches[0]}
        variance = cat["mu"].var(dim=0, correction=0)
        torch.testing.assert_close(r["au_variance"], variance, rtol=1e-9, atol=1e-12)
        assert r["au"].item() == (variance > 0.01).sum().item()
        assert 0 < r["au"].item() < variance.numel()
        q = Normal(cat["mu"], (0.5 * cat["log_var"]).exp())
        kl = kl_divergence(q, Normal(0.0, 1.0)).mean(dim=0)
        torch.testing.assert_close(r["kl"], kl.float(), rtol=1e-5, atol=1e-6)
        ratio = cat["recon"].sum() / cat["kl"].sum()
        torch.testing.assert_close(r["ratio"], ratio.float(), rtol=FLOAT32_ROUNDING, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(empty.LATENTS))
def test_no_sample_anywhere_computes_what_one_process_does_before_any_update(
    empty_rank: list[dict[Any, Any]], kind: str
) -> None:
    latent = empty.LATENTS[kind]
    for name, kl_shape, warns in (("nobody", (), True), ("nobody_empty_batches", latent, False)):
        for r in (empty_rank[0][name, kind][0], empty_rank[1][name, kind][0]):
            assert r["au"].item() == 0
            assert r["kl"].shape == kl_shape
            assert torch.isnan(r["kl"]).all()
            assert torch.isnan(r["ratio"])
        assert empty_rank[0][name, kind][0]["warned"] is warns  # torchmetrics warns on rank 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(empty.LATENTS))
def test_sync_leaves_each_ranks_own_states(empty_rank: list[dict[Any, Any]], kind: str) -> None:
    idle = empty_rank[1]["rank1_none", kind][0]["local"]  # rank 1 has no sample
    assert idle["total"].item() == 0
    assert idle["shift"].shape == idle["sum_mu"].shape == idle["kl_sum"].shape == ()
    assert idle["shift"].item() == float("-inf")
    # After the second phase of late_then_reset, rank 0 has seen batches 0-2 and rank 1 batch 3;
    # the sync used rank 0's shift, yet each rank keeps its own sums about its own shift.
    batches = empty.make_batches(empty.LATENTS[kind])
    for r, seen in ((0, (0, 1, 2)), (1, (3,))):
        state = empty_rank[r]["late_then_reset", kind][1]["local"]
        mu = torch.cat([batches[i]["mu"] for i in seen]).double()
        torch.testing.assert_close(state["shift"], batches[seen[0]]["mu"].double().mean(dim=0))
        variance = _active_units_variance(state["sum_mu"], state["sum_mu_sq"], state["total"])
        torch.testing.assert_close(variance, mu.var(dim=0, correction=0), rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(empty.LATENTS))
def test_the_users_dist_sync_fn_and_group_make_the_same_calls_on_every_rank(
    empty_rank: list[dict[Any, Any]], kind: str
) -> None:
    calls = [empty_rank[r]["late_then_reset", kind][-1]["calls"] for r in (0, 1)]
    assert calls[0] == calls[1]  # shapes and dtypes: no collective can mismatch
    assert len(calls[0]) > 0
    assert all(on_group for _, _, on_group in calls[0])
    # sync_on_compute=False: no collective at all, each rank computes its own samples.
    r0, r1, expected = _phases(empty_rank, ("no_sync_on_compute", kind))[0]
    assert r0["calls"] == r1["calls"] == []
    assert r0["au"].item() == expected["au"].item()
    _same(r0["kl"], expected["kl"])
    assert r1["au"].item() == 0
    assert r1["kl"].shape == empty.LATENTS[kind]
    assert torch.isnan(r1["kl"]).all()


# Any number of processes, any of them without samples: threads play the processes.


def _thread_metrics(world: ThreadWorld) -> tuple[ActiveUnits, KLPerDimension]:
    options: dict[str, Any] = {
        "dist_sync_fn": world.gather,
        "distributed_available_fn": lambda: True,
    }
    return ActiveUnits(**options), KLPerDimension(**options)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric:UserWarning")
@settings(max_examples=40, deadline=None)
@given(
    shards=st.lists(st.lists(st.integers(0, 4), max_size=3), min_size=2, max_size=4),
    latent=st.sampled_from([(), (3,), (2, 1, 2)]),
    seed=st.integers(0, 2**16),
)
def test_any_world_computes_the_single_process_result(
    shards: list[list[int]], latent: tuple[int, ...], seed: int
) -> None:
    """Each rank updates with batches of the given sizes (0: an empty batch; []: no update)."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.0, 1.0, torch.Size(latent).numel()).reshape(latent)
    batches = [
        [
            (
                20.0 + torch.randn(n, *latent, generator=g) * scales,
                torch.randn(n, *latent, generator=g),
            )
            for n in s
        ]
        for s in shards
    ]
    world = ThreadWorld(len(shards))

    def rank(r: int) -> tuple[Tensor, Tensor, Tensor]:
        au, kl = _thread_metrics(world)
        for mu, log_var in batches[r]:
            au.update(mu)
            kl.update(mu, log_var)
        result = au.compute(), kl.compute()
        with au.sync_context(dist_sync_fn=world.gather):
            variance = _active_units_variance(au.sum_mu, au.sum_mu_sq, au.total)
        return (*result, variance)

    results = world.run(rank)
    au, kl = ActiveUnits(), KLPerDimension()
    for mu, log_var in (b for s in batches for b in s):
        au.update(mu)
        kl.update(mu, log_var)
    expected = (
        au.compute(),
        kl.compute(),
        _active_units_variance(au.sum_mu, au.sum_mu_sq, au.total),
    )
    seen = [mu.double() for s in batches for mu, _ in s]
    if sum(map(len, seen)):  # else NaN, as above
        variance = torch.cat(seen).var(dim=0, correction=0)
        torch.testing.assert_close(expected[2], variance, rtol=1e-9, atol=1e-12)
    for result in results:
        assert not isinstance(result, Exception), result
        assert result[0].item() == expected[0].item()
        torch.testing.assert_close(result[1], expected[1], rtol=1e-12, atol=1e-12, equal_nan=True)
        torch.testing.assert_close(result[2], expected[2], rtol=1e-9, atol=1e-12, equal_nan=True)
    assert all(calls == world.calls[0] for calls in world.calls)
