"""Lightning callbacks (extra ``lightning``): beta schedulers and controllers for a Trainer."""

try:
    import lightning.pytorch  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("vaekit.lightning needs Lightning: pip install 'vaekit[lightning]'") from err

from vaekit.lightning.beta import BetaController, BetaScheduler

__all__ = ["BetaController", "BetaScheduler"]
