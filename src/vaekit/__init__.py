"""vaekit: plug-in training components for variational autoencoders in PyTorch.

The core needs only torch. :mod:`vaekit.metrics` needs the ``metrics`` extra (torchmetrics),
:mod:`vaekit.handlers` the ``ignite`` extra (pytorch-ignite), :mod:`vaekit.lightning` the
``lightning`` extra (Lightning), and ``vaekit-demo`` the ``demo`` extra; importing
:mod:`vaekit` imports none of them.
"""

from vaekit import functional, schedules
from vaekit.functional.decomposition import BetaTCVAELossOutput
from vaekit.functional.loss import VAELossOutput, convert_beta
from vaekit.nn import (
    BetaTCVAELoss,
    GaussianReparam,
    GaussianSample,
    KLDivergenceNormal,
    LearnedVariance,
    VAELoss,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "BetaTCVAELoss",
    "BetaTCVAELossOutput",
    "GaussianReparam",
    "GaussianSample",
    "KLDivergenceNormal",
    "LearnedVariance",
    "VAELoss",
    "VAELossOutput",
    "__version__",
    "convert_beta",
    "functional",
    "schedules",
]
