"""The aggregate posterior of the whole evaluation set: I(x; z) and the KLs of q(z)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from vaekit._checks import check_int
from vaekit.functional.monitors import (
    _aggregate_posterior_compute,
    _aggregate_posterior_update,
    _check_posteriors,
)
from vaekit.metrics._base import (
    SyncFn,
    _agree_latent_shape,
    _check_latent_shape,
    _merged_latent_shape,
    _SumStateMetric,
)

__all__ = ["AggregatePosterior"]

_STATES = ("mu", "log_var")


class AggregatePosterior(_SumStateMetric):
    r"""Mutual information :math:`I(x; z)` and the KL of the aggregate posterior, over all data.

    The aggregate posterior of :math:`N` data points is the mixture
    :math:`q(z) = \frac1N \sum_n q(z \mid x_n)`. Averaged over the data, the KL term of the
    ELBO splits into (Hoffman & Johnson, 2016, "ELBO surgery")

    .. math::
        \frac1N \sum_n \mathrm{KL}\big(q(z \mid x_n) \,\|\, p(z)\big)
        = \underbrace{I(x; z)}_{\texttt{"mi"}}
        + \underbrace{\mathrm{KL}\big(q(z) \,\|\, p(z)\big)}_{\texttt{"marginal\_kl"}},
        \qquad
        \mathrm{KL}\big(q(z) \,\|\, p(z)\big)
        = \underbrace{\mathrm{KL}\big(q(z) \,\|\, \textstyle\prod_d q_d(z_d)\big)}_{\texttt{"tc"}}
        + \underbrace{\textstyle\sum_d \mathrm{KL}\big(q_d(z_d) \,\|\, p(z_d)\big)}_{
            \texttt{"dim\_kl"}},

    with :math:`p = \mathcal N(0, I)` and every latent element a dimension :math:`d`. A
    collapsed model has :math:`I(x; z) = 0`: the code says nothing about the input, whatever
    its KL; He et al. (2019, "Lagging inference networks") track it to detect collapse. A large
    ``marginal_kl`` means the codes do not fill the prior, so samples drawn from the prior
    decode poorly.

    ``update(mu, log_var)`` keeps the posterior means and log-variances, shape
    ``(B, *latent)``, of the whole evaluation set, detached and in float64 (memory
    :math:`2 N D` numbers). ``compute()`` draws ``num_samples`` codes
    :math:`z_m \sim q(z \mid x_m)`, from posteriors taken in a random order (each once, then
    again while more codes are asked for than there are posteriors) by a CPU generator seeded
    with ``seed``, so that the result is reproducible and the same on every device; then it
    evaluates :math:`\log q(z_m) = \log \frac1N \sum_{n=1}^N q(z_m \mid x_n)` over **all**
    :math:`N` posteriors, and each :math:`\log q_d(z_{md})` alike, in float64 on the device of
    the states, in chunks of codes that hold at most :math:`2^{22}` (code, posterior,
    dimension) triples at a time: memory :math:`O(c \cdot N \cdot D)` for a chunk of
    :math:`c` codes, time :math:`O(\texttt{num\_samples} \cdot N \cdot D)`. It returns the
    scalars ``{"mi", "marginal_kl", "tc", "dim_kl"}`` (computed in float64, returned in the
    metric's dtype: float32 unless ``set_dtype`` says otherwise), Monte Carlo averages over the
    codes; ``mi + marginal_kl`` is the Monte Carlo KL term.

    Since :math:`q(z_m)` includes the code's own posterior with weight :math:`1/N`, each
    code's term of ``mi`` is at most :math:`\log N`: the estimate is capped at
    :math:`\log N`, not at the :math:`\log B` of an estimate over one batch of :math:`B`
    (a model that encodes more than :math:`\log B` nats reads as :math:`\log B` there).

    Across processes the posteriors are gathered in rank order (a process that has seen none
    takes part and adds none), so every process returns the result of one process holding the
    concatenated data. The result does not depend on how the data was batched; it depends on
    the order of the data only through which posteriors the seed picks. Before any update,
    torchmetrics warns and the values are NaN.

    Args:
        num_samples: the number of codes :math:`z_m` to average over, ``>= 1``.
        seed: seed of the generator that draws them, ``>= 0``.
        kwargs: torchmetrics' metric keyword arguments (``compute_on_cpu``,
            ``process_group``, ``sync_on_compute``, ...).

    Raises:
        TypeError: if ``num_samples`` or ``seed`` is not an int; at update, if ``mu`` or
            ``log_var`` is not a floating-point tensor.
        ValueError: if ``num_samples`` is below 1 or ``seed`` below 0; at update, if the shapes
            differ, have no batch dimension or a latent shape other than the earlier updates';
            at merge, if the incoming latent shape differs; at a distributed ``compute()``, on
            every process, if the processes' latent shapes differ.

    Example:
        >>> import torch
        >>> from vaekit.metrics import AggregatePosterior
        >>> g = torch.Generator().manual_seed(0)
        >>> metric = AggregatePosterior(num_samples=2000)
        >>> for _ in range(4):  # q(z | x) = N(0.8 x, 0.36), x ~ N(0, 1): q(z) = N(0, 1)
        ...     x = torch.randn(500, 2, generator=g)
        ...     metric.update(0.8 * x, torch.full((500, 2), 0.36).log())
        >>> {k: round(v.item(), 2) for k, v in metric.compute().items()}  # I = log(1 / 0.36)
        {'mi': 1.02, 'marginal_kl': 0.0, 'tc': 0.0, 'dim_kl': 0.0}
    """

    higher_is_better = None

    mu: list[Tensor] | Tensor
    log_var: list[Tensor] | Tensor

    def __init__(self, num_samples: int = 1000, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_samples = check_int("num_samples", num_samples, low=1)
        self.seed = check_int("seed", seed, low=0)
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._latent_shape: tuple[int, ...] | None = None
        self._placeholder = False  # whether sync lent the states an empty posterior

    def update(self, mu: Tensor, log_var: Tensor) -> None:
        """Add a batch of posterior means and log-variances of shape ``(B, *latent)``."""
        self._check(mu, log_var)
        mu, log_var = _aggregate_posterior_update(mu, log_var)
        self._latent_shape = tuple(mu.shape[1:])
        self._states("mu").append(mu)
        self._states("log_var").append(log_var)

    def _check(self, mu: Tensor, log_var: Tensor) -> None:
        _check_posteriors(mu, log_var)
        _check_latent_shape("mu", mu, self._shape)

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"mi", "marginal_kl", "tc", "dim_kl"}``, scalars in nats."""
        mu, log_var = (self._concatenated(name) for name in _STATES)
        terms = _aggregate_posterior_compute(mu, log_var, self.num_samples, self.seed)
        return {name: self._result(value) for name, value in terms.items()}

    def _states(self, name: str) -> list[Tensor]:
        state = getattr(self, name)
        assert isinstance(state, list)  # a tensor only while synced, inside compute()
        return state

    def _concatenated(self, name: str) -> Tensor:
        """The state as one tensor of shape ``(N, D)``: every latent element a column."""
        state: list[Tensor] | Tensor = getattr(self, name)
        if isinstance(state, list):
            if not state:
                return torch.zeros(0, 0, dtype=torch.float64, device=self.device)
            state = torch.cat(state)
        return state.reshape(state.shape[0], math.prod(state.shape[1:]))

    @property
    def _shape(self) -> tuple[int, ...] | None:
        """The latent shape of the updates so far, or of states loaded from a checkpoint (which
        carry the states but not this attribute)."""
        state = self.mu
        if self._latent_shape is None and isinstance(state, list) and state:
            return tuple(state[0].shape[1:])
        return self._latent_shape

    def _aligned(self, incoming_state: dict[str, Any] | Metric) -> dict[str, Any] | Metric:
        if isinstance(incoming_state, AggregatePosterior):
            theirs = incoming_state._shape
        elif isinstance(incoming_state, dict) and isinstance(incoming_state.get("mu"), list):
            items = incoming_state["mu"]
            theirs = tuple(items[0].shape[1:]) if items else None
        else:
            return incoming_state  # torchmetrics raises its own error
        self._latent_shape = _merged_latent_shape(self._shape, theirs)
        return incoming_state

    def sync(
        self,
        dist_sync_fn: SyncFn | None = None,
        process_group: Any | None = None,
        should_sync: bool = True,
        distributed_available: Callable[[], bool] | None = None,
    ) -> None:
        """Gather the posteriors of every process, in rank order, as torchmetrics' ``sync``.

        A process that has seen no posterior first takes an empty one of the shape the
        processes agree on: torchmetrics would gather a 1-dimensional empty tensor for it,
        which meets the ``(B, *latent)`` tensors of the others in mismatched collectives.

        Args:
            dist_sync_fn: the all-gather, ``process_group`` the group, ``should_sync`` and
                ``distributed_available`` whether to sync: as torchmetrics' ``sync``.
            process_group: see ``dist_sync_fn``.
            should_sync: see ``dist_sync_fn``.
            distributed_available: see ``dist_sync_fn``.

        Example:
            >>> import torch
            >>> from vaekit.metrics import AggregatePosterior
            >>> metric = AggregatePosterior()
            >>> metric.update(torch.zeros(2, 3), torch.zeros(2, 3))
            >>> metric.sync()  # one process: nothing to do
            >>> len(metric.mu)
            1
        """
        available = distributed_available or self.distributed_available_fn
        if should_sync and callable(available) and available():
            gather = dist_sync_fn or gather_all_tensors
            group = process_group or self.process_group
            agreed = _agree_latent_shape(self._shape, gather, group, self.device)
            if agreed is not None and not self._states("mu"):
                empty = torch.zeros((0, *agreed[0]), dtype=torch.float64, device=self.device)
                for name in _STATES:
                    setattr(self, name, [empty])
                self._placeholder = True
        super().sync(dist_sync_fn, process_group, should_sync, distributed_available)

    def unsync(self, should_unsync: bool = True) -> None:
        """Restore the local posteriors after a ``sync``, as torchmetrics' ``unsync``; the empty
        posterior that ``sync`` lent a process that had none is taken back.

        Args:
            should_unsync: whether to restore at all.
        """
        super().unsync(should_unsync)
        if should_unsync and self._placeholder:
            for name in _STATES:
                setattr(self, name, [])
            self._placeholder = False
