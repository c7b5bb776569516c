"""vaekit.demo.train: the sharded batches and the checkpointed history."""

from __future__ import annotations

import io
import traceback

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.multiprocessing.spawn import ProcessRaisedException

from vaekit.demo.train import Batches, DivergedError, History, ResumeError, _run_error_of


@given(
    n=st.integers(2, 60),
    batch_size=st.integers(1, 20),
    world=st.integers(1, 4),
    seed=st.integers(0, 2**20),
    epoch=st.integers(0, 50),
)
def test_shards_partition_one_permutation_per_epoch(n, batch_size, world, seed, epoch):
    x = torch.arange(float(n))
    shards = [Batches(x, batch_size, seed=seed, rank=r, world_size=world) for r in range(world)]
    seen = []
    for shard in shards:
        shard.set_epoch(epoch)
        batches = list(shard)
        assert len(batches) == len(shard) == len(shards[0])  # every process steps together
        assert all(0 < len(b) <= -(-batch_size // world) for b in batches)
        seen += [int(v) for b in batches for v in b]
    assert len(seen) == len(set(seen)) == n - n % world  # disjoint, at most world-1 left out
    again = Batches(x, batch_size, seed=seed, rank=0, world_size=world)
    again.set_epoch(epoch)
    shards[0].set_epoch(epoch)
    assert [b.tolist() for b in again] == [
        b.tolist() for b in shards[0]
    ]  # a function of (seed, epoch)


def test_epochs_and_seeds_reshuffle_and_unshuffled_keeps_order():
    x = torch.arange(100.0)
    a = Batches(x, 100, seed=0)
    first = next(iter(a))
    a.set_epoch(1)
    assert not torch.equal(first, next(iter(a)))
    assert not torch.equal(first, next(iter(Batches(x, 100, seed=1))))
    assert torch.equal(torch.cat(list(Batches(x, 7, seed=0, shuffle=False))), x)


def test_global_batch_is_split_across_processes():
    x = torch.arange(12.0)
    single = list(Batches(x, 4, seed=3))
    pair = [list(Batches(x, 4, seed=3, rank=r, world_size=2)) for r in range(2)]
    for i, batch in enumerate(single):
        assert sorted(torch.cat([pair[0][i], pair[1][i]]).tolist()) == sorted(batch.tolist())


def test_history_rows_and_weights_only_round_trip():
    history = History()
    history.betas += [0.5, 0.25]
    metrics = {"recon": 10.0, "kl": 4.0, "active_units": 3, "kl_per_dim": torch.tensor([1.0, 3.0])}
    history.append(2, 20, metrics)
    row = history.rows[0]
    assert row["beta"] == 0.25
    assert row["loss"] == 10.0 + 0.25 * 4.0
    assert (row["kl_per_dim_0"], row["kl_per_dim_1"], row["active_units"]) == (1.0, 3.0, 3.0)
    buffer = io.BytesIO()
    torch.save(history.state_dict(), buffer)
    buffer.seek(0)
    restored = History()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.rows == history.rows
    assert restored.betas == history.betas


def test_history_skips_a_metrics_dict_and_weighs_the_tcvae_terms():
    history = History(loss="tcvae")
    history.betas.append(6.0)
    terms = {"mi": 2.0, "marginal_kl": 1.5, "tc": 0.25, "dim_kl": 1.25}
    metrics = {"recon": 10.0, "kl": 3.5, **terms, "aggregate_posterior": dict(terms)}
    history.append(1, 5, metrics)
    row = history.rows[0]
    assert "aggregate_posterior" not in row
    assert row["loss"] == 10.0 + 2.0 + 6.0 * 0.25 + 1.25
    assert row["tc"] == 0.25


def _raised_in_a_process(error: BaseException) -> ProcessRaisedException:
    """What torch.multiprocessing raises in the parent for ``error`` raised in a child."""
    try:
        raise error
    except BaseException:
        trace = traceback.format_exc()
    return ProcessRaisedException(f"\n\n-- Process 1 terminated:\n{trace}", 1, 1234)


def test_run_errors_of_spawned_processes_keep_their_message_and_exit_code():
    for kind in (DivergedError, ResumeError):
        rebuilt = _run_error_of(_raised_in_a_process(kind("the pi run diverged: x; y")))
        assert type(rebuilt) is kind
        assert str(rebuilt) == "the pi run diverged: x; y"
    assert (DivergedError.exit_code, ResumeError.exit_code) == (1, 2)
    assert _run_error_of(_raised_in_a_process(ValueError("bug"))) is None
