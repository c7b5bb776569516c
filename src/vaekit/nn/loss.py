"""The VAE loss as a module, with a KL weight that schedules can drive."""

from __future__ import annotations

from torch import Tensor, nn

from vaekit._checks import check_free_bits, check_loss_reduction
from vaekit._reduction import Reduction, split
from vaekit.functional._recon import (
    DISCRETIZED,
    SCALED,
    ReconFn,
    check_recon,
    check_recon_settings,
    check_recon_var,
    check_takes_variance,
)
from vaekit.functional.loss import VAELossOutput, _vae_loss
from vaekit.nn._weights import _BUFFER, _short, _WeightedLoss, weight
from vaekit.nn.variance import LearnedVariance

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
        recon: ``"mse"`` | ``"l1"`` | ``"bce"`` | ``"bce_with_logits"`` | ``"gaussian"`` |
            ``"discretized_gaussian"`` | ``"discretized_logistic"``, or a callable
            ``(x_hat, x) -> Tensor`` returning one loss per element of ``x``.
        beta: weight of the KL term, ``>= 0``.
        reduction: ``"batchmean"`` (default: the negative ELBO per data point) | ``"mean"`` |
            ``"sum"``, or an explicit ``(recon, kl)`` pair to port code that mixes them.
        free_bits: nats per latent element, passed to the KL.
        capacity: target KL of the capacity objective ``recon + beta * |kl - capacity|``, in
            the units of the KL's reduction; ``None`` (default) for the plain objective.
        recon_var: the variance of ``"gaussian"`` and the discretized likelihoods: a number
            ``> 0``, ``"optimal"`` or ``"optimal_channel"`` (the batch optimum of a calibrated
            decoder), or a :class:`vaekit.nn.LearnedVariance`, which becomes a child module;
            ``None`` means 1.
        min_log_sigma: the soft clip of the optimal variance's log standard deviation, or
            ``None`` (a :class:`~vaekit.nn.LearnedVariance` clips its own).
        num_bins: the grid size of the discretized likelihoods.
        data_range: ``(lo, hi)``, the first and last grid values.
        sync_dist: compute the optimal variance over every process of
            :mod:`torch.distributed`.

    Raises:
        TypeError: if a setting is of the wrong type.
        ValueError: if ``recon`` or ``reduction`` is unknown, a number is out of range or not
            finite, ``recon_var`` is given to a ``recon`` without a variance, or
            ``sync_dist`` is set without an optimal variance.

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
        >>> loss_fn(x_hat, x, mu, log_var)  # the loss and its two terms
        VAELossOutput(loss=tensor(1.5733), recon=tensor(1.2500), kl=tensor(0.6465))
        >>> decoded = x_hat.clone().requires_grad_()
        >>> loss, recon, kl = loss_fn(decoded, x, mu, log_var)  # unpack, then backward the loss
        >>> loss.backward()
        >>> loss_fn.beta = 2.0  # a schedule's step: no new tensor, nothing in state_dict
        >>> loss_fn(x_hat, x, mu, log_var).loss, loss_fn.state_dict()
        (tensor(2.5431), OrderedDict())
        >>> loss_fn
        VAELoss(recon='mse', reduction='batchmean', beta=2.0, free_bits=0.0, capacity=None)
        >>> sigma_vae = VAELoss("gaussian", recon_var="optimal")  # a calibrated decoder
        >>> sigma_vae(x_hat, x, mu, log_var).recon  # (D / 2) (1 + log(2 pi MSE)), D = 2
        tensor(2.3679)
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
        recon_var: float | str | LearnedVariance | None = None,
        min_log_sigma: float | None = -6.0,
        num_bins: int = 256,
        data_range: tuple[float, float] = (0.0, 1.0),
        sync_dist: bool = False,
    ) -> None:
        super().__init__()
        self.recon = check_recon(recon)
        self.reduction = check_loss_reduction(reduction)
        self._recon_reduction, self._kl_reduction = split(self.reduction)
        self.free_bits = check_free_bits(free_bits, self._kl_reduction)
        self.recon_var: float | str | LearnedVariance = _check_recon_var(recon_var, self.recon)
        self._recon = check_recon_settings(
            self.recon,
            self.recon_var,
            min_log_sigma=min_log_sigma,
            num_bins=num_bins,
            data_range=data_range,
            sync_dist=sync_dist,
        )
        self._add_weight("beta", beta)
        self._add_weight("capacity", capacity, optional=True)

    beta = weight("beta", "Weight of the KL term, " + _BUFFER)

    @property
    def capacity(self) -> Tensor | None:
        """Target KL of the capacity objective, a 0-dimensional buffer, or ``None``."""
        return self._capacity

    @capacity.setter
    def capacity(self, value: float | Tensor | None) -> None:
        self._set_weight("capacity", value)

    def forward(self, x_hat: Tensor, x: Tensor, mu: Tensor, log_var: Tensor) -> VAELossOutput:
        """Return ``(loss, recon, kl)`` of the reconstruction ``x_hat`` of ``x`` and the
        posterior ``(mu, log_var)``, with the current ``beta`` and ``capacity``."""
        return _vae_loss(
            x_hat,
            x,
            mu,
            log_var,
            recon=self._recon,
            beta=self._beta,
            recon_reduction=self._recon_reduction,
            kl_reduction=self._kl_reduction,
            free_bits=self.free_bits,
            capacity=self._capacity,
            recon_var=self.recon_var() if isinstance(self.recon_var, nn.Module) else self.recon_var,
        )

    def extra_repr(self) -> str:
        recon = self.recon
        if not isinstance(recon, str):
            recon = getattr(recon, "__name__", type(recon).__name__)
        text = (
            f"recon={recon!r}, reduction={self.reduction!r}, beta={_short(self._beta)}, "
            f"free_bits={self.free_bits}, capacity={_short(self._capacity)}"
        )
        if recon in SCALED and not isinstance(self.recon_var, nn.Module):
            text += f", recon_var={self.recon_var!r}"
        if recon in SCALED:
            text += f", min_log_sigma={self._recon.min_log_sigma}"
        if recon in DISCRETIZED:
            text += f", num_bins={self._recon.num_bins}, data_range={self._recon.data_range}"
        return text + (", sync_dist=True" if self._recon.sync_dist else "")


def _check_recon_var(value: object, recon: str | ReconFn) -> float | str | LearnedVariance:
    if isinstance(value, LearnedVariance):
        check_takes_variance(value, recon)
        return value
    if isinstance(value, (Tensor, nn.Module)):
        hint = " (pass a tensor to vaekit.functional.vae_loss)" if isinstance(value, Tensor) else ""
        raise TypeError(
            "Argument recon_var should be a number, 'optimal', 'optimal_channel' or a "
            f"vaekit.nn.LearnedVariance{hint}, but given {type(value).__name__}"
        )
    checked = check_recon_var(value, recon)
    assert not isinstance(checked, Tensor)
    return checked
