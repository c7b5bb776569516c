"""kl_divergence_normal under every transform, against the same transform of
torch.distributions' Normal-Normal KL in float64.

Each case runs on a small latent and on a large one (see ``_kl_reference.SMALL`` and
``LARGE``), for every reduction, with and without a prior and free bits, in each dtype and on
each device of ``--dtype`` and ``--device`` (float32 and float64 on the CPU by default): between
them they take every path the KL has.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import func

from tests.functional._kl_reference import LARGE, SMALL, distributions_kl, make
from vaekit import KLDivergenceNormal, VAELoss
from vaekit.functional import kl_divergence_normal

SETTINGS = [("none", 0.0)] + [(r, fb) for r in ("sum", "mean", "batchmean") for fb in (0.0, 0.3)]
CASES = [
    pytest.param(
        reduction,
        free_bits,
        prior,
        shape,
        id=f"{reduction}-fb{free_bits}-{prior}-{'x'.join(map(str, shape))}",
    )
    for reduction, free_bits in SETTINGS
    for prior in ("none", "both")
    for shape in (SMALL, LARGE)
]
SMALL_CASES = [c for c in CASES if c.values[3] == SMALL]
ARGS = ("reduction", "free_bits", "prior", "shape")


def setup(reduction, free_bits, prior, shape, device, dtype):
    """The arguments, vaekit's and the reference's KL of them, and weights that turn a
    ``"none"`` result into a scalar."""
    mu, log_var, prior_mu, prior_log_var = make(shape, prior)
    args = tuple(
        t.to(device, dtype) for t in (mu, log_var, prior_mu, prior_log_var) if t is not None
    )

    def ours(*a):
        prior_args = a[2:] if len(a) == 4 else (None, None)
        return kl_divergence_normal(*a[:2], *prior_args, reduction=reduction, free_bits=free_bits)

    def theirs(*a):
        prior_args = a[2:] if len(a) == 4 else (None, None)
        return distributions_kl(*a[:2], *prior_args, reduction=reduction, free_bits=free_bits)

    weights = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    return args, ours, theirs, weights.to(device)


def scalar(fn, weights):
    def f(*a):
        out = fn(*a)
        return (out * weights.to(out.dtype)).sum() if out.dim() > 0 else out

    return f


def as_reference(args):
    """The float64 copies the reference takes: the same values as the (maybe float32) args."""
    return tuple(t.double() for t in args)


def tangents_for(theirs, weights, args):
    """Tangents of random size whose signs follow the reference gradient, so that a reduced
    tangent adds non-negative terms and its relative error is that of a sum, not of a
    cancellation."""
    ref_args = as_reference(args)
    grads = func.grad(scalar(theirs, weights), argnums=tuple(range(len(args))))(*ref_args)
    g = torch.Generator().manual_seed(7)
    return tuple(
        (gr.sign() * torch.rand(gr.shape, dtype=torch.float64, generator=g).to(gr)).to(a.dtype)
        for gr, a in zip(grads, args, strict=True)
    )


def assert_matches(got, want, dtype):
    """float64 to float64's precision; float32 to float32's, against the float64 reference."""
    rtol, atol = (1e-10, 1e-12) if dtype == torch.float64 else (2e-5, 1e-5)
    got = torch.utils._pytree.tree_map(lambda t: t.double(), got)
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


ARGNUMS = {2: (0, 1), 4: (0, 1, 2, 3)}


@pytest.mark.parametrize(ARGS, CASES)
def test_vjp(reduction, free_bits, prior, shape, device, dtype):
    args, ours, theirs, w = setup(reduction, free_bits, prior, shape, device, dtype)
    out, pullback = func.vjp(ours, *args)
    ref_out, ref_pullback = func.vjp(theirs, *as_reference(args))
    cotangent = w if reduction == "none" else torch.tensor(0.7, dtype=torch.float64, device=device)
    assert_matches(out, ref_out, dtype)
    assert_matches(pullback(cotangent.to(out.dtype)), ref_pullback(cotangent), dtype)


@pytest.mark.parametrize(ARGS, CASES)
def test_jvp(reduction, free_bits, prior, shape, device, dtype):
    args, ours, theirs, w = setup(reduction, free_bits, prior, shape, device, dtype)
    tangents = tangents_for(theirs, w, args)
    got = func.jvp(ours, args, tangents)
    want = func.jvp(theirs, as_reference(args), as_reference(tangents))
    assert_matches(got, want, dtype)


@pytest.mark.parametrize(ARGS, CASES)
def test_forward_ad_dual_tensors(reduction, free_bits, prior, shape, device, dtype):
    args, ours, theirs, w = setup(reduction, free_bits, prior, shape, device, dtype)
    tangents = tangents_for(theirs, w, args)
    results = []
    for fn, a, t in ((ours, args, tangents), (theirs, as_reference(args), as_reference(tangents))):
        with fwAD.dual_level():
            out = fn(*(fwAD.make_dual(x, dx) for x, dx in zip(a, t, strict=True)))
            primal, tangent = fwAD.unpack_dual(out)
            assert tangent is not None
            results.append((primal, tangent))
    assert_matches(results[0], results[1], dtype)


# Transforms of a function of the KL's arguments: (name, the transform, the cases it takes)
DERIVATIVES = [
    ("grad", lambda f, w, argnums: func.grad(scalar(f, w), argnums=argnums), CASES),
    # not of an elementwise KL of 300,000 elements: its Jacobian has 9e10 entries
    (
        "jacrev",
        lambda f, w, argnums: func.jacrev(f, argnums=argnums),
        [c for c in CASES if c.values[0] != "none" or c.values[3] != LARGE],
    ),
    ("jacfwd", lambda f, w, argnums: func.jacfwd(f, argnums=argnums), SMALL_CASES),
    ("hessian", lambda f, w, argnums: func.hessian(scalar(f, w), argnums=argnums), SMALL_CASES),
]


@pytest.mark.parametrize(
    ("transform", *ARGS),
    [
        pytest.param(transform, *case.values, id=f"{name}-{case.id}")
        for name, transform, cases in DERIVATIVES
        for case in cases
    ],
)
def test_derivative(transform, reduction, free_bits, prior, shape, device, dtype):
    args, ours, theirs, w = setup(reduction, free_bits, prior, shape, device, dtype)
    argnums = ARGNUMS[len(args)]
    got = transform(ours, w, argnums)(*args)
    want = transform(theirs, w, argnums)(*as_reference(args))
    assert_matches(got, want, dtype)


@pytest.mark.parametrize(ARGS, CASES)
def test_hessian_vector_product(reduction, free_bits, prior, shape, device, dtype):
    # forward-over-reverse: what a Hessian of a large latent is used through
    args, ours, theirs, w = setup(reduction, free_bits, prior, shape, device, dtype)
    argnums = ARGNUMS[len(args)]
    tangents = tangents_for(theirs, w, args)
    got = func.jvp(func.grad(scalar(ours, w), argnums=argnums), args, tangents)
    want = func.jvp(
        func.grad(scalar(theirs, w), argnums=argnums), as_reference(args), as_reference(tangents)
    )
    assert_matches(got, want, dtype)


def stacked(args, n=3):
    """n different copies of each argument, stacked in a new dimension 0."""
    g = torch.Generator().manual_seed(11)
    return tuple(
        a + 0.1 * torch.randn((n, *a.shape), dtype=torch.float64, generator=g).to(a) for a in args
    )


@pytest.mark.parametrize(ARGS, CASES)
def test_vmap(reduction, free_bits, prior, shape, device, dtype):
    args, ours, theirs, _ = setup(reduction, free_bits, prior, shape, device, dtype)
    batch = stacked(args)
    assert_matches(func.vmap(ours)(*batch), func.vmap(theirs)(*as_reference(batch)), dtype)


@pytest.mark.parametrize(ARGS, CASES)
def test_per_sample_gradients_through_vmap_of_grad(
    reduction, free_bits, prior, shape, device, dtype
):
    args, ours, theirs, w = setup(reduction, free_bits, prior, shape, device, dtype)
    argnums = ARGNUMS[len(args)]
    batch = stacked(args)
    got = func.vmap(func.grad(scalar(ours, w), argnums=argnums))(*batch)
    want = func.vmap(func.grad(scalar(theirs, w), argnums=argnums))(*as_reference(batch))
    assert_matches(got, want, dtype)


@pytest.mark.parametrize("shape", [SMALL, LARGE])
def test_vmap_over_one_argument_broadcasts_the_other(shape, device, dtype):
    mu, log_var, _, _ = (t if t is None else t.to(device) for t in make(shape, "none"))
    mus = stacked((mu.to(dtype),))[0]
    got = func.vmap(lambda m: kl_divergence_normal(m, log_var.to(dtype)))(mus)
    want = func.vmap(lambda m: distributions_kl(m, log_var))(mus.double())
    assert_matches(got, want, dtype)


def test_per_data_point_kl_through_vmap_is_the_elementwise_sum(device):
    # What a differentially private VAE computes: one KL per data point of the batch.
    mu, log_var = (t.to(device) for t in make((8, 5), "none", dtype=torch.float32)[:2])
    got = func.vmap(lambda m, lv: kl_divergence_normal(m, lv, reduction="sum"))(mu, log_var)
    want = distributions_kl(mu.double(), log_var.double(), reduction="none").sum(1)
    assert_matches(got, want, torch.float32)


@pytest.mark.parametrize("shape", [SMALL, LARGE])
def test_functional_call_of_the_modules(shape, device, dtype):
    mu, log_var, prior_mu, prior_log_var = (t.to(device, dtype) for t in make(shape, "both"))
    kl = KLDivergenceNormal(reduction="sum")
    got = func.grad(lambda m: func.functional_call(kl, {}, (m, log_var)))(mu)
    want = func.grad(lambda m: distributions_kl(m, log_var.double(), reduction="sum"))(mu.double())
    assert_matches(got, want, dtype)
    got = func.functional_call(kl, {}, (mu, log_var, prior_mu, prior_log_var))
    want = distributions_kl(
        *(t.double() for t in (mu, log_var, prior_mu, prior_log_var)), reduction="sum"
    )
    assert_matches(got, want, dtype)

    # VAELoss's beta is a buffer: functional_call replaces it, and grad reaches the inputs.
    loss_fn = VAELoss("mse", beta=5.0)
    x = torch.rand(shape[0], 6, dtype=dtype, device=device)

    def loss(m, beta):
        return func.functional_call(loss_fn, {"_beta": beta}, (x, x, m, log_var)).loss

    beta = torch.tensor(0.25, dtype=dtype, device=device)
    got_grad = func.grad(loss)(mu, beta)
    want_grad = 0.25 * func.grad(lambda m: distributions_kl(m, log_var.double()))(mu.double())
    assert_matches(got_grad, want_grad, dtype)
    assert loss_fn.beta.item() == 5.0


@pytest.mark.parametrize("spread", [1.0, 1e-3], ids=["float32-sum", "near-the-prior"])
def test_both_branches_of_the_large_sum_under_every_autograd_mode(spread):
    # Random inputs take the float32-exponential sum; inputs near the prior fail its accuracy
    # condition and are summed elementwise in float64. Each mode is checked relative to the
    # float64 reference, without an absolute tolerance that the tiny values near the prior
    # would fall under.
    g = torch.Generator().manual_seed(3)
    mu, log_var = (spread * torch.randn(LARGE, generator=g) for _ in range(2))
    t_mu, t_lv = (torch.rand(LARGE, generator=g) for _ in range(2))
    tangents = (t_mu * mu.sign(), t_lv * log_var.sign())  # non-negative terms in the jvp

    def ours(m, lv):
        return kl_divergence_normal(m, lv, reduction="sum")

    def theirs(m, lv):
        return distributions_kl(m, lv, reduction="sum")

    ref = (mu.double(), log_var.double())
    ref_tangents = tuple(t.double() for t in tangents)

    def close(got, want):
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0.0)

    close(ours(mu, log_var), theirs(*ref))
    for got, want in zip(
        func.grad(ours, argnums=(0, 1))(mu, log_var),
        func.grad(theirs, argnums=(0, 1))(*ref),
        strict=True,
    ):
        close(got, want)
    close(func.jvp(ours, (mu, log_var), tangents)[1], func.jvp(theirs, ref, ref_tangents)[1])
    with fwAD.dual_level():
        duals = (fwAD.make_dual(mu, tangents[0]), fwAD.make_dual(log_var, tangents[1]))
        tangent = fwAD.unpack_dual(ours(*duals)).tangent
    close(tangent, func.jvp(theirs, ref, ref_tangents)[1])
    per_sample = func.vmap(ours)(mu, log_var)
    close(per_sample, func.vmap(theirs)(*ref))
