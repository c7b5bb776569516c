"""The KL traced under torch.compile: float64 references, overflow, gradients of every order.

kl_traced is plain tensor code, so most of its maths is checked eagerly (fast); the few
compiled tests check that Inductor's code keeps it: accuracy, inf for nan, no recompiles.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch._dynamo.testing import CompileCounterWithBackend
from torch.distributions import Normal, kl_divergence

from tests.functional._kl_reference import expm1_minus_x, make
from vaekit.functional._kl_traced import kl_traced

MODES = ["none", "sum", "batch"]
PRIORS = ["none", "mu", "log_var", "both", "per_row"]


def reference(mu, log_var, prior_mu=None, prior_log_var=None, mode="none"):
    """The elementwise KL in float64 from the exact formula, reduced as ``mode`` says."""
    diff = mu.double() - (0.0 if prior_mu is None else prior_mu.double())
    delta = log_var.double() - (0.0 if prior_log_var is None else prior_log_var.double())
    inv_var = 1.0 if prior_log_var is None else torch.exp(-prior_log_var.double())
    kl = 0.5 * (diff**2 * inv_var + expm1_minus_x(delta))
    return {"none": kl, "sum": kl.sum(), "batch": kl.sum(0)}[mode]


def distributions_kl(mu, log_var, prior_mu, prior_log_var, mode):
    """torch.distributions, differentiable, for the gradients."""
    prior_mu = torch.zeros_like(mu) if prior_mu is None else prior_mu.expand_as(mu)
    prior_log_var = torch.zeros_like(mu) if prior_log_var is None else prior_log_var
    p = Normal(prior_mu, (0.5 * prior_log_var.expand_as(mu)).exp(), validate_args=True)
    kl = kl_divergence(Normal(mu, (0.5 * log_var).exp(), validate_args=True), p)
    return {"none": kl, "sum": kl.sum(), "batch": kl.sum(0)}[mode]


def relative_error(got, want):
    return ((got.double() - want) / want).abs().max().item() if want.numel() else 0.0


# ---------------------------------------------------------------- compiled by Inductor


def test_float32_accuracy_inf_and_a_single_compilation():
    magnitudes = torch.logspace(-6, 0.5, 3000, dtype=torch.float64)  # 1e-6 to 3.16
    log_var = torch.cat([magnitudes, -magnitudes, torch.linspace(-3, 3, 3000), torch.zeros(1)])
    log_var = log_var.float()
    mu = torch.randn(log_var.shape, generator=torch.Generator().manual_seed(0))
    counter = CompileCounterWithBackend("inductor")
    kl = torch.compile(lambda m, lv: kl_traced(m, lv, None, None, "none"), backend=counter)

    got = kl(torch.zeros_like(mu), log_var)
    assert (got >= 0).all()
    assert not got[-1]  # exactly 0 at mu = 0, log_var = 0
    want = reference(torch.zeros_like(mu), log_var)
    nonzero = want > 0
    assert relative_error(got[nonzero], want[nonzero]) <= 4e-7
    assert relative_error(kl(mu, log_var), reference(mu, log_var)) <= 4e-7

    overflow = log_var.clone()
    overflow[:3] = torch.tensor([88.0, 90.0, 100.0])  # e^90 / 2 overflows float32
    got = kl(mu, overflow)
    assert torch.equal(got[:3].isinf(), torch.tensor([False, True, True]))
    assert not got.isnan().any()
    assert counter.frame_count == 1  # new values, same shape: no recompilation


@pytest.mark.parametrize("mode", ["sum", "batch"])
def test_overflow_gives_inf_and_finite_gradients_not_nan(mode):
    # The reported regression: inf - inf from a straight-through surrogate gave nan.
    mu = torch.zeros(4, 3, requires_grad=True)
    log_var = torch.tensor([[100.0, 0.0, 0.5]] * 4, requires_grad=True)
    kl = torch.compile(lambda m, lv: kl_traced(m, lv, None, None, mode) * 0.25, fullgraph=True)
    got = kl(mu, log_var)
    want = reference(mu.detach(), log_var.detach(), mode=mode) * 0.25
    assert got.isinf().any()
    assert torch.equal(got.isinf(), want.float().isinf())
    finite = want.float().isfinite()
    torch.testing.assert_close(got[finite].double(), want[finite], rtol=4e-7, atol=0)
    got.sum().backward()
    assert torch.equal(mu.grad, torch.zeros(4, 3))
    want_grad = 0.125 * torch.expm1(log_var.detach().double())
    assert torch.equal(log_var.grad.isinf(), torch.tensor([[True, False, False]] * 4))
    torch.testing.assert_close(log_var.grad[:, 1:].double(), want_grad[:, 1:], rtol=1e-6, atol=0)


def test_compiled_gradients_with_per_row_priors_in_batch_mode():
    inputs = [t.float().requires_grad_() for t in make((6, 5), "per_row")]
    kl = torch.compile(lambda *args: kl_traced(*args, "batch"), fullgraph=True)
    got = kl(*inputs)
    copies = [t.detach().double().requires_grad_() for t in inputs]
    want = distributions_kl(*copies, "batch")
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)
    weights = torch.rand(5, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((got * weights).sum(), inputs)
    want_grads = torch.autograd.grad((want * weights.double()).sum(), copies)
    for a, b in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)


def test_float64_to_float64_precision():
    magnitudes = torch.logspace(-8, 1.5, 400, dtype=torch.float64)
    log_var = torch.cat([magnitudes, -magnitudes])
    kl = torch.compile(lambda m, lv: kl_traced(m, lv, None, None, "none"), fullgraph=True)
    got = kl(torch.zeros_like(log_var), log_var)
    assert got.dtype == torch.float64
    with localcontext() as ctx:
        ctx.prec = 40
        exact = [(Decimal(x).exp() - 1 - Decimal(x)) / 2 for x in log_var.tolist()]
    want = torch.tensor([float(v) for v in exact], dtype=torch.float64)
    assert relative_error(got, want) <= 8 * 2.0**-53


def test_half_precision_is_computed_and_returned_in_float32():
    mu, log_var, _, prior_log_var = (
        None if t is None else t.half().requires_grad_() for t in make((3, 4), "log_var")
    )
    kl = torch.compile(lambda m, lv, plv: kl_traced(m, lv, None, plv, "none"), fullgraph=True)
    got = kl(mu, log_var, prior_log_var)
    assert got.dtype == torch.float32
    want = reference(mu.detach(), log_var.detach(), None, prior_log_var.detach())
    assert relative_error(got, want) <= 4e-7
    got.sum().backward()
    assert mu.grad.dtype == log_var.grad.dtype == prior_log_var.grad.dtype == torch.float16


def test_second_derivatives_compiled_through_torch_func():
    # torch.autograd.grad(create_graph=True) cannot go through a compiled backward ("torch.compile
    # with aot_autograd does not currently support double backward"); torch.func can.
    mu, log_var = (t.float() for t in make((3, 4), "none")[:2])

    def kl(m, lv):
        return kl_traced(m, lv, None, None, "sum")

    def second(m, lv):  # the Hessian is diagonal: the gradient of a gradient's sum is its diagonal
        def summed_grad(argnum):
            return lambda m, lv: torch.func.grad(kl, argnum)(m, lv).sum()

        return [torch.func.grad(summed_grad(i), (0, 1))(m, lv) for i in (0, 1)]

    (mm, ml), (lm, ll) = torch.compile(second, fullgraph=True)(mu, log_var)
    assert torch.equal(mm, torch.ones(3, 4))
    assert not ml.any()
    assert not lm.any()
    torch.testing.assert_close(ll.double(), 0.5 * log_var.double().exp(), rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def compiled_with_priors():
    return torch.compile(lambda *args: kl_traced(*args, "none"), fullgraph=True)


finite_floats = st.floats(-20.0, 20.0, width=32)
NORMAL = torch.finfo(torch.float32).tiny * 2**23  # subnormal steps are below 2^-46 of it


@given(
    values=st.lists(st.tuples(*[finite_floats] * 4), min_size=16, max_size=16),
)
def test_properties_against_float64_of_the_float32_differences(compiled_with_priors, values):
    mu, log_var, prior_mu, prior_log_var = torch.tensor(values, dtype=torch.float32).T
    got = compiled_with_priors(mu, log_var, prior_mu, prior_log_var)
    assert (got >= 0).all()
    # The differences are rounded to float32 first, as any float32 computation must: the
    # reference is the exact KL of those rounded differences.
    diff, delta = (mu - prior_mu).double(), log_var - prior_log_var
    want = 0.5 * (diff**2 * torch.exp(-prior_log_var.double()) + expm1_minus_x(delta))
    normal = want > NORMAL
    assert relative_error(got[normal], want[normal]) <= 4e-7
    assert not got[want == 0].any()
    assert not compiled_with_priors(mu, log_var, mu.clone(), log_var.clone()).any()


# ---------------------------------------------------------------- the same code, eagerly


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("mode", MODES)
def test_values_and_gradients_match_torch_distributions(mode, prior):
    tensors = [t.float().requires_grad_() if t is not None else None for t in make((4, 3), prior)]
    copies = [t.detach().double().requires_grad_() if t is not None else None for t in tensors]
    got = kl_traced(*tensors, mode)
    want = distributions_kl(*copies, mode)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)
    weights = torch.rand(got.shape, generator=torch.Generator().manual_seed(1))
    needs = [t for t in tensors if t is not None]
    grads = torch.autograd.grad((got * weights).sum(), needs)
    want_grads = torch.autograd.grad(
        (want * weights.double()).sum(), [t for t in copies if t is not None]
    )
    for a, b in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_and_gradgradcheck(mode, prior):
    tensors = make((3, 2), prior)
    present = [i for i, t in enumerate(tensors) if t is not None]

    def fn(*args):
        full = list(tensors)
        for i, a in zip(present, args, strict=True):
            full[i] = a
        return kl_traced(*full, mode)

    inputs = tuple(tensors[i].clone().requires_grad_() for i in present)
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("mode", MODES)
def test_the_result_is_exactly_zero_where_the_posterior_is_the_prior(mode):
    mu, log_var, prior_mu, prior_log_var = make((3, 4), "per_row", dtype=torch.float32)
    assert not kl_traced(mu, log_var, mu, log_var, mode).any()
    assert not kl_traced(torch.zeros(3, 4), torch.zeros(3, 4), None, None, mode).any()
    assert kl_traced(mu, log_var, prior_mu, prior_log_var, mode).gt(0).all()
