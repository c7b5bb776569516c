"""Discretized likelihoods, log_likelihood, the importance-weighted bound and bits per dimension
against scipy, mpmath, torch.distributions and the closed forms of a linear-Gaussian model."""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch.distributions import Bernoulli, MultivariateNormal, Normal, kl_divergence

from vaekit.functional import (
    bits_per_dim,
    iwae_bound,
    log_importance_weights,
    log_likelihood,
    reparameterize,
    vae_loss,
)

DISCRETIZED = ["discretized_gaussian", "discretized_logistic"]
LOGISTIC_SCALE = math.sqrt(3.0) / math.pi  # s / sigma of a logistic of variance sigma^2
EPS32 = float(np.finfo(np.float32).eps)
SIGMAS = np.logspace(-4, 1, 11)  # 1e-4 ... 10
MEANS = (-0.5, 0.0, 0.37, 1.0, 1.5)  # inside and outside the range [0, 1]


# ---------------------------------------------------------------- references


def _log1mexp(d):
    d = np.minimum(d, -1e-300)
    return np.where(d > -math.log(2.0), np.log(-np.expm1(d)), np.log1p(-np.exp(d)))


def scipy_log_prob(kind, x, mean, sigma, num_bins, low=0.0, high=1.0):
    """log P(x) from scipy's CDFs: their difference in the bulk, log-space CDFs and survival
    functions where it would cancel, the edge bins open."""
    dist = stats.norm if kind == "discretized_gaussian" else stats.logistic
    scale = sigma if kind == "discretized_gaussian" else sigma * LOGISTIC_SCALE
    half = 0.5 * (high - low) / (num_bins - 1)
    a, b = (x - half - mean) / scale, (x + half - mean) / scale
    with np.errstate(divide="ignore"):  # in the branches np.where does not select
        bulk = np.log(dist.cdf(b) - dist.cdf(a))
        la, lb, sa, sb = dist.logcdf(a), dist.logcdf(b), dist.logsf(a), dist.logsf(b)
        tail = np.where(a + b < 0, lb + _log1mexp(la - lb), sa + _log1mexp(sb - sa))
    interior = np.where(np.exp(bulk) > 1e-3, bulk, tail)
    return np.where(x < low + half, lb, np.where(x > high - half, sa, interior))


def mpmath_log_prob(kind, x, mean, sigma, num_bins):
    """log P(x) of an interior bin at 50 digits."""
    with mpmath.workdps(50):
        x, mean, sigma = mpmath.mpf(x), mpmath.mpf(mean), mpmath.mpf(sigma)
        half = mpmath.mpf(1) / (2 * (num_bins - 1))
        if kind == "discretized_gaussian":
            a, b = (x - half - mean) / sigma, (x + half - mean) / sigma
            return float(mpmath.log(mpmath.ncdf(b) - mpmath.ncdf(a)))
        s = sigma * mpmath.sqrt(3) / mpmath.pi
        a, b = (x - half - mean) / s, (x + half - mean) / s
        return float(mpmath.log(1 / (1 + mpmath.exp(-b)) - 1 / (1 + mpmath.exp(-a))))


def grid_log_probs(kind, mean, sigma, num_bins, device):
    """log P of each of the num_bins grid values, one data point of one element each."""
    x = torch.linspace(0.0, 1.0, num_bins, dtype=torch.float64, device=device)[:, None]
    return log_likelihood(
        torch.full_like(x, mean), x, recon=kind, recon_var=float(sigma) ** 2, num_bins=num_bins
    )


# ---------------------------------------------------------------- discretized likelihoods


@pytest.mark.parametrize("kind", DISCRETIZED)
@pytest.mark.parametrize("num_bins", [2, 17, 256])
def test_probabilities_sum_to_one(kind, num_bins, device):
    for sigma in SIGMAS:
        for mean in MEANS:
            total = grid_log_probs(kind, mean, sigma, num_bins, device).exp().sum()
            assert abs(total.item() - 1.0) <= 1e-10, (sigma, mean)


@pytest.mark.parametrize("kind", DISCRETIZED)
@pytest.mark.parametrize("num_bins", [2, 17, 256])
def test_float64_matches_scipy_in_the_bulk_and_the_tails(kind, num_bins, device):
    grid = np.linspace(0.0, 1.0, num_bins)
    for sigma in SIGMAS:
        for mean in MEANS:
            want = scipy_log_prob(kind, grid, mean, sigma, num_bins)
            got = grid_log_probs(kind, mean, sigma, num_bins, device).cpu().numpy()
            assert np.isfinite(got).all()  # down to log P = -1.2e7: no clamp, no -inf
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", DISCRETIZED)
def test_float32_is_within_float32_precision(kind, device):
    """Against float64 at the float32-rounded inputs: a few ulps of max(1, |log P|)."""
    num_bins = 256
    grid = torch.linspace(0.0, 1.0, num_bins, dtype=torch.float32, device=device)
    for sigma in SIGMAS:
        var = float(np.float32(sigma**2))
        for mean in MEANS:
            mean = float(np.float32(mean))
            want = scipy_log_prob(kind, grid.cpu().double().numpy(), mean, math.sqrt(var), num_bins)
            x = grid[:, None]
            got = log_likelihood(torch.full_like(x, mean), x, recon=kind, recon_var=var)
            assert got.dtype == torch.float32
            assert torch.isfinite(got).all()
            error = np.abs(got.cpu().double().numpy() - want) / np.maximum(1.0, np.abs(want))
            assert error.max() <= 32 * EPS32, (sigma, mean, error.max())


@pytest.mark.parametrize("kind", DISCRETIZED)
def test_narrow_bins_against_mpmath(kind, device, dtype):
    """Bins far narrower than the distribution, where a CDF difference cancels to nothing."""
    num_bins, x = 256, 128 / 255
    half = 0.5 / (num_bins - 1)
    tolerance = 1e-13 if dtype == torch.float64 else 16 * EPS32
    for h in (1e-7, 1e-5, 1e-3, 0.05, 0.099, 0.101, 0.3):  # half-widths in standard units
        for c in (0.0, 0.4, -2.0, 7.0, -30.0):  # centres in standard units
            sigma = half / h
            mean = x - c * sigma
            xt = torch.tensor([[x]], dtype=dtype, device=device)
            mean_t = torch.tensor([[mean]], dtype=dtype, device=device)
            got = log_likelihood(mean_t, xt, recon=kind, recon_var=sigma**2).item()
            want = mpmath_log_prob(kind, xt.item(), mean_t.item(), sigma, num_bins)
            assert math.isfinite(got)
            assert abs(got - want) <= tolerance * max(1.0, abs(want)), (h, c, got, want)


@pytest.mark.parametrize("kind", DISCRETIZED)
def test_a_value_outside_the_range_falls_in_the_edge_bins(kind):
    x = torch.tensor([[-0.3], [0.0], [1.0], [1.4]], dtype=torch.float64)
    got = log_likelihood(torch.full_like(x, 0.5), x, recon=kind, recon_var=0.04, num_bins=5)
    assert got[0] == got[1]
    assert got[2] == got[3]


def test_data_range_moves_the_grid():
    x = torch.tensor([[0.0], [4.0]], dtype=torch.float64)
    for kind in DISCRETIZED:
        scaled = log_likelihood(torch.full_like(x, 1.0), x, recon=kind, recon_var=0.5, num_bins=5)
        on_01 = log_likelihood(
            torch.full_like(x, 0.25), x / 4, recon=kind, recon_var=0.5 / 16, num_bins=5
        )
        torch.testing.assert_close(
            log_likelihood(
                torch.full_like(x, 1.0),
                x,
                recon=kind,
                recon_var=0.5,
                num_bins=5,
                data_range=(0.0, 4.0),
            ),
            on_01,
        )
        assert not torch.allclose(scaled, on_01)  # the default range put both in the edges


@pytest.mark.parametrize("kind", DISCRETIZED)
def test_gradcheck_across_the_branches(kind):
    # Edge bins, the series (sigma = 10), the CDF difference, a far tail.
    x = torch.tensor([[0.0, 0.5, 1.0, 0.2, 0.8]], dtype=torch.float64)
    mean = torch.tensor([[0.1, 0.45, 0.7, 0.9, -0.2]], dtype=torch.float64, requires_grad=True)
    for log_var in (math.log(100.0), math.log(0.01), math.log(1e-4)):
        var = torch.full((1, 5), log_var, dtype=torch.float64).exp().requires_grad_()
        assert torch.autograd.gradcheck(
            lambda m, v: log_likelihood(m, x, recon=kind, recon_var=v), (mean, var)
        )


@pytest.mark.parametrize("kind", DISCRETIZED)
def test_the_gradient_at_the_centre_of_a_bin_is_zero(kind):
    x = torch.tensor([[128 / 255]], dtype=torch.float64)
    for var in (1e-6, 1e-4, 1e-2, 1.0):  # wide bins (the CDF difference) to narrow (the series)
        mean = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(log_likelihood(mean, x, recon=kind, recon_var=var), mean)
        assert abs(grad.item()) < 1e-9, var


@pytest.mark.parametrize("kind", DISCRETIZED)
def test_no_branch_leaks_a_nan_into_the_gradient(kind, device, dtype):
    x = torch.linspace(0.0, 1.0, 256, dtype=dtype, device=device).repeat(3, 1)
    for sigma in (1e-4, 1e-2, 0.3, 10.0, 1e4):
        for mean in (-3.0, 0.5, 4.0):
            m = torch.full_like(x, mean).requires_grad_()
            v = torch.tensor(sigma**2, dtype=dtype, device=device, requires_grad=True)
            log_likelihood(m, x, recon=kind, recon_var=v).sum().backward()
            assert m.grad is not None
            assert v.grad is not None
            assert torch.isfinite(m.grad).all(), (sigma, mean)
            assert torch.isfinite(v.grad).all(), (sigma, mean)


@pytest.mark.parametrize(
    "recon", ["discretized_gaussian", "discretized_logistic", "gaussian", "bce_with_logits"]
)
def test_per_sample_gradients_under_torch_func(recon):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 17, (6, 2, 3), generator=g).double() / 16
    x_hat = torch.rand(6, 2, 3, generator=g, dtype=torch.float64)
    kw = {} if recon == "bce_with_logits" else {"recon_var": 0.05}

    def one(x_hat_i, x_i):
        return log_likelihood(x_hat_i[None], x_i[None], recon=recon, num_bins=17, **kw)[0]

    per_sample = torch.func.vmap(torch.func.grad(one))(x_hat, x)
    x_hat_ = x_hat.clone().requires_grad_()
    log_likelihood(x_hat_, x, recon=recon, num_bins=17, **kw).sum().backward()
    torch.testing.assert_close(per_sample, x_hat_.grad, rtol=1e-12, atol=1e-12)
    values = torch.func.vmap(one)(x_hat, x)
    torch.testing.assert_close(values, log_likelihood(x_hat, x, recon=recon, num_bins=17, **kw))


@pytest.mark.slow
def test_compiled_equals_eager():
    x = torch.linspace(0.0, 1.0, 256).repeat(2, 1)
    mean = torch.rand(2, 256, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2

    def both(mean, log_var):
        return torch.stack(
            [log_likelihood(mean, x, recon=k, recon_var=log_var.exp()) for k in DISCRETIZED]
        )

    for log_var in (math.log(100.0), math.log(1e-3)):
        lv = torch.tensor(log_var)
        torch.testing.assert_close(torch.compile(both)(mean, lv), both(mean, lv))


# ---------------------------------------------------------------- log_likelihood


def test_log_likelihood_matches_torch_distributions(device):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 3, 5, generator=g, dtype=torch.float64) > 0.5).double().to(device)
    logits = torch.randn(4, 3, 5, generator=g, dtype=torch.float64).to(device)
    want = Bernoulli(logits=logits).log_prob(x).sum((1, 2))
    torch.testing.assert_close(log_likelihood(logits, x, recon="bce_with_logits"), want)
    torch.testing.assert_close(log_likelihood(logits.sigmoid(), x, recon="bce"), want)
    var = torch.rand(3, 1, generator=g, dtype=torch.float64).to(device) + 0.1
    want = Normal(logits, var.sqrt()).log_prob(x).sum((1, 2))
    torch.testing.assert_close(log_likelihood(logits, x, recon="gaussian", recon_var=var), want)
    want = Normal(logits, 0.3).log_prob(x).sum((1, 2))
    torch.testing.assert_close(log_likelihood(logits, x, recon="gaussian", recon_var=0.09), want)


@pytest.mark.parametrize("recon", ["bce_with_logits", "gaussian", *DISCRETIZED])
def test_k_samples_give_k_rows(recon, device):
    g = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 256, (3, 2, 4), generator=g).double() / 255).to(device)
    x_hat = torch.rand(5, 3, 2, 4, generator=g, dtype=torch.float64).to(device)
    kw = {} if recon == "bce_with_logits" else {"recon_var": 0.02}
    got = log_likelihood(x_hat, x, recon=recon, **kw)
    assert got.shape == (5, 3)
    for k in range(5):
        torch.testing.assert_close(got[k], log_likelihood(x_hat[k], x, recon=recon, **kw))


@pytest.mark.parametrize("recon", ["bce", "bce_with_logits", "gaussian", *DISCRETIZED])
def test_log_likelihood_is_minus_the_summed_reconstruction_term_of_vae_loss(recon, device):
    g = torch.Generator().manual_seed(2)
    x = (torch.randint(0, 17, (4, 1, 3, 3), generator=g).double() / 16).to(device)
    x_hat = torch.rand(4, 1, 3, 3, generator=g, dtype=torch.float64).to(device)
    mu = log_var = torch.zeros(4, 2, dtype=torch.float64, device=device)
    for recon_var in (None, 0.03, "optimal", "optimal_channel"):
        if recon_var is not None and recon.startswith("bce"):
            continue
        kw = {"recon_var": recon_var, "num_bins": 17}
        ll = log_likelihood(x_hat, x, recon=recon, **kw)
        out = vae_loss(x_hat, x, mu, log_var, recon=recon, reduction="sum", **kw)
        torch.testing.assert_close(-ll.sum(), out.recon, rtol=1e-12, atol=1e-12)


def test_an_optimal_variance_spans_every_sample_given():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    x_hat = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    sigma = (x_hat - x).square().mean().sqrt()
    got = log_likelihood(x_hat, x, recon="gaussian", recon_var="optimal", min_log_sigma=None)
    torch.testing.assert_close(got, Normal(x_hat, sigma).log_prob(x).sum(-1))


def test_log_likelihood_errors():
    x = torch.rand(2, 3)
    for recon, why in (
        ("mse", r"a squared error is not a log-likelihood; use recon='gaussian'"),
        ("l1", r"an absolute error is not a log-likelihood; use recon='gaussian'"),
    ):
        with pytest.raises(
            ValueError,
            match=r"Argument recon should be a normalised likelihood, one of 'bce', "
            rf"'bce_with_logits', 'gaussian', 'discretized_gaussian', 'discretized_logistic', "
            rf"but given '{recon}': {why}",
        ):
            log_likelihood(x, x, recon=recon)
    with pytest.raises(
        ValueError,
        match=r"Argument recon should be a normalised likelihood, .*, but given a callable, "
        r"which vaekit cannot know to be one: compute log p\(x \| z\) yourself",
    ):
        log_likelihood(x, x, recon=F.mse_loss)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Argument recon should be .*, but given 'ce'$"):
        log_likelihood(x, x, recon="ce")
    with pytest.raises(TypeError, match=r"Argument recon should be a str, but given int"):
        log_likelihood(x, x, recon=3)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"Argument x_hat should have shape x.shape=\(2, 3\) or \(K, \*x.shape\), but "
        r"given x_hat.shape=\(2, 4\)",
    ):
        log_likelihood(torch.rand(2, 4), x, recon="bce")
    with pytest.raises(ValueError, match=r"Argument x should have a batch dimension"):
        log_likelihood(torch.rand(()), torch.rand(()), recon="bce")
    with pytest.raises(TypeError, match=r"Argument x_hat should be a torch.Tensor"):
        log_likelihood([0.5], x, recon="bce")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Argument x should be a floating-point tensor"):
        log_likelihood(x, torch.ones(2, 3, dtype=torch.long), recon="bce")
    with pytest.raises(ValueError, match=r"Argument recon_var should be None unless recon is"):
        log_likelihood(x, x, recon="bce", recon_var=1.0)
    with pytest.raises(ValueError, match=r"Argument recon_var should broadcast to x.shape"):
        log_likelihood(x, x, recon="gaussian", recon_var=torch.ones(4))
    with pytest.raises(
        ValueError,
        match=r"Argument recon_var='optimal_channel' needs a channel dimension 1 of x, but "
        r"given x.shape=\(2,\)",
    ):
        log_likelihood(torch.rand(2), torch.rand(2), recon="gaussian", recon_var="optimal_channel")


@pytest.mark.parametrize("fn", ["vae_loss", "log_likelihood"])
def test_discretization_setting_errors(fn):
    x = torch.rand(2, 3)

    def call(**kw):
        if fn == "vae_loss":
            return vae_loss(x, x, x, x, recon="discretized_gaussian", **kw)
        return log_likelihood(x, x, recon="discretized_gaussian", **kw)

    for bad in (1, 0, -5):
        with pytest.raises(
            ValueError, match=rf"Argument num_bins should be an int >= 2, but given {bad}"
        ):
            call(num_bins=bad)
    for bad_type in (2.0, True, "256"):
        with pytest.raises(TypeError, match=r"Argument num_bins should be an int, but given"):
            call(num_bins=bad_type)
    for bad in ((1.0, 0.0), (0.0, 0.0), (0.0, math.inf), (math.nan, 1.0)):
        with pytest.raises(
            ValueError,
            match=r"Argument data_range should be a pair \(low, high\) of finite numbers with "
            rf"low < high, but given {re_escape(bad)}",
        ):
            call(data_range=bad)
    for bad_type in ((0.0,), (0.0, 1.0, 2.0), "01", 1.0, (0.0, "1")):
        with pytest.raises(
            TypeError, match=r"Argument data_range should be a pair \(low, high\) of numbers"
        ):
            call(data_range=bad_type)
    for bad in (math.inf, math.nan):
        with pytest.raises(ValueError, match=r"Argument min_log_sigma should be a finite number"):
            call(min_log_sigma=bad)
    with pytest.raises(TypeError, match=r"Argument min_log_sigma should be a float, but given str"):
        call(min_log_sigma="-6")


def re_escape(value):
    import re

    return re.escape(repr(value))


# ---------------------------------------------------------------- importance weighting


class LinearGaussian:
    """x = W z + b + eps, z ~ N(0, I_d), eps ~ N(0, s^2 I_D), with orthogonal columns of W:
    W^T W = diag(lam^2), so the exact posterior is diagonal."""

    def __init__(self, latent=3, observed=6, s2=0.3, seed=0):
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(observed, latent, generator=g, dtype=torch.float64))
        self.lam = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)[:latent]
        self.W = q * self.lam
        self.b = torch.randn(observed, generator=g, dtype=torch.float64)
        self.s2 = s2
        self.g = g

    def sample(self, n):
        z = torch.randn(n, self.W.shape[1], generator=self.g, dtype=torch.float64)
        eps = torch.randn(n, self.W.shape[0], generator=self.g, dtype=torch.float64)
        return z @ self.W.T + self.b + math.sqrt(self.s2) * eps

    def log_px(self, x):
        cov = self.W @ self.W.T + self.s2 * torch.eye(self.W.shape[0], dtype=torch.float64)
        return MultivariateNormal(self.b, cov).log_prob(x)

    def posterior(self, x):
        var = 1.0 / (1.0 + self.lam.square() / self.s2)
        return var * ((x - self.b) @ self.W) / self.s2, var.log().expand(x.shape[0], -1)

    def bound(self, x, mu, log_var, k):
        z = reparameterize(mu, log_var, n_samples=k, generator=self.g)
        log_px_z = log_likelihood(z @ self.W.T + self.b, x, recon="gaussian", recon_var=self.s2)
        return iwae_bound(log_importance_weights(log_px_z, z, mu, log_var))

    def elbo(self, x, mu, log_var):
        """The analytic ELBO of q = N(mu, exp(log_var))."""
        var = log_var.exp()
        D = self.W.shape[0]
        fit = (x - mu @ self.W.T - self.b).square().sum(-1) + (var * self.lam.square()).sum(-1)
        expected = -0.5 * D * math.log(2 * math.pi * self.s2) - 0.5 * fit / self.s2
        kl = kl_divergence(Normal(mu, var.sqrt()), Normal(0.0, 1.0)).sum(-1)
        return expected - kl


def test_with_the_exact_posterior_the_bound_is_log_px_for_every_k():
    model = LinearGaussian()
    x = model.sample(50)
    mu, log_var = model.posterior(x)
    want = model.log_px(x)
    for k in (1, 2, 7, 100):
        torch.testing.assert_close(model.bound(x, mu, log_var, k), want, rtol=0, atol=1e-8)


def test_with_a_perturbed_posterior_the_bound_rises_with_k_and_k1_is_the_elbo():
    model = LinearGaussian(seed=1)
    x = model.sample(4000)
    mu, log_var = model.posterior(x)
    mu, log_var = mu + 0.4, log_var + 0.8  # a wider, shifted q
    bounds = {k: model.bound(x, mu, log_var, k) for k in (1, 4, 16, 64)}
    elbo = model.elbo(x, mu, log_var)
    gap = bounds[1] - elbo
    assert abs(gap.mean()) <= 3 * gap.std() / math.sqrt(len(gap))  # within 3 standard errors
    ks = sorted(bounds)
    for lo, hi in itertools.pairwise(ks):
        diff = bounds[hi] - bounds[lo]
        assert diff.mean() > 3 * diff.std() / math.sqrt(len(diff)), (lo, hi)  # Burda et al. Th. 1
    assert bounds[64].mean() < model.log_px(x).mean()
    assert (bounds[1].mean() - elbo.mean()).abs() < 0.05 < (model.log_px(x) - elbo).mean()


def test_log_importance_weights_match_torch_distributions(device):
    g = torch.Generator().manual_seed(4)
    mu, log_var = (torch.randn(3, 2, 2, generator=g, dtype=torch.float64).to(device) for _ in "ab")
    z = torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64).to(device)
    log_px_z = torch.randn(5, 3, generator=g, dtype=torch.float64).to(device)
    q = Normal(mu, (0.5 * log_var).exp())
    want = log_px_z + Normal(0.0, 1.0).log_prob(z).sum((2, 3)) - q.log_prob(z).sum((2, 3))
    torch.testing.assert_close(log_importance_weights(log_px_z, z, mu, log_var), want)
    prior_mu = torch.tensor([0.5, -1.0], dtype=torch.float64, device=device)
    prior_log_var = torch.tensor([[0.3], [-0.7]], dtype=torch.float64, device=device)
    p = Normal(prior_mu, (0.5 * prior_log_var).exp())
    want = log_px_z + p.log_prob(z).sum((2, 3)) - q.log_prob(z).sum((2, 3))
    got = log_importance_weights(log_px_z, z, mu, log_var, prior_mu, prior_log_var)
    torch.testing.assert_close(got, want)
    assert got.dtype == torch.float64
    single = log_importance_weights(log_px_z.float(), z.float(), mu.float(), log_var.float())
    assert single.dtype == torch.float32


def test_log_importance_weights_errors():
    mu = log_var = torch.zeros(3, 2)
    z, lp = torch.zeros(4, 3, 2), torch.zeros(4, 3)
    with pytest.raises(
        ValueError,
        match=r"Argument z should have shape \(K, \*mu.shape\) = \(K, 3, 2\), but given "
        r"z.shape=\(3, 2\) and mu.shape=\(3, 2\)",
    ):
        log_importance_weights(lp, torch.zeros(3, 2), mu, log_var)
    with pytest.raises(
        ValueError,
        match=r"Argument log_px_given_z should have shape \(K, B\) = \(4, 3\), but given "
        r"log_px_given_z.shape=\(4,\)",
    ):
        log_importance_weights(torch.zeros(4), z, mu, log_var)
    with pytest.raises(ValueError, match=r"Arguments mu and log_var should have the same shape"):
        log_importance_weights(lp, z, mu, torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"Argument prior_mu should broadcast to mu.shape"):
        log_importance_weights(lp, z, mu, log_var, prior_mu=torch.zeros(3))
    with pytest.raises(ValueError, match=r"Argument mu should have a batch dimension"):
        log_importance_weights(torch.zeros(4, 1), torch.zeros(4), torch.zeros(()), torch.zeros(()))
    with pytest.raises(TypeError, match=r"Argument prior_log_var should be a floating-point"):
        log_importance_weights(lp, z, mu, log_var, prior_log_var=torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match=r"Argument z should be a torch.Tensor"):
        log_importance_weights(lp, [0.0], mu, log_var)  # type: ignore[arg-type]


def test_iwae_bound_is_a_stable_log_mean_exp(device):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(7, 4, generator=g, dtype=torch.float64).to(device)
    torch.testing.assert_close(iwae_bound(w), w.exp().mean(0).log())
    torch.testing.assert_close(iwae_bound(w.T, dim=1), w.exp().mean(0).log())
    torch.testing.assert_close(iwae_bound(w.T, dim=-1), w.exp().mean(0).log())
    torch.testing.assert_close(iwae_bound(w - 1e4), w.exp().mean(0).log() - 1e4)  # exp underflows
    assert torch.equal(iwae_bound(w[:1]), w[0])


def test_iwae_bound_errors():
    with pytest.raises(
        ValueError,
        match=r"Argument dim should be a dimension of log_weights.shape=\(3, 2\), but given 2",
    ):
        iwae_bound(torch.zeros(3, 2), dim=2)
    with pytest.raises(ValueError, match=r"Argument dim should be a dimension of .*\(\), but"):
        iwae_bound(torch.zeros(()))
    with pytest.raises(
        ValueError, match=r"Argument log_weights should hold at least one sample in dimension 0"
    ):
        iwae_bound(torch.zeros(0, 2))
    with pytest.raises(TypeError, match=r"Argument dim should be an int, but given float"):
        iwae_bound(torch.zeros(3, 2), dim=0.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Argument log_weights should be a floating-point"):
        iwae_bound(torch.zeros(3, 2, dtype=torch.long))


# ---------------------------------------------------------------- bits per dimension


def test_a_uniform_model_over_256_values_is_exactly_8_bits():
    d = 3 * 32 * 32
    assert bits_per_dim(d * math.log(256), d) == 8.0
    nll = torch.full((5,), d * math.log(256), dtype=torch.float64)
    assert torch.equal(bits_per_dim(nll, d), torch.full((5,), 8.0, dtype=torch.float64))
    # The same model as a uniform density on dequantised data: 1 on [0, 1], 1/2 on [-1, 1].
    assert bits_per_dim(0.0, d, num_bins=256) == 8.0
    assert bits_per_dim(d * math.log(2.0), d, num_bins=256, data_range=(-1.0, 1.0)) == 8.0


def test_the_offsets_of_0_1_and_minus1_1_differ_by_exactly_one_bit():
    for nll in (0.0, 1234.5, -17.25):
        on_01 = bits_per_dim(nll, 784, num_bins=256)
        on_11 = bits_per_dim(nll, 784, num_bins=256, data_range=(-1.0, 1.0))
        assert on_01 - on_11 == 1.0


def test_bits_per_dim_of_a_fair_coin_per_pixel():
    x = (torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    nll = -log_likelihood(torch.zeros_like(x), x, recon="bce_with_logits")
    torch.testing.assert_close(bits_per_dim(nll, 25), torch.ones(4))


def test_bits_per_dim_errors():
    for bad in (0, -1):
        with pytest.raises(ValueError, match=r"Argument num_dims should be a positive int, but "):
            bits_per_dim(1.0, bad)
    with pytest.raises(TypeError, match=r"Argument num_dims should be an int, but given float"):
        bits_per_dim(1.0, 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Argument num_bins should be an int >= 2, but given 1"):
        bits_per_dim(1.0, 2, num_bins=1)
    with pytest.raises(ValueError, match=r"Argument data_range should be a pair"):
        bits_per_dim(1.0, 2, num_bins=256, data_range=(1.0, -1.0))
    with pytest.raises(TypeError, match=r"Argument nll should be a tensor or a float, but given"):
        bits_per_dim("1.0", 2)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"Argument nll should be a floating-point tensor"):
        bits_per_dim(torch.tensor(3), 2)
