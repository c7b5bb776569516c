"""vaekit.demo.evaluate: the split and the test NLL against scipy and torch.distributions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import special, stats
from torch.distributions import Normal

from vaekit.demo.evaluate import (
    eval_likelihood,
    importance_weighted_nll,
    read_test_json,
    split_data,
    training_variance,
    write_test_json,
)
from vaekit.demo.model import VAE
from vaekit.functional import reparameterize


def reference_nll(vae, x, variance, num_bins, k, seed, kind="discretized_gaussian"):
    """The test NLL by scipy CDFs, torch.distributions densities and scipy's logsumexp, on the
    posterior samples the demo draws (the same generator and call)."""
    with torch.no_grad():
        _, post = vae.eval()(x)
        z = reparameterize(
            post.mu, post.log_var, n_samples=k, generator=torch.Generator().manual_seed(seed)
        )
        mean = torch.sigmoid(vae.decoder(z.flatten(0, 1))).unflatten(0, (k, len(x)))
    m, xx = mean.double().numpy(), x.double().numpy()
    dist = stats.norm if kind == "discretized_gaussian" else stats.logistic
    scale = math.sqrt(variance)
    if kind == "discretized_logistic":
        scale *= math.sqrt(3) / math.pi  # the logistic of that variance
    half = 0.5 / (num_bins - 1)
    upper = np.where(xx > 1 - half, 1.0, dist.cdf((xx + half - m) / scale))
    lower = np.where(xx < half, 0.0, dist.cdf((xx - half - m) / scale))
    log_px_z = np.log(upper - lower).reshape(k, len(x), -1).sum(-1)
    z64, mu, sd = z.double(), post.mu.double(), (0.5 * post.log_var.double()).exp()
    log_ratio = Normal(0.0, 1.0).log_prob(z64).sum(-1) - Normal(mu, sd).log_prob(z64).sum(-1)
    log_w = log_px_z + log_ratio.numpy()
    bound = special.logsumexp(log_w, axis=0) - math.log(k)
    return -bound.mean(), -log_w.mean()


@pytest.fixture(scope="module")
def vae_and_data():
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), latent_dim=3, hidden=16)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 17, (12, 1, 4, 4), generator=g).float() / 16
    return vae, x


@pytest.mark.parametrize("kind", ["discretized_gaussian", "discretized_logistic"])
def test_the_test_nll_equals_an_independent_recomputation(vae_and_data, kind):
    vae, x = vae_and_data
    got = importance_weighted_nll(vae, x, likelihood=kind, variance=0.05, num_bins=17, k=40, seed=3)
    nll, neg_elbo = reference_nll(vae, x, 0.05, 17, 40, 3, kind)
    assert got["nll"] == pytest.approx(nll, rel=1e-5)
    assert got["neg_elbo"] == pytest.approx(neg_elbo, rel=1e-5)
    assert got["bits_per_dim"] == pytest.approx(got["nll"] / (16 * math.log(2)), rel=1e-12)
    assert got["nll"] < got["neg_elbo"]  # the bound is tighter than the ELBO


def test_processes_sharing_the_test_set_compute_what_one_does(vae_and_data):
    vae, x = vae_and_data
    kw = {"likelihood": "discretized_gaussian", "variance": 0.05, "num_bins": 17, "k": 8}
    whole = importance_weighted_nll(vae, x, seed=0, **kw)
    for world in (2, 3, 5):
        # Without torch.distributed, each rank computes the mean of its share; the metrics'
        # all-reduce adds the sums.
        total = {"nll": 0.0, "neg_elbo": 0.0}
        for rank in range(world):
            share = importance_weighted_nll(vae, x, seed=0, rank=rank, world_size=world, **kw)
            for key in total:
                total[key] += share[key] * len(x[rank::world])
        # The same samples: equal up to the float32 rounding of other batch sizes' matmuls.
        for key, value in total.items():
            assert value / len(x) == pytest.approx(whole[key], rel=1e-6), (world, key)


def test_the_test_nll_does_not_depend_on_the_chunks(vae_and_data, monkeypatch):
    vae, x = vae_and_data
    kw = {"likelihood": "discretized_gaussian", "variance": 0.05, "num_bins": 17, "k": 8}
    whole = importance_weighted_nll(vae, x, seed=0, **kw)
    monkeypatch.setattr("vaekit.demo.evaluate._CHUNK_ELEMENTS", 8 * 16 * 5)  # 5 per chunk
    chunked = importance_weighted_nll(vae, x, seed=0, **kw)
    assert chunked["nll"] != whole["nll"]  # other samples: the noise is drawn chunk by chunk
    assert chunked["nll"] == pytest.approx(whole["nll"], rel=0.05)


def test_training_variance(vae_and_data):
    vae, x = vae_and_data
    with torch.no_grad():
        logits, _ = vae.train()(x, generator=torch.Generator().manual_seed(7))
    rmse = (x - torch.sigmoid(logits)).square().mean().sqrt().item()
    soft_clipped = rmse + math.exp(-6.0)  # exp(m + softplus(log sigma - m)) = sigma + e^m
    for recon, recon_var in (("bce_with_logits", None), ("gaussian", "optimal"), ("mse", None)):
        variance = training_variance(vae, x, recon, recon_var, seed=7)
        assert variance == pytest.approx(soft_clipped**2, rel=1e-6)
    assert training_variance(vae, x, "gaussian", None, seed=7) == 1.0
    learned = VAE((1, 4, 4), latent_dim=3, hidden=16, learned_variance=True)
    assert learned.variance is not None
    assert training_variance(learned, x, "gaussian", "learned", seed=7) == pytest.approx(
        learned.variance().item()
    )


def test_split_is_fixed_disjoint_and_complete():
    x = torch.arange(223.0)
    train, test = split_data(x, 0.1)
    assert (len(train), len(test)) == (201, 22)
    assert sorted(torch.cat([train, test]).tolist()) == x.tolist()
    assert torch.equal(split_data(x, 0.1)[1], test)  # the same for every run
    assert [len(t) for t in split_data(torch.arange(2.0), 0.9)] == [1, 1]  # one of each, always


def test_eval_likelihood_and_json_round_trip(tmp_path: Path):
    assert eval_likelihood("discretized_logistic") == "discretized_logistic"
    for recon in ("bce_with_logits", "gaussian", "discretized_gaussian", "mse"):
        assert eval_likelihood(recon) == "discretized_gaussian"
    result = {"nll": 100.5, "bits_per_dim": 2.25, "k": 256, "likelihood": "discretized_gaussian"}
    write_test_json(tmp_path / "test.json", result)
    assert read_test_json(tmp_path / "test.json") == {"nll": 100.5, "bits_per_dim": 2.25, "k": 256}
    assert read_test_json(tmp_path / "none.json") is None
