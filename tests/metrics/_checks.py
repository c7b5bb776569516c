"""The checks of ``update(mu, log_var)`` that every metric of a posterior shares."""

from __future__ import annotations

import pytest
import torch
from torchmetrics import Metric


def assert_posterior_updates_are_checked(metric: Metric) -> None:
    """Each refused ``update(mu, log_var)`` names the argument and the shapes; the last one
    follows an update of latent shape (3,), which a (2, 1) batch would broadcast into."""
    with pytest.raises(
        TypeError, match=r"Argument mu should be a torch\.Tensor, but given NoneType"
    ):
        metric.update(None, torch.zeros(2, 3))
    with pytest.raises(
        ValueError,
        match=r"Arguments mu and log_var should have the same shape, "
        r"but given mu.shape=\(2, 3\) and log_var.shape=\(2, 4\)",
    ):
        metric.update(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"Argument mu should have a batch dimension"):
        metric.update(torch.tensor(0.0), torch.tensor(0.0))
    metric.update(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(
        ValueError,
        match=r"Argument mu should have shape \(B, 3\) like the earlier updates, "
        r"but given mu.shape=\(2, 1\)",
    ):
        metric.update(torch.zeros(2, 1), torch.zeros(2, 1))
