"""The checks that VAELoss and BetaTCVAELoss share: their weights are validated buffers, read
by a compiled step rather than compiled into it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounter

from vaekit import GaussianReparam, GaussianSample


def assert_one_compile_for_every_weight(
    loss_fn: nn.Module,
    forward: Callable[[GaussianSample], Any],
    reference: Callable[..., Any],
    steps: Sequence[Mapping[str, float]],
) -> None:
    """Compile a step that encodes, samples and calls ``forward`` (which calls ``loss_fn``),
    then set ``loss_fn``'s weights anew before each call: one frame is compiled, and each call
    returns ``reference(sample, **weights)``.

    A Python-float weight would compile twice (specialised, then dynamic); a buffer once.
    """
    torch._dynamo.reset()
    torch.manual_seed(0)
    reparam = GaussianReparam(8, 4)
    h = torch.randn(6, 8)
    counter = CompileCounter()
    compiled = torch.compile(lambda h: forward(reparam(h)), backend=counter, fullgraph=True)
    for i, weights in enumerate(steps):
        for name, value in weights.items():
            setattr(loss_fn, name, value)
        torch.manual_seed(i)  # the same noise for the compiled and the eager sample
        got = compiled(h)
        torch.manual_seed(i)
        want = reference(reparam(h), **weights)
        torch.testing.assert_close(tuple(got), tuple(want))  # the weights are read
    assert counter.frame_count == 1


def assert_setter_refuses_bad_weights(loss_fn: nn.Module, name: str, kept: float) -> None:
    """Each value the setter of weight ``name`` refuses, by name; the weight keeps ``kept``."""
    for bad in (-1.0, math.nan, math.inf, torch.tensor(-1.0), torch.tensor(math.nan)):
        with pytest.raises(ValueError, match=rf"Argument {name} should be a finite number >= 0"):
            setattr(loss_fn, name, bad)
    with pytest.raises(TypeError, match=rf"Argument {name} should be a float or a tensor"):
        setattr(loss_fn, name, "0.5")
    with pytest.raises(ValueError, match=rf"Argument {name} should be a one-element tensor"):
        setattr(loss_fn, name, torch.ones(3))
    assert getattr(loss_fn, name).item() == kept
