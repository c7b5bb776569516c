"""KLDivergenceNormal: the module equals the function; settings validated at construction."""

from __future__ import annotations

import pytest
import torch

from vaekit import KLDivergenceNormal
from vaekit.functional import kl_divergence_normal


@pytest.mark.parametrize(
    ("reduction", "free_bits"),
    [("none", 0.0)] + [(r, fb) for r in ("sum", "mean", "batchmean") for fb in (0.0, 0.4)],
)
def test_module_equals_function(reduction, free_bits, device, dtype):
    mu, log_var = (torch.randn(6, 3, 2, device=device, dtype=dtype) for _ in "ab")
    prior = tuple(torch.randn(3, 2, device=device, dtype=dtype) for _ in "ab")
    module = KLDivergenceNormal(reduction=reduction, free_bits=free_bits).to(device)
    for args in ((mu, log_var), (mu, log_var, *prior)):
        want = kl_divergence_normal(*args, reduction=reduction, free_bits=free_bits)
        assert torch.equal(module(*args), want)


def test_repr_and_no_state():
    module = KLDivergenceNormal(reduction="sum", free_bits=0.25)
    assert repr(module) == "KLDivergenceNormal(reduction='sum', free_bits=0.25)"
    assert module.state_dict() == {}


def test_settings_are_validated_at_construction():
    with pytest.raises(ValueError, match=r"Argument reduction should be one of .* but given 'avg'"):
        KLDivergenceNormal(reduction="avg")
    with pytest.raises(ValueError, match=r"Argument free_bits should be a finite number >= 0"):
        KLDivergenceNormal(free_bits=-1.0)
    with pytest.raises(ValueError, match=r"Argument free_bits should be 0 with reduction='none'"):
        KLDivergenceNormal(reduction="none", free_bits=0.1)


@pytest.mark.slow
def test_compiled_equals_eager():
    torch._dynamo.reset()
    module = KLDivergenceNormal(free_bits=0.05)
    compiled = torch.compile(module, fullgraph=True)
    mu = torch.randn(32, 16, requires_grad=True)
    log_var = (0.1 * torch.randn(32, 16)).requires_grad_()
    eager = module(mu, log_var)
    got = compiled(mu, log_var)
    torch.testing.assert_close(got, eager)
    grads = torch.autograd.grad(got, (mu, log_var))
    torch.testing.assert_close(grads, torch.autograd.grad(eager, (mu, log_var)))
    none = torch.compile(KLDivergenceNormal(reduction="none"), fullgraph=True)
    tiny = torch.full((4, 4), 1e-6)  # where exp(x) - 1 would go negative
    assert (none(torch.zeros(4, 4), tiny) >= 0).all()
