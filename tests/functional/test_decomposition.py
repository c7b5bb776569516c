"""kl_decomposition and beta_tcvae_loss against torch.distributions, closed forms and Chen et al."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from tests.functional import _linear_gaussian as lg
from vaekit.functional import (
    BetaTCVAELossOutput,
    KLDecomposition,
    beta_tcvae_loss,
    kl_decomposition,
)
from vaekit.functional import decomposition as dec

ESTIMATORS = ["mss", "mws"]
LATENTS = [(3,), (2, 2), ()]


def posterior(batch=8, latent=(3,), dtype=torch.float64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(batch, *latent, generator=g, dtype=dtype)
    log_var = torch.randn(batch, *latent, generator=g, dtype=dtype) - 1
    z = mu + (0.5 * log_var).exp() * torch.randn(batch, *latent, generator=g, dtype=dtype)
    return tuple(t.requires_grad_(requires_grad) for t in (z, mu, log_var))


def monte_carlo_kl(z, mu, log_var):
    """mean_i [log q(z_i | x_i) - log p(z_i)] from torch.distributions, per data point."""
    batch = z.shape[0]
    log_q = Normal(mu, (0.5 * log_var).exp()).log_prob(z).reshape(batch, -1).sum(dim=1)
    log_p = Normal(0.0, 1.0).log_prob(z).reshape(batch, -1).sum(dim=1)
    return log_q - log_p


def chen_mws(z, mu, log_var, dataset_size):
    """rtqichen/beta-tcvae's minibatch weighted sampling (vae_quant.py), retyped for (B, D)."""
    batch_size, z_dim = z.shape
    logsigma = 0.5 * log_var

    def log_density(sample, mu, logsigma):  # lib/dist.py's Normal.log_density
        c = math.log(2 * math.pi)
        tmp = (sample - mu) * torch.exp(-logsigma)
        return -0.5 * (tmp * tmp + 2 * logsigma + c)

    logpz = log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    logqz_condx = log_density(z, mu, logsigma).sum(1)
    _logqz = log_density(
        z.view(batch_size, 1, z_dim),
        mu.view(1, batch_size, z_dim),
        logsigma.view(1, batch_size, z_dim),
    )
    logqz_prodmarginals = (
        torch.logsumexp(_logqz, dim=1) - math.log(batch_size * dataset_size)
    ).sum(1)
    logqz = torch.logsumexp(_logqz.sum(2), dim=1) - math.log(batch_size * dataset_size)
    return (
        (logqz_condx - logqz).mean(),
        (logqz - logqz_prodmarginals).mean(),
        (logqz_prodmarginals - logpz).mean(),
    )


def copied_stratified_weights(batch_size, dataset_size):
    """The weight matrix as rtqichen/beta-tcvae writes it, retyped: 1/N lands in column 0."""
    n, m = dataset_size, batch_size - 1
    strat_weight = (n - m) / (n * m)
    w = torch.full((batch_size, batch_size), 1 / m, dtype=torch.float64)
    w.view(-1)[:: m + 1] = 1 / n
    w.view(-1)[1 :: m + 1] = strat_weight
    w[m - 1, 0] = strat_weight
    return w


# The decomposition.


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("latent", LATENTS)
@pytest.mark.parametrize("batch", [2, 7, 64])
def test_the_terms_sum_to_the_monte_carlo_kl(estimator, latent, batch):
    z, mu, log_var = posterior(batch, latent)
    terms = kl_decomposition(z, mu, log_var, dataset_size=1000, estimator=estimator)
    assert isinstance(terms, KLDecomposition)
    assert all(t.shape == () and t.dtype == torch.float64 for t in terms)
    reference = monte_carlo_kl(z, mu, log_var).mean()
    torch.testing.assert_close(sum(terms), reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("batch", [2, 3, 5, 64])
def test_identical_posteriors_give_zero_mutual_information_and_total_correlation(batch):
    # Every log q(z_i | x_j) of a row is the same, so log q(z_i) = log q(z_i | x_i) + log of
    # the row sum of W: 0 for rows summing to 1, up to the rounding of a few float64 sums.
    g = torch.Generator().manual_seed(batch)
    mu = torch.randn(1, 4, generator=g, dtype=torch.float64).expand(batch, 4)
    log_var = torch.randn(1, 4, generator=g, dtype=torch.float64).expand(batch, 4)
    z = mu + torch.randn(batch, 4, generator=g, dtype=torch.float64)
    terms = kl_decomposition(z, mu, log_var, dataset_size=1000)
    assert abs(terms.mi.item()) <= 1e-14
    assert abs(terms.tc.item()) <= 1e-14
    torch.testing.assert_close(terms.dim_kl, monte_carlo_kl(z, mu, log_var).mean())


def test_the_copied_weight_matrix_fails_the_identical_posteriors_test():
    # The check above can fail: with the copied matrix, whose row B - 2 sums to 1.248 for
    # B = 5 and N = 1000, identical posteriors give mi = -log(1.248) / 5.
    w = copied_stratified_weights(5, 1000)
    torch.testing.assert_close(w.sum(dim=1), torch.tensor([1, 1, 1, 1.248, 1]).double())
    z, mu, log_var = (t[:1].expand(5, 3) for t in posterior(1))
    log_q = Normal(mu, (0.5 * log_var).exp()).log_prob(z[:, None]).sum(dim=2)  # (5, 5)
    mi = (log_q.diagonal() - torch.logsumexp(w.log() + log_q, dim=1)).mean()
    torch.testing.assert_close(mi, torch.tensor(-math.log(1.248) / 5).double())


@pytest.mark.parametrize(("batch", "dataset_size"), [(2, 2), (2, 10), (5, 1000), (64, 1797)])
def test_the_stratified_weights(batch, dataset_size):
    n, m = dataset_size, batch - 1
    expected = torch.full((batch, batch), 1 / m, dtype=torch.float64)
    for i in range(batch):
        expected[i, (i + 1) % batch] = (n - m) / (n * m)
        expected[i, i] = 1 / n
    log_w = dec._log_stratified_weights(batch, dataset_size, torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(log_w.exp(), expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(log_w.exp().sum(dim=1), torch.ones(batch).double())


def test_mws_equals_chen_et_al_minibatch_weighted_sampling():
    z, mu, log_var = posterior(16, (5,))
    got = kl_decomposition(z, mu, log_var, dataset_size=500, estimator="mws")
    for a, b in zip(got, chen_mws(z, mu, log_var, 500), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_closed_form_linear_gaussian():
    # A batch of 2,000 from a data set much larger than it (N = 1e9, the stratified weights
    # tend to 1/M off the diagonal): within the Monte Carlo error the samples at hand imply.
    z, mu, log_var = lg.sample(2000, seed=0)
    n, m = 10**9, z.shape[0] - 1
    tolerances = lg.tolerances(z, mu, mu, self_weight=1 / n, other_weight=1 / m)
    mss = kl_decomposition(z, mu, log_var, dataset_size=n)
    mws = kl_decomposition(z, mu, log_var, dataset_size=n, estimator="mws")
    for name, truth in lg.closed_form().items():
        assert abs(getattr(mss, name).item() - truth) <= tolerances[name], name
        # The test tells estimators apart: mws's weights sum to 1/N per row.
        assert abs(getattr(mws, name).item() - truth) > 100 * tolerances[name], name


def test_chunks_give_the_result_of_one_pass(monkeypatch):
    z, mu, log_var = posterior(50, (4,))
    whole = [kl_decomposition(z, mu, log_var, dataset_size=80, estimator=e) for e in ESTIMATORS]
    monkeypatch.setattr(dec, "_CHUNK_ELEMENTS", 7 * 50 * 4)  # 8 chunks, the last of 1 row
    for estimator, expected in zip(ESTIMATORS, whole, strict=True):
        got = kl_decomposition(z, mu, log_var, dataset_size=80, estimator=estimator)
        torch.testing.assert_close(tuple(got), tuple(expected), rtol=1e-14, atol=1e-14)


def test_float32_inputs_give_float32_and_a_float64_input_float64():
    z, mu, log_var = posterior(6, dtype=torch.float32)
    assert all(t.dtype == torch.float32 for t in kl_decomposition(z, mu, log_var, dataset_size=6))
    terms = kl_decomposition(z, mu.double(), log_var, dataset_size=6)
    assert all(t.dtype == torch.float64 for t in terms)
    half = kl_decomposition(z.half(), mu.half(), log_var.half(), dataset_size=6)
    assert all(t.dtype == torch.float32 for t in half)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gradcheck(estimator):
    z, mu, log_var = posterior(5, (2,), requires_grad=True)

    def fn(*args):
        return tuple(kl_decomposition(*args, dataset_size=20, estimator=estimator))

    assert torch.autograd.gradcheck(fn, (z, mu, log_var))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_torch_func_grad_of_the_sum_is_the_monte_carlo_kl_gradient(estimator):
    z, mu, log_var = posterior(9, (3,))

    def total(*args):
        return sum(kl_decomposition(*args, dataset_size=30, estimator=estimator))

    got = torch.func.grad(total, argnums=(0, 1, 2))(z, mu, log_var)
    want = torch.func.grad(lambda *a: monte_carlo_kl(*a).mean(), argnums=(0, 1, 2))(z, mu, log_var)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # Each term alone, against autograd.
    for k in range(3):
        fn_grads = torch.func.grad(
            lambda *a, k=k: kl_decomposition(*a, dataset_size=30, estimator=estimator)[k],
            argnums=(0, 1, 2),
        )(z, mu, log_var)
        inputs = tuple(t.clone().requires_grad_() for t in (z, mu, log_var))
        term = kl_decomposition(*inputs, dataset_size=30, estimator=estimator)[k]
        torch.testing.assert_close(fn_grads, torch.autograd.grad(term, inputs))


def test_vmap_over_independent_batches():
    stacked = [
        torch.stack(ts) for ts in zip(*(posterior(6, seed=s) for s in range(3)), strict=True)
    ]
    got = torch.func.vmap(lambda *a: tuple(kl_decomposition(*a, dataset_size=12)))(*stacked)
    for s in range(3):
        want = kl_decomposition(*posterior(6, seed=s), dataset_size=12)
        torch.testing.assert_close(tuple(g[s] for g in got), tuple(want), rtol=1e-12, atol=1e-12)


def test_bad_arguments():
    z, mu, log_var = posterior(4)
    with pytest.raises(
        ValueError, match=r"Argument dataset_size should be at least the batch size 4, but given 3"
    ):
        kl_decomposition(z, mu, log_var, dataset_size=3)
    with pytest.raises(TypeError, match=r"Argument dataset_size should be an int, but given float"):
        kl_decomposition(z, mu, log_var, dataset_size=10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Argument dataset_size should be a positive int"):
        kl_decomposition(z, mu, log_var, dataset_size=0)
    with pytest.raises(
        ValueError, match=r"Argument estimator should be one of 'mss', 'mws', but given 'mis'"
    ):
        kl_decomposition(z, mu, log_var, dataset_size=10, estimator="mis")
    with pytest.raises(
        ValueError,
        match=r"Arguments z and mu should have the same shape, but given z.shape=\(4, 2\) and "
        r"mu.shape=\(4, 3\)",
    ):
        kl_decomposition(z[:, :2], mu, log_var, dataset_size=10)
    with pytest.raises(ValueError, match=r"Arguments mu and log_var should have the same shape"):
        kl_decomposition(z, mu, log_var[:3], dataset_size=10)
    with pytest.raises(
        ValueError,
        match=r"Argument z should hold at least 2 data points for estimator='mss', which weighs "
        r"the other points by 1 / \(B - 1\), but given z.shape=\(1, 3\)",
    ):
        kl_decomposition(z[:1], mu[:1], log_var[:1], dataset_size=10)
    with pytest.raises(
        ValueError,
        match=r"Argument z should hold at least 1 data point, but given z.shape=\(0, 3\)",
    ):
        kl_decomposition(z[:0], mu[:0], log_var[:0], dataset_size=10, estimator="mws")
    with pytest.raises(ValueError, match=r"Argument z should have a batch dimension"):
        kl_decomposition(z[0, 0], mu[0, 0], log_var[0, 0], dataset_size=10)
    with pytest.raises(TypeError, match=r"Argument z should be a floating-point tensor"):
        kl_decomposition(z.long(), mu, log_var, dataset_size=10)
    with pytest.raises(
        ValueError, match=r"Arguments mu and z should be on the same device, but given mu.device"
    ):
        kl_decomposition(z.to("meta"), mu, log_var, dataset_size=10)


def test_one_point_is_enough_for_mws():
    z, mu, log_var = posterior(1)
    terms = kl_decomposition(z, mu, log_var, dataset_size=10, estimator="mws")
    torch.testing.assert_close(terms.mi, torch.tensor(math.log(10)).double())  # log(N B), B = 1


# The loss.


def loss_inputs(batch=6, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.rand(batch, 1, 3, 3, generator=g, dtype=torch.float64)
    x_hat = torch.rand(batch, 1, 3, 3, generator=g, dtype=torch.float64)
    return (x_hat, x, *posterior(batch, (4,), seed=seed, requires_grad=requires_grad))


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize(
    ("reduction", "recon_scale", "kl_scale"),
    [
        ("batchmean", 1 / 6, 1 / 6),
        ("sum", 1.0, 1.0),
        ("mean", 1 / 54, 1 / 24),
        (("mean", "sum"), 1 / 54, 1.0),
    ],
)
def test_unit_weights_give_recon_plus_the_monte_carlo_kl(
    estimator, reduction, recon_scale, kl_scale
):
    x_hat, x, z, mu, log_var = loss_inputs()
    out = beta_tcvae_loss(
        x_hat, x, z, mu, log_var, dataset_size=100, alpha=1.0, beta=1.0, gamma=1.0,
        estimator=estimator, reduction=reduction,
    )  # fmt: skip
    assert isinstance(out, BetaTCVAELossOutput)
    recon = F.mse_loss(x_hat, x, reduction="sum") * recon_scale
    kl = monte_carlo_kl(z, mu, log_var).sum() * kl_scale
    torch.testing.assert_close(out.recon, recon, rtol=1e-12, atol=0)
    torch.testing.assert_close(out.loss, recon + kl, rtol=1e-12, atol=1e-12)
    terms = kl_decomposition(z, mu, log_var, dataset_size=100, estimator=estimator)
    for got, term in zip(out[2:], terms, strict=True):
        torch.testing.assert_close(got, term * 6 * kl_scale, rtol=1e-12, atol=1e-12)


def test_each_term_has_its_weight():
    x_hat, x, z, mu, log_var = loss_inputs()
    out = beta_tcvae_loss(
        x_hat, x, z, mu, log_var, dataset_size=100, alpha=0.5, beta=torch.tensor(4.0), gamma=2.0
    )
    mi, tc, dim_kl = kl_decomposition(z, mu, log_var, dataset_size=100)
    torch.testing.assert_close(out.loss, out.recon + 0.5 * mi + 4.0 * tc + 2.0 * dim_kl)
    torch.testing.assert_close(out.mi, mi)
    default = beta_tcvae_loss(x_hat, x, z, mu, log_var, dataset_size=100)
    torch.testing.assert_close(default.loss, out.recon + mi + 6.0 * tc + dim_kl)  # beta = 6


@pytest.mark.parametrize("recon", ["l1", "bce", "bce_with_logits", "gaussian"])
def test_recon_is_vae_losss(recon):
    from vaekit.functional import vae_loss

    x_hat, x, z, mu, log_var = loss_inputs()
    got = beta_tcvae_loss(x_hat, x, z, mu, log_var, dataset_size=10, recon=recon).recon
    torch.testing.assert_close(got, vae_loss(x_hat, x, mu, log_var, recon=recon).recon)


def test_gradients_flow_to_z_mu_and_log_var():
    x_hat, x, z, mu, log_var = loss_inputs(requires_grad=True)
    weights = {"alpha": 1.0, "beta": 1.0, "gamma": 1.0}
    out = beta_tcvae_loss(x_hat, x, z, mu, log_var, dataset_size=100, **weights)
    grads = torch.autograd.grad(out.loss, (z, mu, log_var))
    reference = F.mse_loss(x_hat, x, reduction="sum") / 6 + monte_carlo_kl(z, mu, log_var).mean()
    torch.testing.assert_close(grads, torch.autograd.grad(reference, (z, mu, log_var)))
    # With beta = 6 the total correlation's gradient is in the loss too.
    out = beta_tcvae_loss(x_hat, x, z, mu, log_var, dataset_size=100)
    for g in torch.autograd.grad(out.loss, (z, mu, log_var)):
        assert g.isfinite().all()
        assert (g != 0).any()


def test_a_tensor_weight_that_requires_grad_is_learned():
    x_hat, x, z, mu, log_var = loss_inputs()
    beta = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    out = beta_tcvae_loss(x_hat, x, z, mu, log_var, dataset_size=100, beta=beta)
    (grad,) = torch.autograd.grad(out.loss, beta)
    torch.testing.assert_close(grad, out.tc)


def test_bad_loss_arguments():
    x_hat, x, z, mu, log_var = loss_inputs()
    kw = {"dataset_size": 100}
    with pytest.raises(ValueError, match=r"Argument recon should be one of 'mse'"):
        beta_tcvae_loss(x_hat, x, z, mu, log_var, recon="ce", **kw)
    with pytest.raises(ValueError, match=r"Argument reduction should be one of 'batchmean'"):
        beta_tcvae_loss(x_hat, x, z, mu, log_var, reduction="none", **kw)
    with pytest.raises(ValueError, match=r"Argument alpha should be a finite number >= 0"):
        beta_tcvae_loss(x_hat, x, z, mu, log_var, alpha=-1.0, **kw)
    with pytest.raises(TypeError, match=r"Argument gamma should be a float or a tensor"):
        beta_tcvae_loss(x_hat, x, z, mu, log_var, gamma="1", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Argument estimator should be one of"):
        beta_tcvae_loss(x_hat, x, z, mu, log_var, estimator="MSS", **kw)
    with pytest.raises(
        ValueError, match=r"Argument dataset_size should be at least the batch size 6, but given 5"
    ):
        beta_tcvae_loss(x_hat, x, z, mu, log_var, dataset_size=5)
    with pytest.raises(
        ValueError, match=r"Arguments x and mu should have the same batch size \(dimension 0\)"
    ):
        beta_tcvae_loss(x_hat[:5], x[:5], z, mu, log_var, **kw)
    with pytest.raises(ValueError, match=r"Arguments x_hat and x should have the same shape"):
        beta_tcvae_loss(x_hat[:, :, :2], x, z, mu, log_var, **kw)
    with pytest.raises(ValueError, match=r"Arguments z and mu should have the same shape"):
        beta_tcvae_loss(x_hat, x, z[:, :3], mu, log_var, **kw)
    with pytest.raises(TypeError, match=r"Argument dataset_size should be an int"):
        beta_tcvae_loss(x_hat, x, z, mu, log_var, dataset_size="100")  # type: ignore[arg-type]
