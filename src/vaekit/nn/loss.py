"""The VAE loss as a module, with a KL weight that schedules can drive."""

from __future__ import annotations

from torch import Tensor

from vaekit._checks import check_free_bits, check_loss_reduction
from vaekit._reduction import Reduction, split
from vaekit.functional.loss import (
    ReconFn,
    VAELossOutput,
    _vae_loss,
    check_recon,
    check_recon_var,
)
from vaekit.nn._weights import _short, _WeightedLoss

__all__ = ["VAELoss"]


class VAELoss(_WeightedLoss):
    r"""The negative ELBO of a VAE, ``recon + beta * kl``, with both terms reduced alike.

    Holds its settings and calls :func:`vaekit.functional.vae_loss`, whose docstring has the
    formulas, the reconstruction losses and the meaning of each reduction.

    ``beta`` and ``capacity`` can be set at any time (``loss_fn.beta = 0.3``, a number or a
    one-element tensor) by a schedule or a controller. Each lives in a 0-dimensional buffer
    that is written in place, so that it follows ``.to(device)``, a ``torch.compile``\ d step
    reads it as a graph input rather than baking in a constant (changing it every step does
    not recompile), and it stays out of ``state_dict`` (the schedule that sets it owns that
    state). Reading either gives that buffer. A tensor being set is validated only when it is
    on the CPU: reading an accelerator tensor back would force a device sync.

    Args:
        recon: ``"mse"`` | ``"l1"`` | ``"bce"`` | ``"bce_with_logits"`` | ``"gaussian"``, or a
            callable ``(x_hat, x) -> Tensor`` returning one loss per element of ``x``.
        beta: weight of the KL term, ``>= 0``.
        reduction: ``"batchmean"`` (default: the negative ELBO per data point) | ``"mean"`` |
            ``"sum"``, or an explicit ``(recon, kl)`` pair to port code that mixes them.
        free_bits: nats per latent element, passed to the KL.
        capacity: target KL of the capacity objective ``recon + beta * |kl - capacity|``, in
            the units of the KL's reduction; ``None`` (default) for the plain objective.
        recon_var: the variance of ``"gaussian"``, a number ``> 0``; ``None`` means 1.

    Raises:
        TypeError: if a setting is of the wrong type.
        ValueError: if ``recon`` or ``reduction`` is unknown, a number is out of range or not
            finite, or ``recon_var`` is given to a non-Gaussian ``recon``.

    Shape:
        - x_hat, x: :math:`(B, *)`.
        - mu, log_var: :math:`(B, *)`, the posterior mean and log-variance.
        - Output: :class:`vaekit.VAELossOutput` ``(loss, recon, kl)`` of scalars.

    Example:
        >>> import torch
        >>> from vaekit import VAELoss
        >>> loss_fn = VAELoss(beta=0.5)
        >>> x = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 4.0]]]])
        >>> x_hat = torch.tensor([[[[1.5, 2.5]]], [[[2.0, 5.0]]]])
        >>> mu = torch.tensor([[0.0, 1.0], [0.5, -0.5]])
        >>> log_var = torch.tensor([[0.0, 0.0], [-1.0, 1.0]])
        >>> loss_fn(x_hat, x, mu, log_var)
        VAELossOutput(loss=tensor(1.5733), recon=tensor(1.2500), kl=tensor(0.6465))
        >>> loss_fn.beta = 2.0  # a schedule's step: no new tensor, nothing in state_dict
        >>> loss_fn(x_hat, x, mu, log_var).loss, loss_fn.state_dict()
        (tensor(2.5431), OrderedDict())
        >>> loss_fn
        VAELoss(recon='mse', reduction='batchmean', beta=2.0, free_bits=0.0, capacity=None)
    """

    _functional = "vaekit.functional.vae_loss"
    _beta: Tensor
    _capacity: Tensor | None

    def __init__(
        self,
        recon: str | ReconFn = "mse",
        *,
        beta: float | Tensor = 1.0,
        reduction: Reduction = "batchmean",
        free_bits: float = 0.0,
        capacity: float | Tensor | None = None,
        recon_var: float | None = None,
    ) -> None:
        super().__init__()
        self.recon = check_recon(recon)
        self.reduction = check_loss_reduction(reduction)
        self._recon_reduction, self._kl_reduction = split(self.reduction)
        self.free_bits = check_free_bits(free_bits, self._kl_reduction)
        if isinstance(recon_var, Tensor):
            raise TypeError(
                "Argument recon_var should be a float (use vaekit.functional.vae_loss for a "
                "tensor), but given Tensor"
            )
        self.recon_var = check_recon_var(recon_var, recon)
        self._add_weight("beta", beta)
        self._add_weight("capacity", capacity, optional=True)

    @property
    def beta(self) -> Tensor:
        """Weight of the KL term: a 0-dimensional buffer, set with a number or a tensor."""
        return self._beta

    @beta.setter
    def beta(self, value: float | Tensor) -> None:
        self._set_weight("beta", value)

    @property
    def capacity(self) -> Tensor | None:
        """Target KL of the capacity objective: a 0-dimensional buffer, or ``None``."""
        return self._capacity

    @capacity.setter
    def capacity(self, value: float | Tensor | None) -> None:
        self._set_weight("capacity", value)

    def forward(self, x_hat: Tensor, x: Tensor, mu: Tensor, log_var: Tensor) -> VAELossOutput:
        return _vae_loss(
            x_hat,
            x,
            mu,
            log_var,
            recon=self.recon,
            beta=self._beta,
            recon_reduction=self._recon_reduction,
            kl_reduction=self._kl_reduction,
            free_bits=self.free_bits,
            capacity=self._capacity,
            recon_var=self.recon_var,
        )

    def extra_repr(self) -> str:
        recon = self.recon
        if not isinstance(recon, str):
            recon = getattr(recon, "__name__", type(recon).__name__)
        return (
            f"recon={recon!r}, reduction={self.reduction!r}, beta={_short(self._beta)}, "
            f"free_bits={self.free_bits}, capacity={_short(self._capacity)}"
        )
