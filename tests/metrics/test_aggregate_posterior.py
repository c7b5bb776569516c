"""AggregatePosterior against the linear-Gaussian closed form and torch.distributions' mixtures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# isort: off
# First: the import guard of vaekit.handlers silences torch's jit deprecations raised by ignite.
import vaekit.handlers  # noqa: F401
# isort: on

import pytest
import torch
from ignite.engine import Engine
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from tests._distributed import spawn_ranks
from tests.functional import _linear_gaussian as lg
from tests.metrics import _dist_aggregate
from tests.metrics._checks import assert_posterior_updates_are_checked
from tests.metrics._threads import ThreadWorld
from vaekit.functional.monitors import _aggregate_posterior_draw
from vaekit.handlers import TorchMetricsAdapter
from vaekit.metrics import AggregatePosterior

KEYS = ["mi", "marginal_kl", "tc", "dim_kl"]


def posteriors(n=60, latent=(3,), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(n, *latent, generator=g, dtype=dtype) * 1.5
    log_var = torch.randn(n, *latent, generator=g, dtype=dtype) - 1
    return mu, log_var


def computed(batches, **kwargs):
    """compute() over ``batches``, with float64 results to compare at float64's precision."""
    metric = AggregatePosterior(**kwargs).set_dtype(torch.float64)
    for mu, log_var in batches:
        metric.update(mu, log_var)
    return metric.compute()


def mixture_reference(mu, log_var, num_samples, seed):
    """The same codes, scored by torch.distributions' mixtures of all the posteriors."""
    mu, log_var = (t.double().reshape(t.shape[0], -1) for t in (mu, log_var))
    n, d = mu.shape
    index, noise = _aggregate_posterior_draw(n, d, num_samples, seed)
    std = (0.5 * log_var).exp()
    z = mu[index] + std[index] * noise
    uniform = Categorical(logits=torch.zeros(n, dtype=torch.float64))
    log_qz = MixtureSameFamily(uniform, Independent(Normal(mu, std), 1)).log_prob(z)
    log_qz_dims = torch.stack(
        [
            MixtureSameFamily(uniform, Normal(mu[:, j], std[:, j])).log_prob(z[:, j])
            for j in range(d)
        ],
        dim=1,
    )
    log_cond = Normal(mu[index], std[index]).log_prob(z).sum(dim=1)
    log_prior = Normal(0.0, 1.0).log_prob(z).sum(dim=1)
    return {
        "mi": (log_cond - log_qz).mean(),
        "marginal_kl": (log_qz - log_prior).mean(),
        "tc": (log_qz - log_qz_dims.sum(dim=1)).mean(),
        "dim_kl": (log_qz_dims.sum(dim=1) - log_prior).mean(),
    }


def assert_equal_results(a, b, tol=0.0):
    assert list(a) == list(b) == KEYS
    for key in KEYS:
        torch.testing.assert_close(a[key], b[key], rtol=tol, atol=tol, equal_nan=True)


@pytest.mark.parametrize("latent", [(3,), (2, 2), ()])
@pytest.mark.parametrize("num_samples", [25, 60, 150])
def test_against_torch_distributions_mixtures(latent, num_samples):
    mu, log_var = posteriors(60, latent)
    result = computed([(mu, log_var)], num_samples=num_samples, seed=7)
    assert all(v.shape == () and v.dtype == torch.float64 for v in result.values())
    assert_equal_results(result, mixture_reference(mu, log_var, num_samples, 7), tol=1e-10)


def test_results_come_in_the_metric_dtype_from_float64_posteriors():
    mu, log_var = posteriors(60, (3,))
    default = AggregatePosterior(num_samples=25, seed=7)
    default.update(mu, log_var)
    assert default.mu[0].dtype == torch.float64
    result = default.compute()
    assert all(v.dtype == torch.float32 for v in result.values())
    want = computed([(mu, log_var)], num_samples=25, seed=7)
    assert_equal_results(result, {k: v.float() for k, v in want.items()})


def test_the_draw_takes_every_posterior_once_per_pass():
    index, noise = _aggregate_posterior_draw(7, 2, 17, seed=1)
    assert sorted(index[:7].tolist()) == sorted(index[7:14].tolist()) == list(range(7))
    assert len(set(index[14:].tolist())) == 3
    assert noise.shape == (17, 2)
    assert noise.dtype == torch.float64


def test_closed_form_linear_gaussian():
    z, mu, log_var = lg.sample(2000, seed=1)
    result = computed([(mu[:1000], log_var[:1000]), (mu[1000:], log_var[1000:])], num_samples=2000)
    # The standard errors, from an independent draw of the same design: one code per posterior.
    n = mu.shape[0]
    tolerances = lg.tolerances(z, mu, mu, self_weight=1 / n, other_weight=1 / n)
    truth = lg.closed_form()
    for key in ("mi", "tc", "dim_kl"):
        assert abs(result[key].item() - truth[key]) <= tolerances[key], key
    marginal = truth["tc"] + truth["dim_kl"]
    assert abs(result["marginal_kl"].item() - marginal) <= tolerances["tc"] + tolerances["dim_kl"]
    torch.testing.assert_close(result["marginal_kl"], result["tc"] + result["dim_kl"])


def test_mi_is_capped_at_log_n_not_log_b():
    # Far-apart, narrow posteriors: every code is told apart from the others, so I(x; z) is
    # log N. The metric reads log N; one batch of B could read at most log B.
    mu = torch.arange(500.0)[:, None] * 10
    log_var = torch.full((500, 1), -4.0)
    result = computed([(mu[i : i + 50], log_var[i : i + 50]) for i in range(0, 500, 50)])
    assert result["mi"].item() <= math.log(500)
    assert result["mi"].item() == pytest.approx(math.log(500), abs=1e-9)
    assert result["mi"].item() > math.log(50) + 2


def test_independent_of_batching_and_reproducible_from_the_seed():
    mu, log_var = posteriors(60)
    whole = computed([(mu, log_var)], seed=5)
    split = computed(
        [(mu[:7], log_var[:7]), (mu[7:7], log_var[7:7]), (mu[7:], log_var[7:])], seed=5
    )
    assert_equal_results(whole, split)
    assert_equal_results(whole, computed([(mu, log_var)], seed=5))
    other = computed([(mu, log_var)], seed=6)
    assert all(other[k].item() != whole[k].item() for k in KEYS)
    assert_equal_results(whole, computed([(mu.double(), log_var.double())], seed=5))


def test_computes_again_from_the_same_states():
    metric = AggregatePosterior(num_samples=40)
    metric.update(*posteriors(30))
    first = metric.compute()
    metric._computed = None  # not the cache: a fresh computation from the states
    assert_equal_results(first, metric.compute())


def test_through_torch_metrics_adapter():
    batches = [posteriors(n, seed=s) for s, n in enumerate((9, 14, 5))]
    engine = Engine(lambda e, batch: {"mu": batch[0], "log_var": batch[1]})
    TorchMetricsAdapter(AggregatePosterior(num_samples=50)).attach(engine, "q(z)")
    metrics = engine.run(batches, max_epochs=2).metrics
    expected = computed(batches, num_samples=50)  # the second epoch alone: reset every epoch
    for key in KEYS:
        assert metrics[key] == expected[key].item()
        assert metrics["q(z)"][key] == expected[key].item()


def test_an_adapter_checkpoint_resumes_to_the_same_result():
    batches = [posteriors(n, seed=s) for s, n in enumerate((9, 14, 5))]
    adapter = TorchMetricsAdapter(AggregatePosterior(num_samples=50).set_dtype(torch.float64))
    adapter.update(dict(zip(("mu", "log_var"), batches[0], strict=True)))
    restored = TorchMetricsAdapter(AggregatePosterior(num_samples=50).set_dtype(torch.float64))
    restored.load_state_dict(adapter.state_dict())
    with pytest.raises(ValueError, match=r"should have shape \(B, 3\) like the earlier updates"):
        restored.update(dict(zip(("mu", "log_var"), posteriors(4, latent=(2,)), strict=True)))
    for mu, log_var in batches[1:]:
        restored.update({"mu": mu, "log_var": log_var})
    assert_equal_results(restored.compute(), computed(batches, num_samples=50))


def test_merge_state():
    a, b = posteriors(20, seed=1), posteriors(30, seed=2)
    left, right = (AggregatePosterior().set_dtype(torch.float64) for _ in range(2))
    left.update(*a)
    right.update(*b)
    left.compute()
    left.merge_state(right)
    # torchmetrics puts the incoming states first.
    assert_equal_results(left.compute(), computed([b, a]))
    wrong = AggregatePosterior()
    wrong.update(*posteriors(5, latent=(2,)))
    with pytest.raises(
        ValueError,
        match=r"Argument incoming_state should have latent shape \(3,\), but given latent shape "
        r"\(2,\)",
    ):
        left.merge_state(wrong)


def test_before_any_update_torchmetrics_warns_and_the_values_are_nan():
    metric = AggregatePosterior()
    with pytest.warns(UserWarning, match=r"was called before the ``update`` method"):
        result = metric.compute()
    assert all(math.isnan(result[k].item()) for k in KEYS)
    metric.update(torch.zeros(0, 3), torch.zeros(0, 3))  # an empty batch: still nothing
    assert all(math.isnan(v.item()) for v in metric.compute().values())


def test_errors():
    with pytest.raises(ValueError, match=r"Argument num_samples should be a positive int"):
        AggregatePosterior(num_samples=0)
    with pytest.raises(TypeError, match=r"Argument num_samples should be an int, but given float"):
        AggregatePosterior(num_samples=10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Argument seed should be a non-negative int"):
        AggregatePosterior(seed=-1)
    metric = AggregatePosterior()
    assert_posterior_updates_are_checked(metric)
    assert len(metric.mu) == 1  # the refused updates added nothing


def test_a_batch_that_forward_refuses_keeps_the_posteriors():
    metric = AggregatePosterior()
    metric.update(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(
        ValueError, match=r"Argument mu should have shape \(B, 3\) like the earlier"
    ):
        metric(torch.zeros(2, 1), torch.zeros(2, 1))
    assert len(metric.mu) == 1
    assert metric.update_count == 1


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric:UserWarning")
def test_any_world_gathers_in_rank_order():
    # Threads play the processes; rank 2 has seen no sample (and torchmetrics warns there).
    shards = [[posteriors(5, seed=0), posteriors(8, seed=1)], [posteriors(3, seed=2)], []]
    world = ThreadWorld(len(shards))
    options: dict[str, Any] = {
        "dist_sync_fn": world.gather,
        "distributed_available_fn": lambda: True,
    }

    def rank(r: int) -> dict[str, torch.Tensor]:
        metric = AggregatePosterior(num_samples=20, **options).set_dtype(torch.float64)
        for batch in shards[r]:
            metric.update(*batch)
        return metric.compute()

    expected = computed([b for s in shards for b in s], num_samples=20)
    results = world.run(rank)
    for result in results:
        assert not isinstance(result, Exception), [repr(x) for x in results]
        assert_equal_results(result, expected)
    # The same collectives everywhere (a real backend's gather_all_tensors pads the uneven B).
    kinds = [[(len(shape), dtype) for shape, dtype in calls] for calls in world.calls]
    assert all(k == kinds[0] for k in kinds)
    assert [calls[-1][0] for calls in world.calls] == [(13, 3), (3, 3), (0, 3)]


@pytest.mark.slow
def test_two_gloo_ranks_compute_the_single_process_result(tmp_path: Path):
    ranks = spawn_ranks(Path(__file__).parent / "_dist_aggregate.py", tmp_path)
    expected = _dist_aggregate.run(_dist_aggregate.make_batches())
    for r in ranks:
        assert_equal_results(r["shards"], expected, tol=1e-12)
        assert_equal_results(r["rank1_none"], expected, tol=1e-12)
    assert [r["local_after_sync"] for r in ranks] == [5, 0]
