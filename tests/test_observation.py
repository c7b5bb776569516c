"""Tests for vaekit._observation: how the Ignite and Lightning adapters read an observation."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
import torch

from vaekit import VAELoss
from vaekit._observation import entry_of, observation_to_float


def test_entry_of_a_mapping_or_an_attribute():
    loss_fn = VAELoss()
    out = loss_fn(torch.zeros(2, 3), torch.ones(2, 3), torch.ones(2, 4), torch.zeros(2, 4))
    assert entry_of(out, "kl") is out.kl
    assert entry_of({"kl": 2.0, "recon": 1.0}, "recon") == 1.0
    with pytest.raises(LookupError, match=r"^kl$"):
        entry_of({"recon": 1.0}, "kl")
    with pytest.raises(LookupError, match=r"^kl$"):
        entry_of(torch.tensor(1.0), "kl")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3.0),
        (2.5, 2.5),
        (np.float32(0.25), 0.25),
        (fractions.Fraction(1, 4), 0.25),
        (torch.tensor(1.5, dtype=torch.float64), 1.5),
        (torch.tensor([0.5], requires_grad=True), 0.5),
        (torch.tensor([[7]]), 7.0),
    ],
)
def test_observation_to_float(value, expected):
    result = observation_to_float(value)
    assert type(result) is float
    assert result == expected


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (True, TypeError, r"a number or a one-element tensor, but given bool"),
        ("1.0", TypeError, r"a number or a one-element tensor, but given str"),
        (None, TypeError, r"a number or a one-element tensor, but given NoneType"),
        (torch.ones(2), ValueError, r"one-element tensor, but given a tensor of shape \(2,\)"),
        (torch.ones(0), ValueError, r"one-element tensor, but given a tensor of shape \(0,\)"),
    ],
)
def test_observation_to_float_errors(value, error, match):
    with pytest.raises(error, match=match):
        observation_to_float(value)
