"""A tiny LightningModule, a resumable loader and a quiet Trainer, shared by the Lightning tests
and their two-process script."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from vaekit import VAELoss


def rank_kl(value: float, beta: float, rank: int = 0) -> float:
    """The KL a batch of ``value`` reports: it falls as beta rises (as a VAE's does)."""
    return 4.0 + value + 2.0 * rank - 6.0 * beta


class Loader:
    """The batches in order, resumable mid-epoch: Lightning saves and restores this loader's
    ``state_dict`` (its ``_Stateful`` protocol), so a resumed epoch sees the batches that the
    interrupted one had left, and Lightning does not warn about an unresumable loader."""

    def __init__(self, values: list[float]) -> None:
        self.batches = [torch.full((2, 1), v) for v in values]
        self.yielded = 0  # batches of the current epoch already yielded
        self._skip = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Tensor]:
        skip, self._skip = self._skip, 0
        for i in range(skip, len(self.batches)):
            self.yielded = i + 1
            yield self.batches[i]

    def state_dict(self) -> dict[str, int]:
        return {"yielded": self.yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = state["yielded"]


class Model(pl.LightningModule):
    """Records the beta each training step sees, on the module (``beta``) and on its VAELoss,
    and reports the KL of :func:`rank_kl` for the beta of ``driven``."""

    def __init__(self, driven: str = "module", rank: int = 0) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.loss_fn = VAELoss()
        self.beta = -1.0
        self.driven = driven
        self.rank = rank
        self.seen: list[float] = []  # the driven beta at each training step
        self.steps: list[int] = []  # trainer.global_step at each training step

    def driven_beta(self) -> float:
        return self.beta if self.driven == "module" else float(self.loss_fn.beta)

    def training_step(self, batch: Tensor, batch_idx: int) -> Any:
        beta = self.driven_beta()
        self.seen.append(beta)
        self.steps.append(self.trainer.global_step)
        kl = rank_kl(float(batch[0, 0]), beta, self.rank)
        return {
            "loss": self.layer(batch).square().mean(),
            "kl": torch.tensor(kl, dtype=torch.float64),
            "recon": 10.0 - kl,
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def make_trainer(root: Path, **kwargs: Any) -> pl.Trainer:
    """A CPU Trainer that writes and prints nothing it is not asked to."""
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": root,
    }
    return pl.Trainer(**{**options, **kwargs})
