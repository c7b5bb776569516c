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

__all__ = ["SCHEDULES", "DemoConfig", "build_beta"]

SCHEDULES = ("constant", "linear", "cyclical", "logistic", "pi", "geco")


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

    def to_dict(self) -> dict[str, object]:
        """The settings as a plain dict (what ``config.json`` stores)."""
        return dataclasses.asdict(self)


def build_beta(name: str, config: DemoConfig, total_steps: int) -> Schedule | Controller:
    """The schedule (a callable of the step) or controller that ``--schedule name`` trains with.

    Schedules end at ``config.beta``: a linear warm-up over the first quarter of training, a
    logistic ramp centred there, and Fu et al.'s four cycles, each ramping over its first half.
    ``pi`` holds the KL at ``target_kl`` nats with beta in [0, ``beta``]; ``geco`` holds the
    reconstruction term at ``recon_goal``, starting from ``beta``.

    Example:
        >>> from vaekit.demo.config import DemoConfig, build_beta
        >>> build_beta("linear", DemoConfig(beta=0.5), total_steps=400)
        LinearWarmup(warmup_steps=100, start=0.0, stop=0.5)
    """
    quarter = max(1, total_steps // 4)
    if name == "constant":
        return Constant(config.beta)
    if name == "linear":
        return LinearWarmup(quarter, stop=config.beta)
    if name == "logistic":
        return Logistic(quarter, 10.0 / quarter, stop=config.beta)
    if name == "cyclical":
        return Cyclical(total_steps, n_cycles=4, ratio=0.5, stop=config.beta)
    if name == "pi":
        return PIController(config.target_kl, beta_max=config.beta)
    if name == "geco":
        return GECO(config.recon_goal, beta_init=config.beta)
    raise ValueError(
        f"Argument schedule should be one of {', '.join(SCHEDULES)}, but given {name!r}"
    )
