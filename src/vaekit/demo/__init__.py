"""``vaekit-demo`` (extra ``demo``): train a VAE on real data with every vaekit component.

Run it as ``vaekit-demo`` or ``python -m vaekit.demo``; ``vaekit-demo --help`` lists the options.
"""

import vaekit.handlers
import vaekit.metrics  # noqa: F401

try:
    import matplotlib  # noqa: F401
    import numpy  # noqa: F401
    import sklearn  # noqa: F401
    import tqdm  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"vaekit-demo needs {err.name}: pip install 'vaekit[demo]'") from err

__all__: list[str] = []
