"""Pure tensor functions: the maths and the input checks of every vaekit component."""

from vaekit.functional.kl import kl_divergence_normal
from vaekit.functional.reparam import reparameterize

__all__ = ["kl_divergence_normal", "reparameterize"]
