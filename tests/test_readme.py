"""The README's quick start runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_trains_one_step():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    namespace: dict[str, object] = {}
    torch.manual_seed(0)
    exec(blocks[0], namespace)
    loss, recon, kl = namespace["loss"], namespace["recon"], namespace["kl"]
    assert isinstance(loss, torch.Tensor)
    torch.testing.assert_close(loss, recon + kl)  # beta = 1
    encoder = namespace["encoder"]
    assert isinstance(encoder, torch.nn.Module)
    assert all(p.grad is not None for p in encoder.parameters())
