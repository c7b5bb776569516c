"""kl_divergence_normal against torch.distributions and float64 maths."""

from __future__ import annotations

import math
import sys

import mpmath
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.functional._kl_reference import distributions_kl, expm1_minus_x
from vaekit.functional import kl_divergence_normal

SHAPES = [(5, 3), (4, 2, 3, 3), (2, 3, 2, 2, 3)]
REDUCTIONS = ["none", "sum", "mean", "batchmean"]


def reference(mu, log_var, prior_mu=None, prior_log_var=None, reduction="batchmean"):
    """torch.distributions in float64, reduced by hand."""
    tensors = (t if t is None else t.double() for t in (mu, log_var, prior_mu, prior_log_var))
    return distributions_kl(*tensors, reduction=reduction)


def inputs(shape, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    pair = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
    return tuple(t.to(device, dtype) for t in pair)


def tolerance(dtype):
    """Against the float64 reference at the same (rounded) inputs: float32's or float64's."""
    return (
        {"rtol": 2e-6, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    )


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("prior", [False, True])
def test_matches_torch_distributions(shape, reduction, prior, device, dtype):
    mu, log_var = inputs(shape, dtype, device=device)
    prior_mu = prior_log_var = None
    if prior:  # a per-latent-element prior broadcast over the batch
        prior_mu, prior_log_var = inputs(shape[1:], dtype, seed=1, device=device)
    got = kl_divergence_normal(mu, log_var, prior_mu, prior_log_var, reduction=reduction)
    want = reference(mu, log_var, prior_mu, prior_log_var, reduction)
    assert got.shape == want.shape
    assert (got.dtype, got.device) == (dtype, device)
    torch.testing.assert_close(got.double(), want, **tolerance(dtype))


def test_prior_given_by_one_tensor_only(device):
    mu, log_var = inputs((6, 4), device=device)
    prior_mu = torch.linspace(-1, 1, 4, dtype=torch.float64, device=device)
    got = kl_divergence_normal(mu, log_var, prior_mu=prior_mu)
    torch.testing.assert_close(got, reference(mu, log_var, prior_mu=prior_mu))
    prior_lv = torch.tensor(0.7, dtype=torch.float64, device=device)  # a scalar broadcasts too
    got = kl_divergence_normal(mu, log_var, prior_log_var=prior_lv)
    torch.testing.assert_close(got, reference(mu, log_var, prior_log_var=prior_lv))


@given(
    b=st.integers(1, 6),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(1e-3, 10.0),
)
def test_sum_is_batch_times_batchmean_and_mean_is_batchmean_over_d(b, d, seed, scale):
    mu, log_var = inputs((b, d), seed=seed)
    mu, log_var = mu * scale, log_var * scale
    batchmean = kl_divergence_normal(mu, log_var)
    torch.testing.assert_close(kl_divergence_normal(mu, log_var, reduction="sum"), b * batchmean)
    torch.testing.assert_close(kl_divergence_normal(mu, log_var, reduction="mean"), batchmean / d)


def test_the_notebook_formula_agrees_where_it_is_accurate():
    # The notebook's per-datapoint KL: sum over latent dims, then mean over the batch.
    mu, log_var = inputs((64, 10))
    notebook = torch.mean(-0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=1))
    torch.testing.assert_close(kl_divergence_normal(mu, log_var), notebook)


# ---------------------------------------------------------------- properties

finite32 = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@given(
    mu=st.lists(finite32, min_size=1, max_size=8),
    data=st.data(),
)
def test_never_negative_for_finite_float32_inputs(mu, data):
    log_var = data.draw(st.lists(finite32, min_size=len(mu), max_size=len(mu)))
    mu_t, lv_t = torch.tensor([mu]), torch.tensor([log_var])
    kl = kl_divergence_normal(mu_t, lv_t, reduction="none")
    assert not kl.isnan().any()
    assert (kl >= 0).all()


@given(
    values=st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=2, max_size=8),
)
def test_zero_when_posterior_equals_prior(values):
    half = len(values) // 2
    mu, log_var = torch.tensor([values[:half]]), torch.tensor([values[half : 2 * half]])
    assert kl_divergence_normal(mu, log_var, mu, log_var, reduction="sum").item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_zero_at_mu_zero_log_var_zero(dtype, device):
    zeros = torch.zeros(3, 5, dtype=dtype, device=device)
    for reduction in REDUCTIONS:
        assert (kl_divergence_normal(zeros, zeros, reduction=reduction) == 0).all()


MAGNITUDES = torch.logspace(-6, 0.5, 27, dtype=torch.float64).tolist()
PATHS = ["fused", "fused-large", "elementwise", "prior", "free-bits"]


def kl_by_path(path, mu, log_var):
    """The KL of every element (for one value repeated) and the summed loss to differentiate,
    through each path the KL has: the table in vaekit.functional._kl_fast."""
    if path == "elementwise":
        kl = kl_divergence_normal(mu, log_var, reduction="none")
        return kl[0], kl.sum()
    if path == "prior":
        zero = torch.zeros((), device=mu.device)
        kl = kl_divergence_normal(mu, log_var, zero, zero, reduction="sum")
    elif path == "free-bits":
        kl = kl_divergence_normal(mu, log_var, reduction="sum", free_bits=1e-30)
    else:
        kl = kl_divergence_normal(mu, log_var, reduction="sum")
    return kl / mu.numel(), kl


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_value_and_gradient_keep_float32_precision_near_the_prior(path, sign, device):
    # The textbook 1 + lv - exp(lv) loses every digit here, and its gradient exp(lv) - 1 too.
    n = 300_000 if path == "fused-large" else 3
    for magnitude in MAGNITUDES:
        value = torch.tensor(sign * magnitude, device=device).float()
        log_var = value.expand(n, 1).clone().requires_grad_()
        mu = torch.zeros(n, 1, device=device)
        kl, loss = kl_by_path(path, mu, log_var)
        loss.backward()
        lv64 = value.double()  # the reference takes the float32 input exactly as given
        want = 0.5 * expm1_minus_x(lv64)
        want_grad = 0.5 * torch.expm1(lv64)
        assert abs(kl.double() - want) <= 1e-6 * want, (path, value.item())
        assert log_var.grad is not None
        err = (log_var.grad.double() - want_grad).abs().max()
        assert err <= 1e-6 * want_grad.abs(), (path, value.item())
    tiny = torch.tensor(sign * MAGNITUDES[0]).float()
    notebook = (-0.5 * (1 + tiny - tiny.exp())).double()
    exact = 0.5 * expm1_minus_x(tiny.double())
    assert abs(notebook - exact) > 0.5 * exact  # the trap is real


def test_half_precision_is_computed_in_float32(device):
    # KL of about 1 per element over 80,000 elements: a float16 sum would overflow to inf.
    mu, log_var = inputs((4, 80_000), dtype=torch.float32, device=device)
    for dtype in (torch.float16, torch.bfloat16):
        got = kl_divergence_normal(mu.to(dtype), log_var.to(dtype))
        assert got.dtype == torch.float32
        want = reference(mu.to(dtype), log_var.to(dtype))
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


def test_half_precision_gradients_flow_back_in_half(device):
    mu, log_var = (t.requires_grad_() for t in inputs((3, 4), torch.float16, device=device))
    kl_divergence_normal(mu, log_var).backward()
    assert mu.grad is not None
    assert mu.grad.dtype == torch.float16
    torch.testing.assert_close(mu.grad.float(), mu.detach().float() / 3, rtol=1e-3, atol=1e-3)


EXTREME_LOG_VAR = [-math.inf, -1e4, -100.0, 80.0, 88.0, 88.8, 89.3, 89.5, 1e4, math.inf]
EXTREME_MU = [2e19, 2.7e19, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("path", ["elementwise", "fused", "prior", "free-bits"])
def test_inf_exactly_where_the_true_value_overflows(path, device):
    float32_max = torch.finfo(torch.float32).max
    for m, lv in zip(EXTREME_MU, EXTREME_LOG_VAR, strict=True):
        mu = torch.tensor([[m]], device=device, requires_grad=True)
        log_var = torch.tensor([[lv]], device=device, requires_grad=True)
        kl, loss = kl_by_path(path, mu, log_var)
        m64, lv64 = mu.double(), log_var.double()  # torch.distributions rejects a zero scale
        want = 0.5 * (m64.square() + torch.expm1(lv64) - lv64)
        if math.isinf(lv):
            want = torch.full_like(want, math.inf)
        assert not kl.isnan().any(), (m, lv)
        if want.item() > float32_max:
            assert kl.item() == math.inf, (m, lv)
        else:
            torch.testing.assert_close(kl.double().reshape(()), want.reshape(()), rtol=1e-6, atol=0)
        loss.backward()
        assert mu.grad is not None
        assert log_var.grad is not None
        assert not mu.grad.isnan().any()
        assert not log_var.grad.isnan().any()


def test_the_float64_kl_overflows_only_where_the_true_value_does(device):
    log_var = torch.tensor([700.0, 709.0, 710.0, 711.0], dtype=torch.float64, device=device)
    got = kl_divergence_normal(torch.zeros(4, device=device), log_var, reduction="none")
    exact = [0.5 * (mpmath.exp(v) - 1 - v) for v in log_var.tolist()]  # arbitrary precision
    want = [float(v) if v < sys.float_info.max else math.inf for v in exact]
    torch.testing.assert_close(
        got.cpu(), torch.tensor(want, dtype=torch.float64), rtol=1e-14, atol=0
    )


# ---------------------------------------------------------------- free bits


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("free_bits", [0.05, 0.5, 2.0])
def test_free_bits_formula(shape, free_bits, device, dtype):
    mu, log_var = inputs(shape, dtype, device=device)
    per_element = reference(mu, log_var, reduction="none").mean(dim=0)
    clamped = per_element.clamp_min(free_bits)
    b, d = shape[0], per_element.numel()
    expected = {"batchmean": clamped.sum(), "sum": b * clamped.sum(), "mean": clamped.sum() / d}
    for reduction, want in expected.items():
        got = kl_divergence_normal(mu, log_var, reduction=reduction, free_bits=free_bits)
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, **tolerance(dtype))


def test_free_bits_stop_gradients_of_clamped_elements_only(device):
    mu = torch.tensor([[0.01, 2.0], [-0.01, 1.0]], dtype=torch.float64, device=device)
    mu.requires_grad_()
    log_var = torch.zeros(2, 2, dtype=torch.float64, device=device, requires_grad=True)
    kl_divergence_normal(mu, log_var, free_bits=0.5).backward()
    assert mu.grad is not None
    assert (mu.grad[:, 0] == 0).all()  # below the floor: no pressure
    torch.testing.assert_close(mu.grad[:, 1], mu.detach()[:, 1] / 2)  # d/dmu of mean_b mu^2/2


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("prior", [False, True])
def test_gradcheck_and_gradgradcheck(reduction, prior, device):
    mu, log_var = (t.requires_grad_() for t in inputs((3, 2, 2), device=device))
    args = [mu, log_var]
    if prior:
        args += [t.requires_grad_() for t in inputs((2, 2), seed=3, device=device)]

    def fn(*a):
        return kl_divergence_normal(*a, reduction=reduction)

    assert torch.autograd.gradcheck(fn, tuple(args))
    assert torch.autograd.gradgradcheck(fn, tuple(args))


def test_gradcheck_with_free_bits(device):
    mu, log_var = (t.requires_grad_() for t in inputs((4, 3), device=device))

    def fn(m, lv):
        return kl_divergence_normal(m, lv, free_bits=0.3)

    assert torch.autograd.gradcheck(fn, (mu, log_var))
    assert torch.autograd.gradgradcheck(fn, (mu, log_var))


def test_gradients_match_torch_distributions(device, dtype):
    mu, log_var = (t.requires_grad_() for t in inputs((5, 6), dtype, device=device))
    mu_ref, lv_ref = (t.detach().double().requires_grad_() for t in (mu, log_var))
    kl_divergence_normal(mu, log_var).backward()
    reference(mu_ref, lv_ref).backward()
    for got, want in ((mu.grad, mu_ref.grad), (log_var.grad, lv_ref.grad)):
        assert got is not None
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, **tolerance(dtype))


# ---------------------------------------------------------------- errors


def test_shape_mismatch_names_both_shapes():
    match = r"Arguments mu and log_var should have the same shape, but given mu.shape=\(2, 3\) "
    with pytest.raises(ValueError, match=match + r"and log_var.shape=\(2, 4\)"):
        kl_divergence_normal(torch.zeros(2, 3), torch.zeros(2, 4))


def test_prior_must_broadcast_to_mu():
    with pytest.raises(
        ValueError,
        match=r"Argument prior_mu should broadcast to mu.shape=\(2, 3\), but given "
        r"prior_mu.shape=\(4,\)",
    ):
        kl_divergence_normal(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"Argument prior_log_var should broadcast"):
        kl_divergence_normal(torch.zeros(2, 3), torch.zeros(2, 3), None, torch.zeros(5, 2, 3))


def test_non_floating_and_non_tensor_inputs():
    with pytest.raises(
        TypeError,
        match=r"Argument mu should be a floating-point tensor, but given dtype torch.int64",
    ):
        kl_divergence_normal(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))
    with pytest.raises(
        TypeError, match=r"Argument log_var should be a torch.Tensor, but given list"
    ):
        kl_divergence_normal(torch.zeros(2), [0.0, 0.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Argument prior_mu should be a floating-point tensor"):
        kl_divergence_normal(torch.zeros(2), torch.zeros(2), torch.zeros(2, dtype=torch.int32))


def test_unknown_reduction_lists_the_allowed_ones():
    with pytest.raises(
        ValueError,
        match=r"Argument reduction should be one of 'none', 'mean', 'sum', 'batchmean', "
        r"but given 'avg'",
    ):
        kl_divergence_normal(torch.zeros(2, 3), torch.zeros(2, 3), reduction="avg")


def test_free_bits_validation():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"Argument free_bits should be a finite number >= 0, "):
        kl_divergence_normal(z, z, free_bits=-0.1)
    with pytest.raises(ValueError, match=r"but given nan"):
        kl_divergence_normal(z, z, free_bits=math.nan)
    with pytest.raises(TypeError, match=r"Argument free_bits should be a float, but given bool"):
        kl_divergence_normal(z, z, free_bits=True)
    with pytest.raises(
        ValueError, match=r"Argument free_bits should be 0 with reduction='none'.*free_bits=0.5"
    ):
        kl_divergence_normal(z, z, reduction="none", free_bits=0.5)


@pytest.mark.parametrize("reduction", ["batchmean", "mean"])
def test_empty_batch_raises_instead_of_nan(reduction):
    empty = torch.zeros(0, 4)
    with pytest.raises(
        ValueError,
        match=rf"Argument mu should not be empty for reduction='{reduction}', but given "
        r"mu.shape=\(0, 4\) \(the result would be NaN\)",
    ):
        kl_divergence_normal(empty, empty, reduction=reduction)
    with pytest.raises(ValueError, match=r"should not be empty for reduction='sum'"):
        kl_divergence_normal(empty, empty, reduction="sum", free_bits=0.1)


def test_empty_batch_with_sum_and_none_is_well_defined():
    empty = torch.zeros(0, 4)
    assert kl_divergence_normal(empty, empty, reduction="sum").item() == 0.0
    assert kl_divergence_normal(empty, empty, reduction="none").shape == (0, 4)


def test_batchmean_needs_a_batch_dimension():
    with pytest.raises(ValueError, match=r"Argument mu should have a batch dimension"):
        kl_divergence_normal(torch.tensor(0.5), torch.tensor(0.1))
    scalar = kl_divergence_normal(torch.tensor(0.5), torch.tensor(0.1), reduction="sum")
    torch.testing.assert_close(scalar.double(), reference(torch.tensor([0.5]), torch.tensor([0.1])))


def test_inputs_on_another_device_are_refused_not_ignored():
    z = torch.zeros(2, 3)
    meta = torch.zeros(3, device="meta")
    for kwargs, name in (
        ({"prior_mu": meta}, "prior_mu"),
        ({"prior_log_var": meta}, "prior_log_var"),
    ):
        with pytest.raises(
            ValueError,
            match=rf"Arguments mu and {name} should be on the same device, but given "
            rf"mu.device=cpu and {name}.device=meta",
        ):
            kl_divergence_normal(z, z, **kwargs)
    with pytest.raises(ValueError, match=r"Arguments mu and log_var should be on the same device"):
        kl_divergence_normal(z, torch.zeros(2, 3, device="meta"))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("prior", [False, True])
@pytest.mark.parametrize("n", [4, 300_000])
def test_every_path_runs_on_the_input_device(reduction, prior, n):
    # The meta device computes nothing: a CPU tensor copied into the computation would raise.
    mu, log_var = (torch.empty(n, 3, device="meta", requires_grad=True) for _ in range(2))
    priors = (torch.empty(3, device="meta"),) * 2 if prior else (None, None)
    kl = kl_divergence_normal(mu, log_var, *priors, reduction=reduction)
    assert kl.device.type == "meta"
    kl.sum().backward()
    assert mu.grad is not None
    assert mu.grad.device.type == "meta"


def test_a_latent_with_no_elements_has_a_kl_of_zero_per_data_point():
    empty = torch.zeros(4, 0)
    assert kl_divergence_normal(empty, empty).item() == 0.0
    assert kl_divergence_normal(empty, empty, reduction="sum", free_bits=0.5).item() == 0.0
    with pytest.raises(ValueError, match=r"should not be empty for reduction='mean'"):
        kl_divergence_normal(empty, empty, reduction="mean")


def test_free_bits_beyond_float32_are_refused_by_name():
    z = torch.zeros(2, 3)
    with pytest.raises(
        ValueError,
        match=r"Argument free_bits should be at most 3.403e\+38, the largest float32, but "
        r"given 1e\+308",
    ):
        kl_divergence_normal(z, z, free_bits=1e308)
