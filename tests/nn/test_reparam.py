"""GaussianReparam: heads, splitting, clamping, eval behaviour, compile."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from vaekit import GaussianReparam, GaussianSample
from vaekit.functional import kl_divergence_normal


def test_linear_head_maps_features_to_mu_and_log_var(device, dtype):
    torch.manual_seed(0)
    layer = GaussianReparam(5, 3).to(device, dtype)
    assert isinstance(layer.head, nn.Linear)
    assert (layer.head.in_features, layer.head.out_features) == (5, 6)
    x = torch.randn(4, 5, device=device, dtype=dtype)
    out = layer(x, generator=torch.Generator(device).manual_seed(2))
    assert isinstance(out, GaussianSample)
    h = layer.head(x)
    torch.testing.assert_close(out.mu, h[:, :3])
    torch.testing.assert_close(out.log_var, h[:, 3:])
    eps = torch.randn(
        4, 3, generator=torch.Generator(device).manual_seed(2), device=device, dtype=dtype
    )
    torch.testing.assert_close(out.z, out.mu + eps * torch.exp(0.5 * out.log_var))


def test_conv_latent_split_along_channels():
    layer = GaussianReparam(dim=1)
    x = torch.randn(2, 6, 4, 4)
    z, mu, log_var = layer(x)
    assert torch.equal(mu, x[:, :3])
    assert torch.equal(log_var, x[:, 3:])
    assert z.shape == (2, 3, 4, 4)


def test_pair_input_and_eval_mode():
    layer = GaussianReparam()
    mu, log_var = torch.randn(3, 2), torch.randn(3, 2)
    assert not torch.equal(layer(mu, log_var).z, mu)
    layer.eval()
    assert torch.equal(layer(mu, log_var).z, mu)
    sampling = GaussianReparam(sample_in_eval=True).eval()
    assert not torch.equal(sampling(mu, log_var).z, mu)


def test_log_var_is_clamped_so_the_kl_stays_finite():
    layer = GaussianReparam()
    mu = torch.zeros(1, 3)
    log_var = torch.tensor([[-1e4, 0.5, 1e4]])
    out = layer(mu, log_var)
    assert out.log_var.tolist() == [[-30.0, 0.5, 20.0]]
    assert torch.isfinite(kl_divergence_normal(out.mu, out.log_var)).all()
    assert torch.isfinite(out.z).all()
    raw = GaussianReparam(log_var_range=None)(mu, log_var)
    assert torch.equal(raw.log_var, log_var)


def test_gradients_reach_the_head():
    layer = GaussianReparam(4, 2)
    z, mu, log_var = layer(torch.randn(3, 4))
    (z.sum() + kl_divergence_normal(mu, log_var)).backward()
    assert layer.head is not None
    assert layer.head.weight.grad is not None
    assert layer.head.weight.grad.abs().sum() > 0


# (construction arguments, exception, the whole message)
CONSTRUCTION_ERRORS = [
    (
        {"in_features": 4},
        ValueError,
        "Arguments in_features and latent_dim should be given together, but given "
        "in_features=4 and latent_dim=None",
    ),
    (
        {"in_features": 4, "latent_dim": 2, "dim": 1},
        ValueError,
        "Argument dim should be -1 with a linear head, which reads the last dimension, but "
        "given dim=1",
    ),
    (
        {"in_features": 4, "latent_dim": 0},
        ValueError,
        "Argument latent_dim should be a positive int, but given 0",
    ),
    *[
        ({"dim": dim}, TypeError, f"Argument dim should be an int, but given {type(dim).__name__}")
        for dim in ("1", 1.0, True)
    ],
    (
        {"in_features": 4, "latent_dim": 2, "dim": "-1"},
        TypeError,
        "Argument dim should be an int, but given str",
    ),
    (
        {"log_var_range": (1.0,)},
        TypeError,
        "Argument log_var_range should be a (low, high) pair of numbers or None, but given (1.0,)",
    ),
    (
        {"log_var_range": (2.0, -2.0)},
        ValueError,
        "Argument log_var_range should satisfy low < high, but given (2.0, -2.0)",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), CONSTRUCTION_ERRORS)
def test_construction_errors(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        GaussianReparam(**kwargs)


def _at_least(dim, shape, needed):
    message = (
        f"Argument x should have at least {needed} dimensions to split along dim={dim}, "
        f"but given x.shape={shape}"
    )
    return {"dim": dim}, (torch.zeros(shape),), ValueError, message


# (construction arguments, call arguments, exception, the start of the message)
CALL_ERRORS = [
    (
        {"dim": 1},
        (torch.zeros(2, 5, 3),),
        ValueError,
        "Argument x should have an even size along dim=1 to split into mu and log_var, "
        "but given x.shape=(2, 5, 3)",
    ),
    (
        {"dim": 1},
        (torch.zeros(2, 3), torch.zeros(2, 4)),
        ValueError,
        "Arguments mu and log_var should have the same shape",
    ),
    _at_least(1, (4,), 2),
    _at_least(5, (2, 4), 6),
    _at_least(-3, (2, 4), 3),
    (
        {"dim": 1},
        (torch.zeros(2, 4, dtype=torch.long),),
        TypeError,
        "Argument x should be a floating-point tensor",
    ),
]


@pytest.mark.parametrize(("kwargs", "args", "error", "message"), CALL_ERRORS)
def test_call_errors(kwargs, args, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}"):
        GaussianReparam(**kwargs)(*args)


def test_the_edges_of_the_dimension_range_split_as_torch_counts_dimensions():
    out = GaussianReparam(dim=-2).eval()(torch.arange(8.0).reshape(2, 4))
    assert out.mu.tolist() == [[0.0, 1.0, 2.0, 3.0]]


def test_repr():
    assert "log_var_range=(-30.0, 20.0)" in repr(GaussianReparam(3, 2))


@pytest.mark.slow
def test_compiled_equals_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = GaussianReparam(8, 4)
    x = torch.randn(5, 8)
    compiled = torch.compile(layer, fullgraph=True)
    # Inductor has its own RNG: compare the deterministic part in eval, the noise under fallback.
    layer.eval()
    torch.testing.assert_close(tuple(compiled(x)), tuple(layer(x)))
    layer.train()
    with torch._inductor.config.patch(fallback_random=True):
        torch.manual_seed(1)
        got = torch.compile(layer, fullgraph=True)(x)
        torch.manual_seed(1)
        torch.testing.assert_close(tuple(got), tuple(layer(x)))


def test_the_default_splits_the_channels_of_a_conv_latent_and_the_features_of_a_linear_one():
    layer = GaussianReparam().eval()
    conv = torch.randn(2, 6, 5, 7)
    out = layer(conv)
    assert torch.equal(out.mu, conv[:, :3])  # channels, never the width
    assert torch.equal(out.log_var, conv[:, 3:])
    linear = torch.randn(4, 10)
    out = layer(linear)
    assert torch.equal(out.mu, linear[:, :5])
    assert layer.dim == 1
    assert GaussianReparam(3, 2).dim == -1  # a head writes the last dimension
    with pytest.raises(ValueError, match=r"should have an even size along dim=1"):
        layer(torch.randn(2, 5, 4, 4))


def test_the_pair_by_position_or_by_name():
    layer = GaussianReparam().eval()
    mu, log_var = torch.randn(3, 2), torch.randn(3, 2)
    for out in (layer(mu, log_var), layer(mu=mu, log_var=log_var), layer(mu, log_var=log_var)):
        assert torch.equal(out.mu, mu)
        assert torch.equal(out.log_var, log_var)
    with pytest.raises(
        ValueError,
        match=r"Argument mu should be given once with log_var, positionally or by name, but "
        r"given x and mu and log_var",
    ):
        layer(mu, log_var, mu=mu)
    with pytest.raises(
        ValueError, match=r"Arguments x, or mu and log_var, should be given, but given mu"
    ):
        layer(mu=mu)
    with pytest.raises(
        ValueError, match=r"Arguments x, or mu and log_var, should be given, but given none"
    ):
        layer()
