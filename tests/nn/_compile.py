"""The compile check that VAELoss and BetaTCVAELoss share: weights read, not compiled in."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
