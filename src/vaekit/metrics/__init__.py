"""torchmetrics metrics (extra ``metrics``): loss balance and posterior-collapse monitors, and
the importance-weighted test NLL."""

try:
    import torchmetrics  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("vaekit.metrics needs torchmetrics: pip install 'vaekit[metrics]'") from err

from vaekit.metrics.active_units import ActiveUnits
from vaekit.metrics.aggregate_posterior import AggregatePosterior
from vaekit.metrics.importance_weighted_nll import ImportanceWeightedNLL
from vaekit.metrics.kl_per_dimension import KLPerDimension
from vaekit.metrics.recon_kl_ratio import ReconKLRatio

__all__ = [
    "ActiveUnits",
    "AggregatePosterior",
    "ImportanceWeightedNLL",
    "KLPerDimension",
    "ReconKLRatio",
]
