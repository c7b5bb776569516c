r"""Lightning callbacks that drive :math:`\beta` from a schedule or a feedback controller."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from vaekit._checks import (
    check_callable,
    check_instance,
    check_int,
    check_number,
    check_state_dict,
    check_target,
)
from vaekit._observation import entry_of, observation_to_float
from vaekit.schedules import Controller

__all__ = ["BetaController", "BetaScheduler"]

_INTERVALS = ("step", "epoch")
_STATE_KEYS = ["beta", "step"]


class _BetaCallback(pl.Callback):
    """What both callbacks share: the target, setting :math:`\\beta` on it, and logging."""

    def __init__(self, target: object | None, attr: str, log_name: str | None) -> None:
        check_target(target, attr)
        check_instance("log_name", log_name, (str, type(None)), "a str or None")
        self.target = target
        self.attr = attr
        self.log_name = log_name
        self._receiver = target  # where beta goes: target, or the LightningModule once set up

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint, made of the class, ``attr`` and
        ``log_name``, so that two callbacks that set different attributes keep their own."""
        return f"{type(self).__qualname__}{{'attr': {self.attr!r}, 'log_name': {self.log_name!r}}}"

    def _resolve(self, pl_module: pl.LightningModule) -> None:
        if self.target is not None:
            return
        if not hasattr(pl_module, self.attr):
            raise ValueError(
                f"Argument target is None, so the LightningModule should have an attribute "
                f"{self.attr!r}, but given {type(pl_module).__name__} without it"
            )
        self._receiver = pl_module

    def _publish(self, beta: float) -> None:
        if self._receiver is not None:
            setattr(self._receiver, self.attr, beta)

    def _log(self, pl_module: pl.LightningModule, beta: float, *, per_epoch: bool = False) -> None:
        if self.log_name is None:
            return
        if per_epoch:  # the same value on every rank: the reduction is exact
            pl_module.log(
                self.log_name, beta, on_step=False, on_epoch=True, batch_size=1, sync_dist=True
            )
        else:
            pl_module.log(self.log_name, beta, on_step=True, on_epoch=False)


class BetaScheduler(_BetaCallback):
    r"""Sets :math:`\beta` from a schedule before each optimizer step or each epoch.

    A :class:`lightning.pytorch.Callback` that sets ``target.<attr>`` (the ``LightningModule``
    itself when ``target`` is None) to ``schedule(k)``, with :math:`k = 0` first: before each
    training batch with ``interval="step"``, where :math:`k` is ``trainer.global_step``, the
    number of optimizer steps taken; before each epoch with ``interval="epoch"``, where
    :math:`k` is ``trainer.current_epoch``. Under gradient accumulation :math:`\beta` therefore
    holds over the batches of one optimizer step, and a change of ``accumulate_grad_batches``
    does not stretch the schedule. Every process computes the same :math:`k`, so every rank
    uses the same :math:`\beta`. At ``setup`` it sets ``schedule(k)`` for the trainer's current
    :math:`k` (or the value it last set), so the validation sanity check sees it too, and it
    logs each value under ``log_name`` with ``LightningModule.log``.

    ``state_dict()`` holds the step and value last set, as plain Python numbers, so the
    checkpoint loads with ``weights_only=True``; its key in the checkpoint (``state_key``)
    names ``attr`` and ``log_name``, so that schedulers of different attributes keep their own.
    When a run resumes with ``trainer.fit(..., ckpt_path=...)`` they set the target's
    :math:`\beta` again: a :class:`vaekit.VAELoss` keeps ``beta`` out of its own
    ``state_dict``, and a run resumed mid-epoch starts no epoch, so with ``interval="epoch"``
    this is the value the rest of the epoch trains with. With the ``global_step`` and
    ``current_epoch`` that Lightning restores, the resumed run continues the schedule exactly,
    from an end-of-epoch or a mid-epoch checkpoint.

    Args:
        schedule: a callable ``step -> float``, such as those of :mod:`vaekit.schedules`.
        target: an object whose attribute ``attr`` to set, such as a :class:`vaekit.VAELoss`;
            None for the ``LightningModule``.
        attr: the attribute of ``target``.
        interval: ``"step"`` | ``"epoch"``.
        log_name: the name to log :math:`\beta` under; None to log nothing.

    Raises:
        TypeError: if an argument is of the wrong type, or ``schedule`` returns something other
            than a number.
        ValueError: if ``interval`` is unknown, ``target`` (or, when it is None, the
            ``LightningModule``) has no attribute ``attr``, ``schedule`` returns a number that is
            not finite, or ``load_state_dict`` is given an invalid state.

    Example:
        >>> import lightning.pytorch as pl
        >>> import torch
        >>> from vaekit.lightning import BetaScheduler
        >>> from vaekit.schedules import LinearWarmup
        >>> class Model(pl.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layer, self.beta, self.seen = torch.nn.Linear(2, 1), 1.0, []
        ...     def training_step(self, batch, batch_idx):
        ...         self.seen.append(self.beta)
        ...         return self.layer(batch).square().mean()
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        >>> model, scheduler = Model(), BetaScheduler(LinearWarmup(4))
        >>> trainer = pl.Trainer(
        ...     accelerator="cpu", max_epochs=2, callbacks=[scheduler], logger=False,
        ...     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        ... )
        >>> trainer.fit(model, train_dataloaders=torch.ones(3, 4, 2))  # 3 batches of 4 rows
        >>> model.seen
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
        >>> scheduler.state_dict()
        {'step': 5, 'beta': 1.0}
    """

    def __init__(
        self,
        schedule: Callable[[int], float],
        *,
        target: object | None = None,
        attr: str = "beta",
        interval: str = "step",
        log_name: str | None = "beta",
    ) -> None:
        check_callable("schedule", schedule)
        check_instance("interval", interval, str, "a str")
        if interval not in _INTERVALS:
            raise ValueError(
                f"Argument interval should be 'step' or 'epoch', but given {interval!r}"
            )
        super().__init__(target, attr, log_name)
        self.schedule = schedule
        self.interval = interval
        self._step: int | None = None  # the step and value last set
        self._beta = math.nan

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Find the target, and set :math:`\\beta` on it: the value last set, if any."""
        self._resolve(pl_module)
        if self._step is None:
            self._set(self._k(trainer))
        else:
            self._publish(self._beta)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """With ``interval="epoch"``, set and log ``schedule(trainer.current_epoch)``."""
        if self.interval == "epoch":
            self._log(pl_module, self._set(trainer.current_epoch), per_epoch=True)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """With ``interval="step"``, set and log ``schedule(trainer.global_step)``."""
        if self.interval == "step":
            self._log(pl_module, self._set(trainer.global_step))

    def _k(self, trainer: pl.Trainer) -> int:
        return trainer.global_step if self.interval == "step" else trainer.current_epoch

    def _set(self, step: int) -> float:
        value = check_number(f"schedule({step})", self.schedule(step))  # any callable
        self._step, self._beta = step, float(value)
        self._publish(self._beta)
        return self._beta

    def state_dict(self) -> dict[str, Any]:
        """The step and :math:`\\beta` last set, as plain Python numbers; empty before the
        first."""
        if self._step is None:
            return {}
        return {"step": self._step, "beta": self._beta}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict`, and set its :math:`\\beta` on the
        target once known. A state that is refused leaves the callback unchanged.

        Raises:
            TypeError: if ``state_dict`` is not a mapping, or holds a value of the wrong type.
            ValueError: if its keys are not ``beta`` and ``step``, the step is negative or
                :math:`\\beta` is not finite.
        """
        if isinstance(state_dict, Mapping) and not state_dict:
            self._step, self._beta = None, math.nan
            return
        check_state_dict(state_dict, _STATE_KEYS)
        step = check_int("state_dict['step']", state_dict["step"])
        beta = check_number("state_dict['beta']", state_dict["beta"])
        self._step, self._beta = step, float(beta)
        self._publish(self._beta)


class BetaController(_BetaCallback):
    r"""Feeds a controller one observation per optimizer step and sets the :math:`\beta` it
    returns.

    A :class:`lightning.pytorch.Callback` that reads an observation from the output of each
    ``training_step`` (``outputs[monitor]`` for a str, ``monitor(outputs)`` for a callable; a
    number or a one-element tensor), and after each optimizer step feeds the controller the mean
    of the observations of that step's batches across all processes (through the trainer's
    strategy), then sets ``target.<attr>`` (the ``LightningModule`` when ``target`` is None) to
    the new :math:`\beta`. Every rank thus uses the same :math:`\beta`, and under gradient
    accumulation :math:`\beta` holds over the accumulated batches, which are fed as one step.
    A batch whose ``training_step`` returned None (Lightning skips it) feeds nothing. At
    ``setup`` it sets the controller's current :math:`\beta`; it logs the :math:`\beta` each
    batch trains with under ``log_name``.

    ``state_dict()`` is the controller's: plain Python numbers, restored by
    ``trainer.fit(..., ckpt_path=...)``, from a checkpoint that loads with ``weights_only=True``
    (under a ``state_key`` that names ``attr`` and ``log_name``, as the scheduler's does).
    A checkpoint is taken after an optimizer step (as Lightning's ``ModelCheckpoint`` does): the
    observations of a partly accumulated step are not part of it, nor are its gradients.

    Args:
        controller: a :class:`vaekit.schedules.Controller`.
        monitor: the entry of the ``training_step`` output to feed (a mapping's key or an
            attribute), or a callable that maps the output to the observation. GECO users
            return and monitor the reconstruction.
        target: an object whose attribute ``attr`` to set, such as a :class:`vaekit.VAELoss`;
            None for the ``LightningModule``.
        attr: the attribute of ``target``.
        log_name: the name to log :math:`\beta` under; None to log nothing.

    Raises:
        TypeError: if an argument is of the wrong type, or an observation is not a number or a
            tensor.
        ValueError: if ``target`` (or, when it is None, the ``LightningModule``) has no
            attribute ``attr``, the output has no entry ``monitor``, or an observation tensor has
            more than one element.

    Example:
        >>> import lightning.pytorch as pl
        >>> import torch
        >>> from vaekit.lightning import BetaController
        >>> from vaekit.schedules import PIController
        >>> class Model(pl.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layer, self.beta = torch.nn.Linear(2, 1), 1.0
        ...     def training_step(self, batch, batch_idx):
        ...         loss = self.layer(batch).square().mean()
        ...         return {"loss": loss, "kl": torch.tensor(0.5 + batch_idx / 2)}
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
        >>> model, controller = Model(), BetaController(PIController(target_kl=2.0))
        >>> trainer = pl.Trainer(
        ...     accelerator="cpu", max_epochs=1, callbacks=[controller], logger=False,
        ...     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        ... )
        >>> trainer.fit(model, train_dataloaders=torch.ones(2, 4, 2))  # KLs 0.5, then 1.0
        >>> round(model.beta, 10)
        0.0024394142
        >>> controller.state_dict()  # doctest: +ELLIPSIS
        {'beta': 0.00243941..., 'integral': -0.00025}
    """

    def __init__(
        self,
        controller: Controller,
        *,
        monitor: str | Callable[[Any], float | Tensor] = "kl",
        target: object | None = None,
        attr: str = "beta",
        log_name: str | None = "beta",
    ) -> None:
        check_instance("controller", controller, Controller, "a vaekit.schedules.Controller")
        if not (isinstance(monitor, str) or callable(monitor)):
            raise TypeError(
                f"Argument monitor should be a str or callable, but given {type(monitor).__name__}"
            )
        super().__init__(target, attr, log_name)
        self.controller = controller
        self.monitor = monitor
        self._step_started = 0  # trainer.global_step when the current batch started
        self._sum = 0.0  # of the observations since the last optimizer step
        self._count = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Find the target, and set the controller's current :math:`\\beta` on it."""
        self._resolve(pl_module)
        self._publish(self.controller.beta)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Log the :math:`\\beta` this batch trains with."""
        self._step_started = trainer.global_step
        self._log(pl_module, self.controller.beta)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Read this batch's observation; after an optimizer step, feed the controller and set
        the new :math:`\\beta`."""
        if not _skipped(outputs):
            self._sum += observation_to_float(self._observe(outputs))
            self._count += 1
        if trainer.global_step == self._step_started:
            return  # the gradients are still accumulating
        observed, count = self._sum, float(self._count)
        self._sum, self._count = 0.0, 0
        if trainer.world_size > 1:  # every rank steps, so every rank joins the reduction
            device = trainer.strategy.root_device
            total = torch.tensor([observed, count], dtype=torch.float64, device=device)
            observed, count = trainer.strategy.reduce(total, reduce_op="sum").tolist()
        if count > 0:
            self._publish(self.controller.update(observed / count))

    def _observe(self, outputs: Any) -> Any:
        if callable(self.monitor):
            return self.monitor(outputs)
        try:
            return entry_of(outputs, self.monitor)
        except LookupError:
            entries = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ValueError(
                "Argument monitor should name an entry of the training_step output, "
                f"but given {self.monitor!r} and an output with {entries}"
            ) from None

    def state_dict(self) -> dict[str, Any]:
        """The controller's state: plain Python numbers."""
        return self.controller.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the controller's state, and set its :math:`\\beta` on the target once known.

        Raises:
            TypeError: if ``state_dict`` is not a mapping or holds a value that is not a number.
            ValueError: if its keys are not those of the controller's ``state_dict``.
        """
        self.controller.load_state_dict(state_dict)
        self._publish(self.controller.beta)


def _skipped(outputs: Any) -> bool:
    """Whether ``training_step`` returned None: Lightning then passes None or an empty dict."""
    return outputs is None or (isinstance(outputs, Mapping) and len(outputs) == 0)
