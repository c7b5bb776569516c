"""VAELoss: the module equals the function; beta and capacity are in-place buffers; compile."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.nn._weights import (
    assert_one_compile_for_every_weight,
    assert_setter_refuses_bad_weights,
)
from vaekit import VAELoss, VAELossOutput
from vaekit.functional import vae_loss


def inputs(shape=(6, 3, 4, 4), latent=(6, 5), seed=0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    x_hat = torch.rand(shape, generator=g)
    mu, log_var = torch.randn(latent, generator=g), torch.randn(latent, generator=g)
    return tuple(t.to(device, dtype) for t in (x_hat, x, mu, log_var))


def test_the_notebook_tensors():
    x = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 4.0]]]])
    x_hat = torch.tensor([[[[1.5, 2.5]]], [[[2.0, 5.0]]]])
    mu, log_var = torch.randn(2, 10), torch.randn(2, 10)
    mean = VAELoss(reduction="mean")(x_hat, x, mu, log_var)
    batchmean = VAELoss(reduction="batchmean")(x_hat, x, mu, log_var)
    assert isinstance(mean, VAELossOutput)
    torch.testing.assert_close(mean.recon, F.mse_loss(x_hat, x, reduction="mean"))
    assert mean.recon.item() == 0.625
    assert batchmean.recon.item() == 1.25
    # The notebook's mixed convention, explicitly: per-element recon, per-data-point KL.
    ported = VAELoss(reduction=("mean", "batchmean"))(x_hat, x, mu, log_var)
    kl = torch.mean(-0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=1))
    torch.testing.assert_close(ported.loss, F.mse_loss(x_hat, x) + kl)


@pytest.mark.parametrize("recon", ["mse", "l1", "bce", "bce_with_logits", "gaussian"])
@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum", ("mean", "batchmean")])
def test_module_equals_function(recon, reduction, device, dtype):
    x_hat, x, mu, log_var = inputs(device=device, dtype=dtype)
    kw = {"recon_var": 0.3} if recon == "gaussian" else {}
    # Weights exact in float32: the buffers hold the function's weights in either dtype.
    settings = dict(beta=0.375, reduction=reduction, free_bits=0.1, capacity=2.0, **kw)
    module = VAELoss(recon, **settings).to(device, dtype)
    got = module(x_hat, x, mu, log_var)
    want = vae_loss(x_hat, x, mu, log_var, recon=recon, **settings)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_callable_recon():
    x_hat, x, mu, log_var = inputs()

    def smooth_l1(a, b):
        return F.smooth_l1_loss(a, b, reduction="none")

    module = VAELoss(smooth_l1)
    got = module(x_hat, x, mu, log_var).recon
    torch.testing.assert_close(got, F.smooth_l1_loss(x_hat, x, reduction="sum") / 6)
    assert "recon='smooth_l1'" in repr(module)


def test_beta_and_capacity_are_written_in_place_and_stay_out_of_state_dict():
    x_hat, x, mu, log_var = inputs()
    module = VAELoss(beta=1.0)
    beta, ptr = module.beta, module.beta.data_ptr()
    for value in (0.3, 0, torch.tensor(2.5), torch.tensor([4.0], dtype=torch.float64)):
        module.beta = value
        assert module.beta is beta
        assert module.beta.data_ptr() == ptr
        assert module.beta.shape == ()
        want = vae_loss(x_hat, x, mu, log_var, beta=float(value))
        torch.testing.assert_close(module(x_hat, x, mu, log_var), want)
    assert module.capacity is None
    module.capacity = 1.5
    capacity = module.capacity
    module.capacity = torch.tensor(3.0)
    assert module.capacity is capacity
    assert module.capacity.item() == 3.0
    torch.testing.assert_close(
        module(x_hat, x, mu, log_var), vae_loss(x_hat, x, mu, log_var, beta=4.0, capacity=3.0)
    )
    module.capacity = None
    assert module.capacity is None
    assert module.state_dict() == {}
    assert [name for name, _ in module.named_buffers()] == ["_beta"]


def test_a_tensor_beta_is_copied_not_linked():
    module = VAELoss()
    source = torch.tensor(0.5)
    module.beta = source
    source.fill_(9.0)
    assert module.beta.item() == 0.5


def test_a_beta_that_requires_grad_is_refused_not_silently_detached():
    module = VAELoss(beta=0.25)
    with pytest.raises(
        ValueError,
        match=r"Argument beta should not require grad: VAELoss copies it into a buffer, which "
        r"drops its gradient \(pass a tensor beta to vaekit.functional.vae_loss to learn it\)",
    ):
        module.beta = torch.tensor(0.5, requires_grad=True)
    assert module.beta.item() == 0.25


def test_setting_beta_between_forward_and_backward_keeps_the_forward_beta():
    # A controller may update beta from out.kl before loss.backward().
    module = VAELoss(beta=2.0)
    x = torch.rand(3, 4)
    mu = torch.randn(3, 2, requires_grad=True)
    out = module(x, x, mu, torch.zeros(3, 2))
    module.beta = 5.0
    out.loss.backward()
    assert mu.grad is not None
    torch.testing.assert_close(mu.grad, 2.0 * mu.detach() / 3)  # d/dmu of beta * mean_b mu^2/2


def test_buffers_follow_to(device, dtype):
    module = VAELoss(beta=0.3, capacity=2.0).to(device, dtype)
    assert module.capacity is not None
    for buffer in (module.beta, module.capacity):
        assert (buffer.device, buffer.dtype) == (device, dtype)
    module.capacity = None
    module.capacity = 1.0  # re-created next to beta
    assert (module.capacity.device, module.capacity.dtype) == (device, dtype)
    module.capacity = 2.0
    if device.type != "cpu":  # not read back, which would sync the device: not checked
        module.beta = torch.tensor(-1.0, device=device)
    module.beta = 0.7
    got = module(*inputs(device=device, dtype=dtype))
    want = vae_loss(*inputs(dtype=dtype), beta=0.7, capacity=2.0)  # on the CPU
    torch.testing.assert_close(tuple(t.cpu() for t in got), tuple(want))


def test_repr():
    module = VAELoss("bce", beta=0.3, reduction=("mean", "batchmean"), capacity=5.0)
    assert repr(module) == (
        "VAELoss(recon='bce', reduction=('mean', 'batchmean'), beta=0.3, free_bits=0.0, "
        "capacity=5.0)"
    )


def test_settings_are_validated():
    with pytest.raises(
        ValueError, match=r"Argument recon should be one of 'mse', .* but given 'ce'"
    ):
        VAELoss("ce")
    with pytest.raises(
        ValueError, match=r"Argument reduction should be one of .* but given 'none'"
    ):
        VAELoss(reduction="none")
    with pytest.raises(ValueError, match=r"Argument free_bits should be a finite number >= 0"):
        VAELoss(free_bits=-0.1)
    with pytest.raises(
        ValueError, match=r"Argument recon_var should be None unless recon is one of"
    ):
        VAELoss(recon_var=2.0)
    with pytest.raises(
        TypeError,
        match=r"Argument recon_var should be a number, 'optimal', 'optimal_channel' or a "
        r"vaekit.nn.LearnedVariance \(pass a tensor to vaekit.functional.vae_loss\), but "
        r"given Tensor",
    ):
        VAELoss("gaussian", recon_var=torch.ones(1))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["beta", "capacity"])
def test_setters_validate_and_keep_the_value(name):
    assert_setter_refuses_bad_weights(VAELoss(capacity=1.0), name, kept=1.0)


def test_compiled_step_with_a_new_beta_every_step_compiles_once():
    loss_fn = VAELoss(capacity=0.0)
    x_hat, x, _, _ = inputs()
    assert_one_compile_for_every_weight(
        loss_fn,
        lambda s: loss_fn(x_hat, x, s.mu, s.log_var),
        lambda s, **weights: vae_loss(x_hat, x, s.mu, s.log_var, **weights),
        [{"beta": beta, "capacity": 0.5 * i} for i, beta in enumerate((0.1, 0.25, 0.7, 3.0, 0.0))],
    )


@pytest.mark.slow
def test_compiled_equals_eager():
    torch._dynamo.reset()
    module = VAELoss("bce_with_logits", beta=0.5, free_bits=0.05)
    compiled = torch.compile(module, fullgraph=True)
    x_hat, x, mu, log_var = (t.requires_grad_() for t in inputs())
    eager = module(x_hat, x, mu, log_var)
    got = compiled(x_hat, x, mu, log_var)
    torch.testing.assert_close(tuple(got), tuple(eager))
    args = (x_hat, mu, log_var)
    grads = torch.autograd.grad(got.loss, args)
    torch.testing.assert_close(grads, torch.autograd.grad(eager.loss, args))


def test_beta_survives_a_module_cast_to_half_precision():
    # convert_beta's own example: 16,777,216 is inf in float16.
    module = VAELoss(beta=16777216.0, capacity=70000.0).half()
    assert module.beta.dtype == torch.float32
    assert module.beta.item() == 16777216.0
    assert module.capacity is not None
    assert module.capacity.item() == 70000.0
    module = module.to(torch.bfloat16).double()
    assert module.beta.dtype == torch.float64
    assert module.beta.item() == 16777216.0
    x_hat, x, mu, log_var = (t.half() for t in inputs())
    out = module.half()(x_hat, x, mu, log_var)
    assert out.loss.isfinite()


def test_a_beta_beyond_float32_is_refused_by_name():
    with pytest.raises(
        ValueError, match=r"Argument beta should be at most 3.403e\+38, the largest float32"
    ):
        VAELoss(beta=1e300)
    with pytest.raises(
        ValueError, match=r"Argument free_bits should be at most 3.403e\+38, the largest float32"
    ):
        VAELoss(free_bits=1e308)


def test_a_module_on_the_meta_device_prints():
    with torch.device("meta"):
        module = VAELoss(beta=0.5, capacity=1.0)
    assert module.beta.device.type == "meta"
    assert repr(module) == (
        "VAELoss(recon='mse', reduction='batchmean', beta=meta, free_bits=0.0, capacity=meta)"
    )


@pytest.mark.parametrize(
    ("recon", "settings"),
    [
        ("gaussian", {"recon_var": "optimal"}),
        ("gaussian", {"recon_var": "optimal_channel", "min_log_sigma": None}),
        ("gaussian", {"recon_var": "optimal", "min_log_sigma": -1.0, "sync_dist": True}),
        ("discretized_gaussian", {"recon_var": 0.01, "num_bins": 17}),
        ("discretized_logistic", {"recon_var": "optimal", "data_range": (-1.0, 1.0)}),
    ],
)
def test_module_equals_function_for_calibrated_and_discretized_decoders(recon, settings):
    x_hat, x, mu, log_var = inputs()
    module = VAELoss(recon, beta=0.4, **settings)
    got = module(x_hat, x, mu, log_var)
    want = vae_loss(x_hat, x, mu, log_var, recon=recon, beta=0.4, **settings)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_repr_of_the_decoder_settings():
    assert repr(VAELoss("gaussian", recon_var="optimal")) == (
        "VAELoss(recon='gaussian', reduction='batchmean', beta=1.0, free_bits=0.0, "
        "capacity=None, recon_var='optimal', min_log_sigma=-6.0)"
    )
    module = VAELoss("discretized_logistic", num_bins=17, recon_var="optimal", sync_dist=True)
    assert repr(module) == (
        "VAELoss(recon='discretized_logistic', reduction='batchmean', beta=1.0, free_bits=0.0, "
        "capacity=None, recon_var='optimal', min_log_sigma=-6.0, num_bins=17, "
        "data_range=(0.0, 1.0), sync_dist=True)"
    )


def test_decoder_settings_are_validated():
    with pytest.raises(ValueError, match=r"Argument num_bins should be an int >= 2, but given 1"):
        VAELoss("discretized_gaussian", num_bins=1)
    with pytest.raises(ValueError, match=r"Argument data_range should be a pair"):
        VAELoss("discretized_gaussian", data_range=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"Argument min_log_sigma should be a finite number"):
        VAELoss("gaussian", recon_var="optimal", min_log_sigma=math.nan)
    with pytest.raises(ValueError, match=r"Argument sync_dist should be False unless recon_var"):
        VAELoss("gaussian", recon_var=0.5, sync_dist=True)
    with pytest.raises(ValueError, match=r"Argument recon_var should be a number > 0, a tensor"):
        VAELoss("gaussian", recon_var="best")
