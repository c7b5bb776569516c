"""PyTorch-Ignite handlers (extra ``ignite``): beta schedulers and controllers, and the bridge that
attaches torchmetrics metrics to an engine."""

import warnings

try:
    with warnings.catch_warnings():
        # ignite's import chain calls torch.jit.script and torch.jit.interface, deprecated in torch.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        import ignite  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("vaekit.handlers needs PyTorch-Ignite: pip install 'vaekit[ignite]'") from err

from vaekit.handlers.beta import BetaController, BetaScheduler
from vaekit.handlers.metrics import TorchMetricsAdapter

__all__ = ["BetaController", "BetaScheduler", "TorchMetricsAdapter"]
