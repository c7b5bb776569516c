"""The fused path of the KL: its table, what it saves, what it leaves alone, and its sums."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.functional._kl_reference import LARGE, SMALL, distributions_kl, expm1_minus_x, make
from vaekit.functional import _kl_fast, kl_divergence_normal


def test_the_table_of_which_inputs_take_it():
    mu = log_var = torch.zeros(2, 3)
    assert _kl_fast.applies(mu, log_var, prior=False, reduction="batchmean", free_bits=0.0)
    assert _kl_fast.applies(mu, log_var, prior=False, reduction="sum", free_bits=0.0)
    assert _kl_fast.applies(mu, log_var, prior=False, reduction="mean", free_bits=0.0)
    assert not _kl_fast.applies(mu, log_var, prior=False, reduction="none", free_bits=0.0)
    assert not _kl_fast.applies(mu, log_var, prior=False, reduction="sum", free_bits=0.5)
    assert not _kl_fast.applies(mu, log_var, prior=True, reduction="sum", free_bits=0.0)
    meta = torch.empty(2, 3, device="meta")
    assert not _kl_fast.applies(meta, meta, prior=False, reduction="sum", free_bits=0.0)


def saved_beyond_inputs(fn, *inputs):
    ptrs = {t.untyped_storage().data_ptr() for t in inputs}
    saved = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in ptrs:
            saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return saved


@pytest.mark.parametrize("shape", [SMALL, LARGE])
@pytest.mark.parametrize("reduction", ["sum", "mean", "batchmean"])
def test_only_the_inputs_are_saved_for_backward(shape, reduction):
    mu, log_var, _, _ = make(shape, "none", dtype=torch.float32)
    mu.requires_grad_()
    log_var.requires_grad_()
    assert (
        saved_beyond_inputs(
            lambda m, lv: kl_divergence_normal(m, lv, reduction=reduction), mu, log_var
        )
        == []
    )


@pytest.mark.parametrize("shape", [SMALL, LARGE])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inputs_are_never_modified(shape, dtype):
    mu, log_var, _, _ = make(shape, "none", dtype=dtype)
    copies = mu.clone(), log_var.clone()
    mu.requires_grad_()
    log_var.requires_grad_()
    kl_divergence_normal(mu, log_var, reduction="sum").backward()
    assert torch.equal(mu.detach(), copies[0])
    assert torch.equal(log_var.detach(), copies[1])


@pytest.mark.parametrize("shape", [SMALL, LARGE])
def test_non_contiguous_expanded_and_channels_last_inputs(shape):
    mu, log_var, _, _ = make((shape[1], shape[0]), "none", dtype=torch.float32)
    mu_t, lv_t = mu.t(), log_var.t()  # non-contiguous
    want = kl_divergence_normal(mu_t.contiguous(), lv_t.contiguous(), reduction="sum")
    torch.testing.assert_close(kl_divergence_normal(mu_t, lv_t, reduction="sum"), want)
    row = make((1, shape[1]), "none", dtype=torch.float32)[:2]
    expanded = [t.expand(shape) for t in row]  # stride 0
    torch.testing.assert_close(
        kl_divergence_normal(*expanded, reduction="sum"),
        kl_divergence_normal(*(t.contiguous() for t in expanded), reduction="sum"),
    )
    image = [t.reshape(2, 3, 2, 2) for t in make((2, 12), "none", dtype=torch.float32)[:2]]
    channels_last = [t.contiguous(memory_format=torch.channels_last) for t in image]
    torch.testing.assert_close(kl_divergence_normal(*channels_last), kl_divergence_normal(*image))


def float64_twice_kl_sum(mu, log_var):
    return (expm1_minus_x(log_var) + mu.double().square()).sum()


@pytest.mark.parametrize("n", [1_000, 300_000])
@pytest.mark.parametrize("scale", [1e-4, 1e-2, 1.0, 4.0])
def test_the_float32_sum_is_within_a_float32_ulp_of_float64(n, scale):
    # Constant-magnitude and expanded mu: a float32 dot product of mu would err by 1e-5.
    g = torch.Generator().manual_seed(0)
    log_var = scale * torch.randn(n, generator=g)
    for mu in (
        torch.full((n,), 0.3 * scale),
        scale * torch.randn(1).expand(n),
        scale * torch.randn(n, generator=g),
    ):
        got = kl_divergence_normal(mu, log_var, reduction="sum").double()
        want = 0.5 * float64_twice_kl_sum(mu, log_var)
        assert abs(got - want) <= 6e-8 * want


@given(spread=st.sampled_from([0.0, 1e-7, 1e-5, 1e-3]), n=st.sampled_from([500, 200_000]))
def test_the_sum_near_the_prior_is_accurate(spread, n):
    g = torch.Generator().manual_seed(1)
    log_var = spread * torch.randn(n, generator=g)
    mu = spread * torch.randn(n, generator=g)
    got = kl_divergence_normal(mu, log_var, reduction="sum").double()
    want = 0.5 * float64_twice_kl_sum(mu, log_var)
    assert abs(got - want) <= 1e-7 * want
    if spread == 0.0:
        assert got == 0.0


@pytest.mark.parametrize("shape", [SMALL, LARGE])
def test_overflow_gives_inf_and_nan_stays_nan(shape):
    mu, log_var = torch.zeros(shape), torch.zeros(shape)
    log_var[0, 0] = 100.0
    assert kl_divergence_normal(mu, log_var, reduction="sum").item() == float("inf")
    log_var[0, 0] = float("nan")
    assert kl_divergence_normal(mu, log_var, reduction="sum").isnan()


def test_without_grad_no_graph_is_recorded():
    mu, log_var = (t.requires_grad_() for t in make(SMALL, "none", dtype=torch.float32)[:2])
    with torch.no_grad():
        kl = kl_divergence_normal(mu, log_var)
    assert kl.grad_fn is None
    assert not kl.requires_grad


@pytest.mark.parametrize("which", [0, 1])
def test_only_the_inputs_that_need_a_gradient_get_one(which):
    tensors = list(make(SMALL, "none", dtype=torch.float32)[:2])
    tensors[which].requires_grad_()
    kl_divergence_normal(*tensors).backward()
    assert tensors[which].grad is not None
    assert tensors[1 - which].grad is None


@pytest.mark.parametrize("shape", [SMALL, LARGE])
def test_double_backward_through_autograd_equals_float64(shape):
    # gradcheck needs float64, which takes the reference: compare float32 with float64 instead.
    mu, log_var, _, _ = make(shape, "none", dtype=torch.float32)
    mu.requires_grad_()
    log_var.requires_grad_()
    v = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    results = []
    for m, lv, fn in (
        (mu, log_var, kl_divergence_normal),
        (*(t.detach().double().requires_grad_() for t in (mu, log_var)), distributions_kl),
    ):
        grad_mu, grad_lv = torch.autograd.grad(fn(m, lv), (m, lv), create_graph=True)
        product = (grad_mu * v.to(m.dtype)).sum() + (grad_lv * v.to(m.dtype)).sum()
        results.append(torch.autograd.grad(product, (m, lv)))
    got, want = results
    torch.testing.assert_close(tuple(t.double() for t in got), want, rtol=1e-5, atol=1e-9)
