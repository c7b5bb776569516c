"""vae_loss and convert_beta against torch.nn.functional, torch.distributions and float64 maths."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import Normal, kl_divergence

from vaekit import VAELossOutput, convert_beta
from vaekit.functional import vae_loss

RECONS = ["mse", "l1", "bce", "bce_with_logits", "gaussian"]
REDUCTIONS = ["batchmean", "mean", "sum"]
PAIRS = [(r, k) for r in REDUCTIONS for k in REDUCTIONS]

# The notebook's (B, C, H, W) = (2, 1, 1, 2) tensors.
NB_X = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 4.0]]]])
NB_X_HAT = torch.tensor([[[[1.5, 2.5]]], [[[2.0, 5.0]]]])


def inputs(
    recon="mse", shape=(4, 3, 2, 2), latent=(4, 5), dtype=torch.float64, seed=0, device="cpu"
):
    """x_hat in the domain ``recon`` expects, a target x in [0, 1], and a posterior."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    x_hat = torch.randn(shape, generator=g, dtype=torch.float64)
    if recon == "bce":
        x_hat = torch.sigmoid(x_hat)
    mu = torch.randn(latent, generator=g, dtype=torch.float64)
    log_var = torch.randn(latent, generator=g, dtype=torch.float64)
    return tuple(t.to(device, dtype) for t in (x_hat, x, mu, log_var))


def f_reduce(fn, reduction, batch):
    """Reduce with torch's own 'mean'/'sum'; 'batchmean' is the sum over the batch size."""
    if reduction == "batchmean":
        return fn("sum") / batch
    return fn(reduction)


def recon_reference(x_hat, x, recon, reduction, var=1.0):
    """The reconstruction term from torch.nn.functional, reduced by torch."""
    if recon == "gaussian":
        var_t = torch.as_tensor(var, dtype=x.dtype).expand_as(x)

        def fn(r):
            return F.gaussian_nll_loss(x_hat, x, var_t, full=True, eps=0.0, reduction=r)

    else:
        f = {
            "mse": F.mse_loss,
            "l1": F.l1_loss,
            "bce": F.binary_cross_entropy,
            "bce_with_logits": F.binary_cross_entropy_with_logits,
        }[recon]

        def fn(r):
            return f(x_hat, x, reduction=r)

    return f_reduce(fn, reduction, x.shape[0])


def kl_reference(mu, log_var, reduction):
    """The KL from N(0, I) by torch.distributions in float64."""
    mu, log_var = mu.double(), log_var.double()
    q = Normal(mu, (0.5 * log_var).exp())
    kl = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    return f_reduce(lambda r: getattr(kl, r)(), reduction, mu.shape[0])


# ---------------------------------------------------------------- values


def test_the_notebook_tensors():
    mu = log_var = torch.zeros(2, 3)
    by_reduction = {r: vae_loss(NB_X_HAT, NB_X, mu, log_var, reduction=r) for r in REDUCTIONS}
    assert by_reduction["mean"].recon.item() == pytest.approx(0.625)
    assert F.mse_loss(NB_X_HAT, NB_X, reduction="mean").item() == pytest.approx(0.625)
    assert by_reduction["batchmean"].recon.item() == pytest.approx(1.25)
    assert by_reduction["sum"].recon.item() == pytest.approx(2.5)
    for out in by_reduction.values():
        assert isinstance(out, VAELossOutput)
        assert out.kl.item() == 0.0
        assert out.loss.item() == out.recon.item()


@pytest.mark.parametrize("recon", RECONS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_is_recon_plus_beta_kl_against_torch(recon, reduction, device, dtype):
    x_hat, x, mu, log_var = inputs(recon, dtype=dtype, device=device)
    out = vae_loss(x_hat, x, mu, log_var, recon=recon, beta=0.37, reduction=reduction)
    want_recon = recon_reference(x_hat.double(), x.double(), recon, reduction)
    want_kl = kl_reference(mu, log_var, reduction)
    want = VAELossOutput(want_recon + 0.37 * want_kl, want_recon, want_kl)
    for got, expected in zip(out, want, strict=True):
        assert (got.shape, got.dtype, got.device) == ((), dtype, device)
        # float32 sums of 48 elements and a few transcendental functions
        tol = (
            {"rtol": 1e-5, "atol": 1e-6}
            if dtype == torch.float32
            else {"rtol": 1e-12, "atol": 1e-12}
        )
        torch.testing.assert_close(got.double(), expected, **tol)


@pytest.mark.parametrize("pair", PAIRS)
def test_a_reduction_pair_reduces_each_term_its_own_way(pair, device):
    x_hat, x, mu, log_var = inputs(device=device)
    out = vae_loss(x_hat, x, mu, log_var, beta=2.0, reduction=pair)
    want_recon = recon_reference(x_hat, x, "mse", pair[0])
    want_kl = kl_reference(mu, log_var, pair[1])
    torch.testing.assert_close(out.recon, want_recon)
    torch.testing.assert_close(out.kl, want_kl)
    torch.testing.assert_close(out.loss, want_recon + 2.0 * want_kl)


def test_gaussian_matches_normal_log_prob_with_a_given_variance(device):
    x_hat, x, mu, log_var = inputs("gaussian", device=device)
    for var in (0.05, 3.0):
        out = vae_loss(x_hat, x, mu, log_var, recon="gaussian", recon_var=var)
        nll = -Normal(x_hat, math.sqrt(var)).log_prob(x)
        torch.testing.assert_close(out.recon, nll.sum() / x.shape[0])
    var = torch.tensor([0.2, 1.0, 4.0], dtype=torch.float64, device=device).view(3, 1, 1)
    out = vae_loss(x_hat, x, mu, log_var, recon="gaussian", recon_var=var, reduction="mean")
    nll = -Normal(x_hat, var.sqrt().expand_as(x)).log_prob(x)
    torch.testing.assert_close(out.recon, nll.mean())
    torch.testing.assert_close(out.recon, recon_reference(x_hat, x, "gaussian", "mean", var))


def test_unit_variance_gaussian_is_half_mse_plus_the_constant():
    x_hat, x, mu, log_var = inputs()
    gauss = vae_loss(x_hat, x, mu, log_var, recon="gaussian", reduction="mean").recon
    mse = vae_loss(x_hat, x, mu, log_var, reduction="mean").recon
    torch.testing.assert_close(gauss, 0.5 * mse + 0.5 * math.log(2 * math.pi))


def test_bce_clamps_the_log_at_minus_100_like_torch():
    x_hat = torch.tensor([[0.0, 1.0, 0.5, 1.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    mu = log_var = torch.zeros(1, 2, dtype=torch.float64)
    out = vae_loss(x_hat, x, mu, log_var, recon="bce", reduction="sum")
    assert out.recon.item() == pytest.approx(200.0 + math.log(2.0))
    torch.testing.assert_close(out.recon, F.binary_cross_entropy(x_hat, x, reduction="sum"))


def test_bce_with_logits_is_stable_where_sigmoid_then_bce_is_not():
    logits = torch.tensor([[-200.0, -30.0, 0.0, 30.0, 200.0]])
    x = torch.tensor([[1.0, 1.0, 0.5, 0.0, 0.0]])
    mu = log_var = torch.zeros(1, 2)
    got = vae_loss(logits, x, mu, log_var, recon="bce_with_logits", reduction="sum").recon
    lg, t = logits.double(), x.double()
    want = (F.softplus(lg) - t * lg).sum()  # float64: -log(sigmoid(l)) = softplus(-l), etc.
    torch.testing.assert_close(got.double(), want)
    naive = vae_loss(torch.sigmoid(logits), x, mu, log_var, recon="bce", reduction="sum").recon
    assert abs(naive.item() - want.item()) > 1.0  # the clamp at -100 distorts it


def test_callable_recon_returns_an_elementwise_loss():
    x_hat, x, mu, log_var = inputs()

    def huber(a, b):
        return F.huber_loss(a, b, reduction="none", delta=0.3)

    out = vae_loss(x_hat, x, mu, log_var, recon=huber, reduction="batchmean")
    torch.testing.assert_close(out.recon, F.huber_loss(x_hat, x, reduction="sum", delta=0.3) / 4)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_capacity_objective(reduction, device):
    x_hat, x, mu, log_var = inputs(device=device)
    kl = kl_reference(mu, log_var, reduction)
    recon = recon_reference(x_hat, x, "mse", reduction)
    for capacity in (0.0, 0.5 * kl.item(), 2.0 * kl.item()):
        for c in (capacity, torch.tensor(capacity, device=device)):
            out = vae_loss(x_hat, x, mu, log_var, beta=5.0, reduction=reduction, capacity=c)
            torch.testing.assert_close(out.loss, recon + 5.0 * (kl - capacity).abs())
            torch.testing.assert_close(out.kl, kl)


def test_capacity_pushes_the_kl_towards_it_from_both_sides():
    x_hat, x, _, log_var = inputs()
    mu = torch.full((4, 5), 0.5, dtype=torch.float64, requires_grad=True)
    kl = vae_loss(x_hat, x, mu, log_var).kl.item()
    for capacity, sign in ((kl - 1.0, 1.0), (kl + 1.0, -1.0)):
        mu.grad = None
        vae_loss(x_hat, x, mu, log_var, capacity=capacity).loss.backward()
        assert mu.grad is not None
        # d KL / d mu = mu / B > 0: below C the loss rewards a larger KL.
        torch.testing.assert_close(mu.grad, sign * mu.detach() / 4)


def test_free_bits_pass_through_to_the_kl():
    x_hat, x, mu, log_var = inputs()
    no_floor = kl_reference(mu, log_var, "batchmean")
    q = Normal(mu, (0.5 * log_var).exp())
    per_unit = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).mean(0)
    out = vae_loss(x_hat, x, mu, log_var, free_bits=1.0)
    torch.testing.assert_close(out.kl, per_unit.clamp_min(1.0).sum())
    assert out.kl.item() > no_floor.item()


def test_tensor_beta_equals_float_beta():
    x_hat, x, mu, log_var = inputs()
    want = vae_loss(x_hat, x, mu, log_var, beta=0.25)
    for beta in (torch.tensor(0.25), torch.tensor([0.25], dtype=torch.float64)):
        got = vae_loss(x_hat, x, mu, log_var, beta=beta)
        assert got.loss.shape == ()
        assert got.loss.dtype == torch.float64
        torch.testing.assert_close(got, want)


def test_half_precision_is_reduced_in_float32():
    # 100,000 squared errors of 1: a float16 sum would overflow at 65,504.
    x_hat, x = torch.zeros(2, 100_000, dtype=torch.float16), torch.ones(2, 100_000).half()
    mu = log_var = torch.zeros(2, 3, dtype=torch.float16)
    out = vae_loss(x_hat, x, mu, log_var, reduction="sum")
    assert out.loss.dtype == torch.float32
    assert out.recon.item() == 200_000.0


def test_mixed_dtypes_promote():
    x_hat, x, mu, log_var = inputs()
    out = vae_loss(x_hat, x.float(), mu.float(), log_var.float())
    assert out.recon.dtype == torch.float64
    assert out.kl.dtype == torch.float32
    assert out.loss.dtype == torch.float64


# ---------------------------------------------------------------- properties


@given(
    b=st.integers(1, 5),
    d=st.integers(1, 6),
    latent=st.integers(1, 4),
    recon=st.sampled_from(RECONS),
    beta=st.floats(0.0, 10.0),
    free_bits=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 2**31 - 1),
)
def test_sum_is_batch_times_batchmean_and_mean_divides_by_size(
    b, d, latent, recon, beta, free_bits, seed
):
    x_hat, x, mu, log_var = inputs(recon, shape=(b, d), latent=(b, latent), seed=seed)

    def out(reduction):
        return vae_loss(
            x_hat, x, mu, log_var, recon=recon, beta=beta, reduction=reduction, free_bits=free_bits
        )

    batchmean, total, mean = out("batchmean"), out("sum"), out("mean")
    for got, want in zip(total, batchmean, strict=True):
        torch.testing.assert_close(got, b * want)
    torch.testing.assert_close(mean.recon * d, batchmean.recon)
    torch.testing.assert_close(mean.kl * latent, batchmean.kl)


reductions = st.sampled_from(REDUCTIONS) | st.tuples(
    st.sampled_from(REDUCTIONS), st.sampled_from(REDUCTIONS)
)


@given(
    source=reductions,
    target=reductions,
    beta=st.floats(0.0, 100.0),
    b=st.integers(1, 5),
    d=st.integers(1, 50),
    latent=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
)
def test_convert_beta_leaves_the_objective_unchanged_up_to_scale(
    source, target, beta, b, d, latent, seed
):
    x_hat, x, mu, log_var = inputs(shape=(b, d), latent=(b, latent), seed=seed)
    new_beta = convert_beta(
        beta, source=source, target=target, input_size=d, latent_size=latent, batch_size=b
    )
    a = vae_loss(x_hat, x, mu, log_var, beta=beta, reduction=source)
    t = vae_loss(x_hat, x, mu, log_var, beta=new_beta, reduction=target)
    # Under any reduction the loss is (recon scale) * (R + beta_per_datapoint * K).
    torch.testing.assert_close(t.loss, a.loss * t.recon / a.recon)


def test_convert_beta_reproduces_the_notebook_and_higgins():
    ported = ("mean", "batchmean")
    # The notebook's beta of 1 with x of shape (64, 1, 4096, 4096), and with 3x64x64 images.
    assert (
        convert_beta(1.0, source=ported, target="batchmean", input_size=4096**2, latent_size=10)
        == 16_777_216.0
    )
    assert (
        convert_beta(1.0, source=ported, target="sum", input_size=3 * 64 * 64, latent_size=10)
        == 12_288.0
    )
    # Higgins et al. (2017): beta_norm = beta * latent_size / input_size.
    beta_norm = convert_beta(
        4.0, source="batchmean", target="mean", input_size=4096, latent_size=10
    )
    assert beta_norm == pytest.approx(4.0 * 10 / 4096)
    back = convert_beta(
        beta_norm, source="mean", target="batchmean", input_size=4096, latent_size=10
    )
    assert back == pytest.approx(4.0)
    # The mean convention per recon element with a per-datapoint KL sum over 10 latents.
    assert convert_beta(
        2.0, source="mean", target=ported, input_size=100, latent_size=10
    ) == pytest.approx(2.0 / 10)
    halves = convert_beta(
        1.0, source=("sum", "batchmean"), target="batchmean", input_size=5, latent_size=2,
        batch_size=8,
    )  # fmt: skip
    assert halves == pytest.approx(1 / 8)


# ---------------------------------------------------------------- gradients


def hand_written(x_hat, x, mu, log_var, beta):
    """The per-data-point negative ELBO with an MSE, written out in float64."""
    b = x.shape[0]
    recon = ((x_hat - x) ** 2).sum() / b
    kl = (-0.5 * (1 + log_var - mu**2 - log_var.exp())).sum() / b
    return recon + beta * kl


def test_gradients_reach_x_hat_mu_and_log_var(device):
    args = [t.requires_grad_() for t in inputs(device=device)]
    ref = [t.detach().clone().requires_grad_() for t in args]
    x_hat, x, mu, log_var = args
    vae_loss(x_hat, x, mu, log_var, beta=0.7).loss.backward()
    hand_written(*ref, beta=0.7).backward()
    for got, want in zip(args, ref, strict=True):
        assert got.grad is not None
        assert want.grad is not None
        assert got.grad.abs().sum() > 0
        torch.testing.assert_close(got.grad, want.grad)


@pytest.mark.parametrize("recon", RECONS)
def test_gradcheck(recon, device):
    x_hat, x, mu, log_var = inputs(recon, shape=(2, 3), latent=(2, 2), device=device)
    if recon == "bce":
        x_hat = x_hat.clamp(0.05, 0.95)
    var = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, device=device, requires_grad=True)

    def fn(a, m, lv, v):
        kw = {"recon_var": v} if recon == "gaussian" else {}
        return vae_loss(a, x, m, lv, recon=recon, beta=0.5, capacity=0.1, **kw).loss

    args = (x_hat.requires_grad_(), mu.requires_grad_(), log_var.requires_grad_(), var)
    assert torch.autograd.gradcheck(fn, args)


# ---------------------------------------------------------------- errors


def test_shape_errors_name_the_shapes():
    x_hat, x, mu, log_var = inputs()
    with pytest.raises(
        ValueError,
        match=r"Arguments x_hat and x should have the same shape, but given "
        r"x_hat.shape=\(4, 3, 2, 2\) and x.shape=\(4, 3, 2\)",
    ):
        vae_loss(x_hat, x[..., 0], mu, log_var)
    with pytest.raises(
        ValueError,
        match=r"Arguments mu and log_var should have the same shape, but given "
        r"mu.shape=\(4, 5\) and log_var.shape=\(4, 4\)",
    ):
        vae_loss(x_hat, x, mu, log_var[:, :4])
    with pytest.raises(
        ValueError,
        match=r"Arguments x and mu should have the same batch size \(dimension 0\), but given "
        r"x.shape=\(4, 3, 2, 2\) and mu.shape=\(3, 5\)",
    ):
        vae_loss(x_hat, x, mu[:3], log_var[:3])
    scalar = torch.tensor(0.5)
    with pytest.raises(
        ValueError,
        match=r"Argument x should have a batch dimension, but given a 0-dimensional tensor",
    ):
        vae_loss(scalar, scalar, mu, log_var)
    with pytest.raises(ValueError, match=r"Argument mu should have a batch dimension"):
        vae_loss(x_hat, x, scalar, scalar)


def test_type_errors():
    x_hat, x, mu, log_var = inputs()
    with pytest.raises(TypeError, match=r"Argument x_hat should be a torch.Tensor, but given list"):
        vae_loss([0.0], x, mu, log_var)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"Argument x should be a floating-point tensor, but given dtype torch.int64",
    ):
        vae_loss(x_hat, x.long(), mu, log_var)


def re_escape(value):
    return re.escape(repr(value))


def _weight_errors(name):
    """What beta and capacity refuse, as floats and as tensors (VAELoss refuses the same)."""
    finite = rf"Argument {name} should be a finite number >= 0"
    return [
        *[
            ({name: bad}, ValueError, rf"{finite}, but given {bad}")
            for bad in (-0.5, math.inf, math.nan)
        ],
        *[
            ({name: torch.tensor(bad, dtype=torch.float64)}, ValueError, finite)
            for bad in (-1.0, math.nan, 1e39)
        ],
        *[
            (
                {name: bad},
                TypeError,
                rf"Argument {name} should be a float or a tensor, but given {type(bad).__name__}",
            )
            for bad in (True, "0.5")
        ],
        (
            {name: torch.ones(2)},
            ValueError,
            rf"Argument {name} should be a one-element tensor, but given {name}.shape=\(2,\)",
        ),
        ({name: torch.tensor(1)}, TypeError, rf"Argument {name} should be a floating-point tensor"),
    ]


RECON_VAR = (
    r"Argument recon_var should be a number > 0, a tensor or one of 'optimal', 'optimal_channel', "
    r"but given "
)
SYNC_DIST = (
    r"Argument sync_dist should be False unless recon_var is 'optimal' or 'optimal_channel' "
    r"\(only a batch-optimal variance is shared across processes\), but given sync_dist=True "
    r"with recon_var="
)
# (settings, exception, the message it matches): every refused setting of vae_loss
SETTING_ERRORS = [
    ({"recon": 3}, TypeError, r"Argument recon should be a str or a callable, but given int"),
    (
        {"recon": "ce"},
        ValueError,
        r"Argument recon should be one of 'mse', 'l1', 'bce', 'bce_with_logits', 'gaussian', "
        r"'discretized_gaussian', 'discretized_logistic' or a callable, but given 'ce'",
    ),
    *[
        (
            {"reduction": bad},
            ValueError,
            r"Argument reduction should be one of 'batchmean', 'mean', 'sum', or a \(recon, kl\) "
            rf"tuple of them, but given {re_escape(bad)}",
        )
        for bad in ("none", ("mean",), ("mean", "avg"), ["mean", "sum"])
    ],
    *_weight_errors("beta"),
    *_weight_errors("capacity"),
    (
        {"beta": 1e300},
        ValueError,
        r"Argument beta should be at most 3.403e\+38, the largest float32, but given 1e\+300",
    ),
    (
        {"recon_var": 2.0},
        ValueError,
        r"Argument recon_var should be None unless recon is one of 'gaussian', "
        r"'discretized_gaussian', 'discretized_logistic', but given recon_var=2.0 with "
        r"recon='mse'",
    ),
    (
        {"recon": "bce_with_logits", "recon_var": "optimal"},
        ValueError,
        r"Argument recon_var should be None unless recon is",
    ),
    *[
        (
            {"recon": "gaussian", "recon_var": bad},
            ValueError,
            rf"Argument recon_var should be a finite number > 0, but given {bad}",
        )
        for bad in (0.0, -1.0)
    ],
    *[
        (
            {"recon": "gaussian", "recon_var": bad.double()},
            ValueError,
            r"Argument recon_var should be finite and > 0 everywhere, but given",
        )
        for bad in (torch.zeros(1), torch.tensor([1.0, -2.0, 1.0]), torch.tensor([math.nan]))
    ],
    *[
        ({"recon": "gaussian", "recon_var": bad}, ValueError, RECON_VAR + f"'{bad}'")
        for bad in ("1", "learned")
    ],
    (
        {"recon": "gaussian", "recon_var": [1.0]},
        TypeError,
        r"Argument recon_var should be a float, but given list",
    ),
    (
        {"recon": "gaussian", "recon_var": torch.ones(5)},
        ValueError,
        r"Argument recon_var should broadcast to x.shape=\(4, 3, 2, 2\), but given "
        r"recon_var.shape=\(5,\)",
    ),
    (
        {"recon": "gaussian", "recon_var": "optimal", "sync_dist": 1},
        TypeError,
        r"Argument sync_dist should be a bool, but given int",
    ),
    *[
        ({"recon": "gaussian", "recon_var": recon_var, "sync_dist": True}, ValueError, SYNC_DIST)
        for recon_var in (None, 2.0, torch.ones(1))
    ],
    (
        {"recon": lambda a, b: F.mse_loss(a, b)},
        ValueError,
        r"Argument recon should return an elementwise loss of x.shape=\(4, 3, 2, 2\), "
        r"but given recon\(x_hat, x\).shape=\(\)",
    ),
    (
        {"recon": lambda a, b: 0.0},
        TypeError,
        r"Argument recon should return a torch.Tensor, but given float",
    ),
    *[
        (
            {"recon": lambda a, b, d=dtype: torch.zeros(b.shape, dtype=d)},
            TypeError,
            rf"Argument recon should return a real floating-point tensor, but given dtype {dtype}",
        )
        for dtype in (torch.complex64, torch.int64)
    ],
    (  # inputs()' x_hat is unbounded: logits
        {"recon": "bce"},
        ValueError,
        r"Argument x_hat should hold probabilities in \[0, 1\] for recon='bce', but given "
        r"values from .* to .*; for logits, use recon='bce_with_logits'",
    ),
    ({"free_bits": -1.0}, ValueError, r"Argument free_bits should be a finite number >= 0"),
]


@pytest.mark.parametrize(("settings", "error", "match"), SETTING_ERRORS)
def test_a_refused_setting_is_named_with_its_value(settings, error, match):
    x_hat, x, mu, log_var = inputs()
    with pytest.raises(error, match=match):
        vae_loss(x_hat, x, mu, log_var, **settings)


def test_empty_batch_errors():
    _, _, mu, log_var = inputs()
    empty = torch.zeros(4, 0)
    with pytest.raises(
        ValueError,
        match=r"Argument x should not be empty for reduction='batchmean', but given "
        r"x.shape=\(4, 0\) \(the result would be NaN\)",
    ):
        vae_loss(empty, empty, mu, log_var)
    out = vae_loss(empty, empty, mu, log_var, reduction=("sum", "batchmean"))
    torch.testing.assert_close(out.recon, torch.tensor(0.0))


def test_convert_beta_errors():
    kw = {"input_size": 10, "latent_size": 2}
    with pytest.raises(
        ValueError,
        match=r"Argument batch_size should be given to convert a beta for source="
        r"\('sum', 'mean'\), whose batch size does not cancel, but given None",
    ):
        convert_beta(1.0, source=("sum", "mean"), target="mean", **kw)
    with pytest.raises(ValueError, match=r"Argument beta should be a finite number >= 0"):
        convert_beta(-1.0, source="mean", target="sum", **kw)
    with pytest.raises(
        ValueError, match=r"Argument input_size should be a positive int, but given 0"
    ):
        convert_beta(1.0, source="mean", target="sum", input_size=0, latent_size=2)
    with pytest.raises(TypeError, match=r"Argument latent_size should be an int, but given float"):
        convert_beta(1.0, source="mean", target="sum", input_size=3, latent_size=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Argument batch_size should be a positive int"):
        convert_beta(1.0, source="mean", target="sum", batch_size=0, **kw)
    with pytest.raises(ValueError, match=r"Argument target should be one of .* but given 'none'"):
        convert_beta(1.0, source="sum", target="none", **kw)


# ---------------------------------------------------------------- careless input


def test_a_learnable_beta_gets_its_gradient():
    x_hat, x, mu, log_var = inputs()
    beta = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    out = vae_loss(x_hat, x, mu, log_var, beta=beta)
    out.loss.backward()
    assert beta.grad is not None
    torch.testing.assert_close(beta.grad, out.kl.detach())


def test_inputs_on_another_device_are_refused():
    x_hat, x, mu, log_var = inputs()
    meta = torch.empty(x.shape, device="meta", dtype=x.dtype)
    with pytest.raises(
        ValueError,
        match=r"Arguments x and x_hat should be on the same device, but given x.device=cpu and "
        r"x_hat.device=meta",
    ):
        vae_loss(meta, x, mu, log_var)
    with pytest.raises(ValueError, match=r"Arguments mu and log_var should be on the same device"):
        vae_loss(x_hat, x, mu, log_var.to("meta"))


# ---------------------------------------------------------------- calibrated decoders (sigma-VAE)


def _softclip(tensor, minimum):
    """The sigma-VAE reference's soft clip, retyped from Rybkin et al. (2021):
    ``min + softplus(tensor - min)``."""
    return minimum + np.logaddexp(0.0, tensor - minimum)


def _reference_gaussian_nll(x_hat, x, log_sigma):
    """The reference's ``gaussian_nll``: 0.5 ((x - mu) / sigma)^2 + log sigma + 0.5 log 2 pi."""
    return 0.5 * ((x - x_hat) / np.exp(log_sigma)) ** 2 + log_sigma + 0.5 * np.log(2 * np.pi)


@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (5, 7), (3, 1, 8)])
def test_the_optimal_variance_gives_the_closed_form(shape, device):
    x_hat, x, mu, log_var = inputs("gaussian", shape=shape, latent=(shape[0], 2), device=device)
    out = vae_loss(x_hat, x, mu, log_var, recon="gaussian", recon_var="optimal", min_log_sigma=None)
    d = x[0].numel()
    mse = (x - x_hat).square().mean()
    torch.testing.assert_close(out.recon, d / 2 * (1 + torch.log(2 * math.pi * mse)))


@pytest.mark.parametrize("scale", [1e-4, 1e-3, 0.3, 5.0])
def test_the_soft_clip_is_the_reference_code(scale):
    x_hat, x, mu, log_var = inputs("gaussian")
    x_hat = x + scale * (x_hat - x)  # from far below the clip (sigma ~ 1e-4) to far above
    out = vae_loss(x_hat, x, mu, log_var, recon="gaussian", recon_var="optimal")
    xh, xx = x_hat.numpy(), x.numpy()
    log_sigma = _softclip(np.log(np.sqrt(((xx - xh) ** 2).mean())), -6.0)
    want = _reference_gaussian_nll(xh, xx, log_sigma).sum() / x.shape[0]
    assert out.recon.item() == pytest.approx(want, rel=1e-12)
    other = vae_loss(x_hat, x, mu, log_var, recon="gaussian", recon_var="optimal", min_log_sigma=-2)
    log_sigma = _softclip(np.log(np.sqrt(((xx - xh) ** 2).mean())), -2.0)
    want = _reference_gaussian_nll(xh, xx, log_sigma).sum() / x.shape[0]
    assert other.recon.item() == pytest.approx(want, rel=1e-12)


def test_the_gradient_of_the_optimal_variance_is_the_envelope_theorem(device):
    x_hat, x, mu, log_var = inputs("gaussian", shape=(5, 2, 3), latent=(5, 2), device=device)
    x_hat.requires_grad_()
    out = vae_loss(x_hat, x, mu, log_var, recon="gaussian", recon_var="optimal", min_log_sigma=None)
    (grad,) = torch.autograd.grad(out.recon, x_hat)
    sigma2 = (x - x_hat).square().mean().detach()
    torch.testing.assert_close(grad, (x_hat - x).detach() / (x.shape[0] * sigma2))

    # The same under torch.func.grad.
    def recon(a):
        kw = {"recon": "gaussian", "recon_var": "optimal", "min_log_sigma": None}
        return vae_loss(a, x, mu, log_var, **kw).recon

    torch.testing.assert_close(torch.func.grad(recon)(x_hat.detach()), grad)


def test_one_optimal_variance_per_channel():
    x_hat, x, mu, log_var = inputs("gaussian", shape=(4, 3, 5, 2))
    out = vae_loss(
        x_hat, x, mu, log_var, recon="gaussian", recon_var="optimal_channel", min_log_sigma=None
    )
    mse = (x - x_hat).square().mean(dim=(0, 2, 3))
    per_channel = 10 / 2 * (1 + torch.log(2 * math.pi * mse))
    torch.testing.assert_close(out.recon, per_channel.sum())
    var = mse.reshape(3, 1, 1)
    given = vae_loss(x_hat, x, mu, log_var, recon="gaussian", recon_var=var)
    torch.testing.assert_close(out.recon, given.recon)  # the value, not the gradient


def test_a_perfect_reconstruction_gets_the_clip_and_a_zero_gradient():
    x = torch.rand(3, 4, dtype=torch.float64)
    mu = log_var = torch.zeros(3, 2, dtype=torch.float64)
    x_hat = x.clone().requires_grad_()
    for recon_var in ("optimal", "optimal_channel"):
        out = vae_loss(x_hat, x, mu, log_var, recon="gaussian", recon_var=recon_var)
        assert out.recon.item() == pytest.approx(4 * (-6.0 + 0.5 * math.log(2 * math.pi)))
        (grad,) = torch.autograd.grad(out.recon, x_hat)
        assert torch.equal(grad, torch.zeros_like(x))


@pytest.mark.parametrize("recon", ["discretized_gaussian", "discretized_logistic"])
def test_discretized_recons_take_the_optimal_variance_too(recon):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 17, (4, 2, 3), generator=g).double() / 16
    x_hat = (x + 0.05 * torch.randn(4, 2, 3, generator=g, dtype=torch.float64)).requires_grad_()
    mu = log_var = torch.zeros(4, 1, dtype=torch.float64)
    out = vae_loss(x_hat, x, mu, log_var, recon=recon, recon_var="optimal", num_bins=17)
    var = (x - x_hat).square().mean()
    log_sigma = -6.0 + F.softplus(0.5 * var.log() + 6.0)  # the reference's soft clip
    clipped = (2 * log_sigma).exp()
    want = vae_loss(x_hat, x, mu, log_var, recon=recon, recon_var=clipped, num_bins=17)
    torch.testing.assert_close(out.recon, want.recon)
    grads = [torch.autograd.grad(o.recon, x_hat)[0] for o in (out, want)]
    torch.testing.assert_close(grads[0], grads[1])  # the variance is differentiable


def test_sync_dist_without_a_process_group_uses_the_local_batch():
    x_hat, x, mu, log_var = inputs("gaussian")
    for recon_var in ("optimal", "optimal_channel"):
        kw = {"recon": "gaussian", "recon_var": recon_var}
        got = vae_loss(x_hat, x, mu, log_var, sync_dist=True, **kw)
        assert torch.equal(got.loss, vae_loss(x_hat, x, mu, log_var, **kw).loss)


def test_a_channel_optimal_variance_needs_a_channel_dimension():
    x_hat, x, mu, log_var = inputs("gaussian")
    with pytest.raises(
        ValueError,
        match=r"Argument recon_var='optimal_channel' needs a channel dimension 1 of x, but given "
        r"x.shape=\(4,\)",
    ):
        vae_loss(
            x_hat[:, 0, 0, 0],
            x[:, 0, 0, 0],
            mu,
            log_var,
            recon="gaussian",
            recon_var="optimal_channel",
        )
