"""PyTorch-Ignite handlers (extra ``ignite``): beta schedulers and controllers, and the bridge that
attaches torchmetrics metrics to an engine."""

try:
    import ignite  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("vaekit.handlers needs PyTorch-Ignite: pip install 'vaekit[ignite]'") from err

__all__: list[str] = []
