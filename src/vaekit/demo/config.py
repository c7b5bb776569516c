"""The demo's settings, and the beta schedule or controller each ``--schedule`` name builds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vaekit.schedules import (
    GECO,
    Constant,
    Controller,
    Cyclical,
    LinearWarmup,
    Logistic,
    PIController,
    Schedule,
)

__all__ = ["LOSSES", "SCHEDULES", "DemoConfig", "build_beta"]

SCHEDULES = ("constant", "linear", "cyclical", "logistic", "pi", "geco")
LOSSES = ("vae", "tcvae")


@dataclass(frozen=True)
class DemoConfig:
    """Everything that determines a run; a resumed run must be given the same values."""

    epochs: int = 30
    batch_size: int = 64
    latent_dim: int = 8
    beta: float = 1.0
    free_bits: float = 0.0
    recon: str = "bce_with_logits"
    recon_var: str | None = None
    target_kl: float = 12.0
    recon_goal: float = 18.0
    lr: float = 1e-3
    seed: int = 0
    data: str | None = None
    nproc_per_node: int = 1
    test_fraction: float = 0.1
    iw_samples: int = 256
    num_bins: int = 17
    loss: str = "vae"
    tc_beta: float = 6.0

    @property
    def final_beta(self) -> float:
        """Where the schedule ends: ``beta``, or for ``loss="tcvae"`` the TC weight ``tc_beta``."""
        return self.tc_beta if self.loss == "tcvae" else self.beta

    def to_dict(self) -> dict[str, object]:
        """The settings as a plain dict (what ``config.json`` stores)."""
        return dataclasses.asdict(self)


def build_beta(name: str, config: DemoConfig, total_steps: int) -> Schedule | Controller:
    """The schedule (a callable of the step) or controller that ``--schedule name`` trains with.

    It drives the KL weight of ``loss="vae"``, and the total-correlation weight of
    ``loss="tcvae"`` (whose mutual information and dimension-wise KL keep weight 1). Schedules
    end at ``config.final_beta`` (``beta``, or ``tc_beta`` for ``"tcvae"``): a linear warm-up
    over the first quarter of training, a logistic ramp centred there, and Fu et al.'s four
    cycles, each ramping over its first half. ``pi`` holds the KL at ``target_kl`` nats with
    the weight in [0, ``final_beta``]; ``geco`` holds the reconstruction term at
    ``recon_goal``, starting from ``final_beta``.

    Example:
        >>> from vaekit.demo.config import DemoConfig, build_beta
        >>> build_beta("linear", DemoConfig(beta=0.5), total_steps=400)
        LinearWarmup(warmup_steps=100, start=0.0, stop=0.5)
    """
    quarter, beta = max(1, total_steps // 4), config.final_beta
    if name == "constant":
        return Constant(beta)
    if name == "linear":
        return LinearWarmup(quarter, stop=beta)
    if name == "logistic":
        return Logistic(quarter, 10.0 / quarter, stop=beta)
    if name == "cyclical":
        return Cyclical(total_steps, n_cycles=4, ratio=0.5, stop=beta)
    if name == "pi":
        return PIController(config.target_kl, beta_max=beta)
    if name == "geco":
        return GECO(config.recon_goal, beta_init=beta)
    raise ValueError(
        f"Argument schedule should be one of {', '.join(SCHEDULES)}, but given {name!r}"
    )
