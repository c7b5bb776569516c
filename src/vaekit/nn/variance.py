"""A learned variance for a Gaussian decoder."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaekit._checks import check_number
from vaekit.functional._recon import check_min_log_sigma, soft_clip

__all__ = ["LearnedVariance"]


class LearnedVariance(nn.Module):
    r"""A learnable decoder variance :math:`\sigma^2`, held as :math:`\log\sigma`.

    .. math::
        \sigma^2 = \exp\big(2\,(m + \operatorname{softplus}(\log\sigma - m))\big)

    with the soft clip of Rybkin et al.'s (2021) reference code at :math:`m` =
    ``min_log_sigma`` (``None`` for none), so that :math:`\sigma \ge e^m` and the loss stays
    bounded below. Trained jointly with the decoder through ``recon="gaussian"`` (or a
    discretized likelihood), :math:`\log\sigma` tends to the log root-mean-square error, the
    batch optimum that ``recon_var="optimal"`` computes in closed form; a learned variance
    changes smoothly and can be saved and evaluated with.

    Give it to :class:`vaekit.VAELoss` as ``recon_var``: the loss registers it as a child, so
    that ``loss_fn.parameters()`` yields it (give those to the optimiser) and
    ``loss_fn.state_dict()`` holds it. With :func:`vaekit.functional.vae_loss`, pass its
    output: ``recon_var=variance()``.

    Args:
        shape: the shape of :math:`\log\sigma`, broadcastable to the data: ``()`` for one shared
            variance, ``(C, 1, 1)`` for one per channel of images ``(B, C, H, W)``.
        init_log_sigma: the starting value of the parameter :math:`\log\sigma` (before the
            clip).
        min_log_sigma: :math:`m`, or ``None`` for no clip.

    Raises:
        TypeError: if ``shape`` is not a sequence of ints or a number is of the wrong type.
        ValueError: if a size is negative or a number is not finite.

    Shape:
        - Output: ``shape``.

    Example:
        >>> import torch
        >>> from vaekit import VAELoss
        >>> from vaekit.nn import LearnedVariance
        >>> variance = LearnedVariance()
        >>> variance()  # exp(2 logaddexp(0, -6))
        tensor(1.0050, grad_fn=<ExpBackward0>)
        >>> loss_fn = VAELoss("gaussian", recon_var=variance)
        >>> [name for name, _ in loss_fn.named_parameters()]
        ['recon_var.log_sigma']
        >>> LearnedVariance((3, 1, 1), init_log_sigma=-1.0, min_log_sigma=None)().flatten()
        tensor([0.1353, 0.1353, 0.1353], grad_fn=<ViewBackward0>)
    """

    log_sigma: nn.Parameter

    def __init__(
        self,
        shape: Sequence[int] = (),
        *,
        init_log_sigma: float = 0.0,
        min_log_sigma: float | None = -6.0,
    ) -> None:
        super().__init__()
        size = _check_shape(shape)
        init = check_number("init_log_sigma", init_log_sigma)
        self.min_log_sigma = check_min_log_sigma(min_log_sigma)
        self.log_sigma = nn.Parameter(torch.full(size, init))

    def forward(self) -> Tensor:
        """Return the variance :math:`\\sigma^2`, after the clip."""
        return torch.exp(2 * soft_clip(self.log_sigma, self.min_log_sigma))

    def extra_repr(self) -> str:
        return f"shape={tuple(self.log_sigma.shape)}, min_log_sigma={self.min_log_sigma}"


def _check_shape(shape: object) -> tuple[int, ...]:
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(
            f"Argument shape should be a tuple of ints, but given {type(shape).__name__}"
        )
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral):
            raise TypeError(f"Argument shape should be a tuple of ints, but given {shape!r}")
        if size < 0:
            raise ValueError(
                f"Argument shape should be a tuple of non-negative ints, but given {shape!r}"
            )
    return tuple(int(s) for s in shape)
