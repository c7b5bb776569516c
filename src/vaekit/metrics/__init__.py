"""torchmetrics metrics (extra ``metrics``): loss balance and posterior-collapse monitors."""

try:
    import torchmetrics  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("vaekit.metrics needs torchmetrics: pip install 'vaekit[metrics]'") from err

__all__: list[str] = []
