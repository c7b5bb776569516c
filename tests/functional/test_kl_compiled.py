"""kl_divergence_normal under torch.compile(fullgraph=True): equal to eager, as accurate, and
compiled once. Compiling takes seconds, so the cases are few and each covers much."""

from __future__ import annotations

import math

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from tests.functional._kl_reference import distributions_kl, expm1_minus_x, make
from vaekit.functional import kl_divergence_normal

SETTINGS = [
    pytest.param("sum", 0.0, "none", id="sum"),
    pytest.param("none", 0.0, "per_row", id="none-prior"),
    pytest.param("mean", 0.4, "both", id="mean-free-bits-prior"),
]


def compiled_kl(reduction, free_bits):
    counter = CompileCounterWithBackend("inductor")

    def kl(mu, log_var, prior_mu, prior_log_var):
        return kl_divergence_normal(
            mu, log_var, prior_mu, prior_log_var, reduction=reduction, free_bits=free_bits
        )

    return torch.compile(kl, backend=counter, fullgraph=True, dynamic=False), counter


@pytest.mark.slow
@pytest.mark.parametrize(("reduction", "free_bits", "prior"), SETTINGS)
def test_compiled_equals_eager_and_the_float64_reference(reduction, free_bits, prior):
    torch._dynamo.reset()
    compiled, counter = compiled_kl(reduction, free_bits)
    for seed in range(2):  # new values, same shapes: no recompilation
        tensors = [
            t.float().requires_grad_() if t is not None else None
            for t in make((8, 3, 4), prior, seed=seed)
        ]
        eager = kl_divergence_normal(*tensors, reduction=reduction, free_bits=free_bits)
        got = compiled(*tensors)
        want = distributions_kl(
            *(t.detach().double() if t is not None else None for t in tensors),
            reduction=reduction,
            free_bits=free_bits,
        )
        torch.testing.assert_close(got, eager, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=1e-6)
        weights = torch.rand(got.shape)
        inputs = [t for t in tensors if t is not None]
        grads = torch.autograd.grad((got * weights).sum(), inputs)
        want_grads = torch.autograd.grad((eager * weights).sum(), inputs)
        torch.testing.assert_close(grads, want_grads, rtol=1e-5, atol=1e-6)
    assert counter.frame_count == 1


@pytest.mark.slow
def test_compiled_value_and_gradient_keep_float32_precision_near_the_prior():
    torch._dynamo.reset()
    compiled, _ = compiled_kl("none", 0.0)
    magnitudes = torch.logspace(-6, 0.5, 400, dtype=torch.float64)
    log_var = torch.cat([magnitudes, -magnitudes]).float().requires_grad_()
    mu = torch.zeros_like(log_var)
    kl = compiled(mu, log_var, None, None)
    kl.sum().backward()
    lv64 = log_var.detach().double()
    want = 0.5 * expm1_minus_x(lv64)
    assert ((kl.detach().double() - want).abs() / want).max() < 1e-6
    want_grad = 0.5 * torch.expm1(lv64)
    assert log_var.grad is not None
    assert ((log_var.grad.double() - want_grad).abs() / want_grad.abs()).max() < 1e-6
    assert (kl >= 0).all()


@pytest.mark.slow
def test_compiled_overflow_is_inf_exactly_where_the_true_value_overflows():
    torch._dynamo.reset()
    compiled, _ = compiled_kl("none", 0.0)
    log_var = torch.tensor([88.0, 89.3, 89.5, math.inf, -math.inf], requires_grad=True)
    kl = compiled(torch.zeros(5), log_var, None, None)
    assert kl[:2].isfinite().all()
    assert kl[2:].isinf().all()
    kl.sum().backward()
    assert log_var.grad is not None
    assert not log_var.grad.isnan().any()


@pytest.mark.slow
# Inductor 2.13's lowering of the Hessian's basis calls a deprecated torch helper of its own.
@pytest.mark.filterwarnings("ignore:`torch._prims_common.check` is deprecated:FutureWarning")
def test_a_compiled_hessian_equals_float64():
    # torch refuses create_graph through a compiled region; a torch.func hessian compiles.
    torch._dynamo.reset()
    mu, log_var, _, _ = make((4, 3), "none", dtype=torch.float32)
    hessian = torch.compile(
        lambda m, lv: torch.func.hessian(kl_divergence_normal, argnums=1)(m, lv),
        fullgraph=True,
    )
    want = torch.func.hessian(lambda m, lv: distributions_kl(m, lv), argnums=1)(
        mu.double(), log_var.double()
    )
    torch.testing.assert_close(hessian(mu, log_var).double(), want, rtol=1e-5, atol=1e-6)
