"""The fused KL path: float64 references, chunking, saved tensors, compiled equals eager."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import Normal, kl_divergence

from tests.functional._kl_reference import expm1_minus_x, make
from vaekit.functional import _kl_fused as kl_module
from vaekit.functional import kl_divergence_normal

REDUCTIONS = ["none", "sum", "mean", "batchmean"]
PRIORS = ["none", "mu", "log_var", "both", "per_row"]


def reference(mu, log_var, prior_mu, prior_log_var, reduction, free_bits=0.0):
    """torch.distributions in float64, reduced by hand."""
    mu, log_var = mu.double(), log_var.double()
    prior_mu = torch.zeros(()) if prior_mu is None else prior_mu
    prior_log_var = torch.zeros(()) if prior_log_var is None else prior_log_var
    p_scale = (0.5 * prior_log_var.double()).exp().expand_as(mu)
    q = Normal(mu, (0.5 * log_var).exp(), validate_args=True)
    kl = kl_divergence(q, Normal(prior_mu.double().expand_as(mu), p_scale, validate_args=True))
    b, d = mu.shape[0], mu[0].numel()
    if free_bits > 0:
        per_element = kl.mean(dim=0).clamp_min(free_bits)
        return {"batchmean": per_element.sum(), "sum": b * per_element.sum()}.get(
            reduction, per_element.sum() / d
        )
    return {"none": kl, "sum": kl.sum(), "mean": kl.mean(), "batchmean": kl.sum() / b}[reduction]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few elements, so that small tensors take the chunked path."""
    monkeypatch.setattr(kl_module, "_CHUNK", 1)


# ---------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_values_and_gradients_match_float64_reference(reduction, prior, chunked, monkeypatch):
    if chunked:
        monkeypatch.setattr(kl_module, "_CHUNK", 1)
    tensors = [t.requires_grad_() if t is not None else None for t in make((4, 3, 2), prior)]
    copies = [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]
    got = kl_divergence_normal(*tensors, reduction=reduction)
    want = reference(*copies, reduction)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    weights = torch.rand(got.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    for t, c in zip(tensors, copies, strict=True):
        if t is not None:
            torch.testing.assert_close(t.grad, c.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize(
    ("reduction", "free_bits"), [(r, 0.0) for r in REDUCTIONS] + [("sum", 0.9), ("mean", 0.9)]
)
def test_float32_series_path_matches_float64_reference(reduction, free_bits, prior, monkeypatch):
    monkeypatch.setattr(kl_module, "_SMALL", 0)  # every chunk through the series
    monkeypatch.setattr(kl_module, "_CHUNK", 1)
    tensors = [t.requires_grad_() if t is not None else None for t in make((5, 3, 2), prior)]
    as_float = [t.detach().float().requires_grad_() if t is not None else None for t in tensors]
    got = kl_divergence_normal(*as_float, reduction=reduction, free_bits=free_bits)
    want = reference(
        *[t.detach().float().double() if t is not None else None for t in tensors],
        reduction,
        free_bits=free_bits,
    )
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-7)
    got.sum().backward()
    kl_divergence_normal(*tensors, reduction=reduction, free_bits=free_bits).sum().backward()
    for t, f in zip(tensors, as_float, strict=True):
        if t is not None:
            torch.testing.assert_close(f.grad.double(), t.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("reduction", ["sum", "mean", "batchmean"])
def test_free_bits_match_float64_reference(reduction, prior, chunked, monkeypatch):
    if chunked:
        monkeypatch.setattr(kl_module, "_CHUNK", 1)
    tensors = make((5, 2, 3), prior)
    got = kl_divergence_normal(*tensors, reduction=reduction, free_bits=0.9)
    want = reference(*tensors, reduction, free_bits=0.9)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_and_gradgradcheck_through_chunks(reduction, prior):
    tensors = tuple(t.requires_grad_() for t in make((3, 2, 2), prior) if t is not None)
    names = [n for n, t in zip("ABCD", make((3, 2, 2), prior), strict=True) if t is not None]

    def fn(*args):
        named = dict(zip(names, args, strict=True))
        return kl_divergence_normal(
            named["A"], named["B"], named.get("C"), named.get("D"), reduction=reduction
        )

    assert torch.autograd.gradcheck(fn, tensors)
    assert torch.autograd.gradgradcheck(fn, tensors)


@pytest.mark.usefixtures("small_chunks")
def test_gradgradcheck_with_free_bits_through_chunks():
    mu, log_var, _, prior_lv = (t.requires_grad_() for t in make((4, 3), "both"))

    def fn(m, lv, plv):
        return kl_divergence_normal(m, lv, None, plv, free_bits=0.4, reduction="mean")

    assert torch.autograd.gradgradcheck(fn, (mu, log_var, prior_lv))


def test_large_chunked_float32_matches_float64_reference():
    # 2 * 40_000 elements: more than one chunk of the real size, rows split across chunks.
    mu, log_var, _, _ = make((2, 40_000), "none", dtype=torch.float32)
    mu.requires_grad_()
    log_var.requires_grad_()
    got = kl_divergence_normal(mu, log_var)
    mu64, lv64 = (t.detach().double().requires_grad_() for t in (mu, log_var))
    want = reference(mu64, lv64, None, None, "batchmean")
    torch.testing.assert_close(got.double(), want, rtol=1e-7, atol=0)
    got.backward()
    want.backward()
    torch.testing.assert_close(mu.grad.double(), mu64.grad, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(log_var.grad.double(), lv64.grad, rtol=1e-6, atol=1e-7)
    elementwise = kl_divergence_normal(mu, log_var, reduction="none").double()
    want = reference(mu64, lv64, None, None, "none")
    torch.testing.assert_close(elementwise, want, rtol=SERIES_BOUND, atol=0)


@pytest.mark.usefixtures("small_chunks")
def test_non_contiguous_inputs_through_chunks():
    mu, log_var, prior_mu, _ = make((3, 4), "mu")
    got = kl_divergence_normal(mu.t(), log_var.t(), reduction="none")
    torch.testing.assert_close(got, reference(mu.t(), log_var.t(), None, None, "none"))
    got = kl_divergence_normal(mu.t(), log_var.t(), prior_mu[:3], reduction="sum")
    torch.testing.assert_close(got, reference(mu.t(), log_var.t(), prior_mu[:3], None, "sum"))


@pytest.mark.parametrize("chunked", [False, True])
def test_inputs_are_never_modified(chunked, monkeypatch):
    if chunked:
        monkeypatch.setattr(kl_module, "_CHUNK", 1)
    for dtype in (torch.float16, torch.float32, torch.float64):
        tensors = [t.requires_grad_() for t in make((3, 4), "per_row", dtype=dtype)]
        before = [t.detach().clone() for t in tensors]
        for reduction in REDUCTIONS:
            kl_divergence_normal(*tensors, reduction=reduction).sum().backward()
            with torch.no_grad():
                kl_divergence_normal(*tensors, reduction=reduction)
        for t, b in zip(tensors, before, strict=True):
            assert torch.equal(t.detach(), b)


# ---------------------------------------------------------------- precision


# Up to _SMALL elements: expm1 in float64, within 2^-23 wherever |delta| >= 2^-28.
# Above: a series near 0 and exp elsewhere, within 4e-7 wherever the result is a normal float32.
SERIES_BOUND = 4e-7


@pytest.mark.parametrize("n", [1000, 8000])
@pytest.mark.parametrize("prior", [False, True])
def test_float32_relative_error_near_zero_is_float32_precision(prior, n):
    delta = torch.cat([s * torch.logspace(-8.4, 1.9, n, dtype=torch.float64) for s in (1, -1)])
    delta = delta.float()
    prior_log_var = torch.full_like(delta, 0.75) if prior else None
    log_var = delta + 0.75 if prior else delta
    mu = torch.zeros_like(delta)
    d64 = log_var.double() - (0.75 if prior else 0.0)  # the float32 inputs, exactly
    want = 0.5 * expm1_minus_x(d64)
    got = kl_divergence_normal(mu, log_var, None, prior_log_var, reduction="none").double()
    assert (want > 0).sum() > 1.5 * n  # a prior of 0.75 absorbs the smallest deltas: d64 = 0
    bound = 2**-23 if 2 * n <= kl_module._SMALL else SERIES_BOUND
    assert ((got - want).abs() <= bound * want).all()
    assert (got[want == 0] == 0).all()


finite_log_var = st.floats(-80, 80, allow_nan=False, allow_subnormal=False, width=32)


@given(values=st.lists(finite_log_var, min_size=1))
def test_float64_path_error_is_an_ulp_for_any_log_var(values):
    log_var = torch.tensor([values])
    want = 0.5 * expm1_minus_x(log_var)
    got = kl_divergence_normal(torch.zeros_like(log_var), log_var, reduction="none").double()
    ok = (got - want).abs() <= 2**-23 * want
    tiny = log_var.abs() < 2**-28  # below this, the error is bounded in absolute terms
    assert (ok | (tiny & ((got - want).abs() <= 2**-80))).all()
    assert (got >= 0).all()


@given(values=st.lists(finite_log_var, min_size=1), mu=st.floats(-10, 10, width=32))
def test_series_path_error_is_within_its_bound_for_any_log_var(values, mu):
    log_var = torch.tensor([values])
    mu_t = torch.full_like(log_var, mu)
    want = 0.5 * (mu_t.double() ** 2 + expm1_minus_x(log_var))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kl_module, "_SMALL", 0)
        got = kl_divergence_normal(mu_t, log_var, reduction="none").double()
    tiny = torch.finfo(torch.float32).tiny  # below it, float32 results are subnormal
    assert ((got - want).abs() <= torch.clamp(SERIES_BOUND * want, min=tiny)).all()
    assert (got >= 0).all()


def test_half_precision_chunked_matches_float64_of_the_half_values(small_chunks):
    mu, log_var, _, _ = make((3, 4), "none", dtype=torch.float16)
    mu.requires_grad_()
    log_var.requires_grad_()
    got = kl_divergence_normal(mu, log_var, reduction="sum")
    assert got.dtype == torch.float32
    want = reference(mu.detach(), log_var.detach(), None, None, "sum")
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)
    got.backward()
    assert mu.grad.dtype == log_var.grad.dtype == torch.float16
    want_grad = 0.5 * torch.expm1(log_var.detach().double())
    torch.testing.assert_close(log_var.grad, want_grad.half())  # float16 tolerance


# ---------------------------------------------------------------- the float32 sum on CPU


def exact_twice_kl_sum(mu, log_var):
    """2 * sum(KL) from N(0, I) in float64 to float64 precision, of the float32 values."""
    return (mu.double() ** 2 + expm1_minus_x(log_var)).sum()


@pytest.mark.parametrize("chunk", [1 << 16, 1000, 4097])  # one chunk; many, with a tail
@pytest.mark.parametrize("scale", [1.0, 0.01])
def test_float32_sum_matches_float64_within_a_float32_ulp(chunk, scale, monkeypatch):
    monkeypatch.setattr(kl_module, "_SUM_CHUNK", chunk)
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(50, 200, generator=g) * scale
    log_var = torch.randn(50, 200, generator=g) * 3 * scale
    got = kl_divergence_normal(mu, log_var, reduction="sum").double()
    want = 0.5 * exact_twice_kl_sum(mu, log_var)
    assert abs(got - want) <= 2**-23 * want


@pytest.mark.parametrize("spread", [1e-6, 1e-4, 1e-2])
def test_float32_sum_near_the_prior_is_recomputed_exactly(spread):
    # Every latent at its prior: the sum averages below _SUM_FLOOR per element, where e^lv's
    # rounding in float64 (2^-52 near 1) would show, and expm1 recomputes it.
    g = torch.Generator().manual_seed(4)
    log_var = (torch.rand(40, 300, generator=g) * 2 - 1) * spread
    mu = torch.randn(40, 300, generator=g) * spread / 10
    got = kl_divergence_normal(mu, log_var, reduction="sum").double()
    want = 0.5 * exact_twice_kl_sum(mu, log_var)
    assert abs(got - want) <= 2**-23 * want
    zeros = torch.zeros(40, 300)
    assert kl_divergence_normal(zeros, zeros, reduction="sum").item() == 0.0


@pytest.mark.parametrize("shape", [(40, 300), (4, 30)])  # the float32 sum, the small path
def test_float32_sum_overflows_to_inf_and_keeps_nan(shape):
    mu, log_var = torch.zeros(shape), torch.zeros(shape)
    log_var[3, 7] = 100.0  # e^100 overflows float32, not float64: so does the true KL
    assert kl_divergence_normal(mu, log_var).item() == float("inf")
    log_var[3, 7] = -1e30  # KL = 5e29: large, finite
    assert kl_divergence_normal(mu, log_var, reduction="sum").item() == pytest.approx(5e29)
    log_var[3, 7] = float("nan")
    assert kl_divergence_normal(mu, log_var).isnan()


def test_float32_sum_gradients_match_float64_and_are_zero_at_the_prior():
    g = torch.Generator().manual_seed(5)
    mu, log_var = (torch.randn(40, 300, generator=g).requires_grad_() for _ in range(2))
    with torch.no_grad():
        log_var[0] = 0.0
    kl_divergence_normal(mu, log_var, reduction="mean").backward()
    n = mu.numel()
    torch.testing.assert_close(mu.grad, mu.detach() / n, rtol=2**-23, atol=0)
    want = 0.5 * torch.expm1(log_var.detach().double()) / n
    torch.testing.assert_close(log_var.grad.double(), want, rtol=1e-6, atol=2**-24 / n)
    assert (log_var.grad[0] == 0).all()


# ---------------------------------------------------------------- devices


@pytest.mark.parametrize("n", [8, 5000])  # the float64 path and the chunked series
@pytest.mark.parametrize("prior", ["none", "both"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_operation_stays_on_the_input_device(reduction, prior, n):
    # Meta tensors carry no data, and refuse a CPU tensor written into their computation (the
    # series' coefficients once were). They let a 0-dim CPU operand of addcmul through, which
    # CUDA refuses: only a GPU run checks that.
    mu, log_var = (torch.empty(n, 3, device="meta", requires_grad=True) for _ in range(2))
    prior_mu = prior_log_var = torch.empty(3, device="meta") if prior == "both" else None
    kl = kl_divergence_normal(mu, log_var, prior_mu, prior_log_var, reduction=reduction)
    assert kl.device.type == "meta"
    kl.sum().backward()
    assert mu.grad.device.type == log_var.grad.device.type == "meta"


# ---------------------------------------------------------------- saved tensors


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_only_the_inputs_are_saved_for_backward(reduction, prior, chunked, monkeypatch):
    if chunked:
        monkeypatch.setattr(kl_module, "_CHUNK", 1)
    tensors = [t.requires_grad_() if t is not None else None for t in make((4, 3), prior)]
    inputs = {id(t) for t in tensors if t is not None}
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        kl_divergence_normal(*tensors, reduction=reduction, free_bits=0.0)
    assert saved, "a fused path saves its inputs"
    assert all(id(t) in inputs for t in saved)


def test_no_graph_without_grad():
    mu, log_var, _, _ = (t.requires_grad_() if t is not None else t for t in make((3, 4), "none"))
    with torch.no_grad():
        assert kl_divergence_normal(mu, log_var).grad_fn is None
    detached = kl_divergence_normal(mu.detach(), log_var.detach())
    assert detached.grad_fn is None
    torch.testing.assert_close(detached, kl_divergence_normal(mu, log_var).detach())


# ---------------------------------------------------------------- compiled equals eager


def test_compiled_equals_eager_and_stays_accurate_near_zero():
    log_var = torch.cat([s * torch.logspace(-6, 1.9, 500, dtype=torch.float64) for s in (1, -1)])
    log_var = log_var.float().view(2, -1).requires_grad_()
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(log_var.shape, generator=g).requires_grad_()

    def kl_none(m, lv):
        return kl_divergence_normal(m, lv, reduction="none")

    compiled = torch.compile(kl_none, fullgraph=True)
    got = compiled(mu, log_var)
    eager = kl_none(mu, log_var)
    torch.testing.assert_close(got, eager, rtol=1e-6, atol=0)
    zero_mu = compiled(torch.zeros_like(mu), log_var).double()
    want = 0.5 * expm1_minus_x(log_var.detach())
    assert (zero_mu >= 0).all()
    assert ((zero_mu - want).abs() / want).max().item() < 1e-6
    weights = torch.rand(got.shape, generator=g)
    grads = torch.autograd.grad((got * weights).sum(), (mu, log_var))
    grads_eager = torch.autograd.grad((eager * weights).sum(), (mu, log_var))
    for a, b in zip(grads, grads_eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_compiled_gradients_with_a_prior_and_free_bits_equal_eager():
    # Compiled, the value comes from a series on detached inputs and the gradients from a
    # surrogate: both must agree with the eager Function for every input, prior included.
    g = torch.Generator().manual_seed(1)
    mu, log_var = (torch.randn(6, 5, generator=g).requires_grad_() for _ in range(2))
    prior_mu, prior_log_var = (torch.randn(5, generator=g).requires_grad_() for _ in range(2))
    inputs = (mu, log_var, prior_mu, prior_log_var)

    def kl(*args):
        return kl_divergence_normal(*args, reduction="batchmean", free_bits=0.2)

    got = torch.compile(kl, fullgraph=True)(*inputs)
    eager = kl(*inputs)
    torch.testing.assert_close(got, eager, rtol=1e-6, atol=0)
    for a, b in zip(
        torch.autograd.grad(got, inputs), torch.autograd.grad(eager, inputs), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
