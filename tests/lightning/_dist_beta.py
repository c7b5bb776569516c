"""Two gloo processes on the loopback, each with a BetaController fed a different KL and a
per-epoch BetaScheduler, under Lightning's ``ddp`` strategy.

Run as two ranks by tests/lightning/test_beta.py (tests/_distributed.py): with ``LOCAL_RANK``
set, Lightning joins the processes it is given rather than starting its own. Each rank saves the
beta and gamma its training steps saw, and the final beta, to ``OUT_DIR/rank<r>.pt``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch

VALUES = [0.0, 0.5, -0.25, 1.0]  # exact in float32
EPOCHS = 2


def schedule(epoch: int) -> float:
    from vaekit.schedules import LinearWarmup

    return LinearWarmup(EPOCHS, start=0.2, stop=0.6)(epoch)


def make_controller() -> Any:
    from vaekit.schedules import PIController

    return PIController(2.0, kp=0.5, ki=0.05)


def _main(out_dir: str) -> None:
    from tests.lightning._lit import Loader, Model, make_trainer
    from vaekit.lightning import BetaController, BetaScheduler

    class Recording(Model):
        def __init__(self) -> None:
            super().__init__()
            self.gamma = -1.0
            self.seen_gamma: list[float] = []

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.rank = self.trainer.global_rank
            self.seen_gamma.append(self.gamma)
            return super().training_step(batch, batch_idx)

    model = Recording()
    callbacks = [
        BetaController(make_controller()),
        BetaScheduler(schedule, attr="gamma", interval="epoch", log_name="gamma"),
    ]
    trainer = make_trainer(
        Path(out_dir), devices=2, strategy="ddp", max_epochs=EPOCHS, callbacks=callbacks
    )
    trainer.fit(model, train_dataloaders=Loader(VALUES))
    record = {"beta": [*model.seen, model.beta], "gamma": model.seen_gamma}
    torch.save(record, Path(out_dir) / f"rank{trainer.global_rank}.pt")
    # Tear gloo down before exit: a process group left to the interpreter's shutdown can abort
    # in its threads' destructors ("terminate called without an active exception").
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    # As under pytest: a warning is an error, but for the deprecations pyproject.toml ignores.
    warnings.simplefilter("error")
    for message, category in [
        (r"`torch\.jit\.\w+` is deprecated", DeprecationWarning),
        (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
        (r"GPU available but not used", UserWarning),
        (r"pkg_resources is deprecated as an API", UserWarning),
        (r"Deprecated call to `pkg_resources\.declare_namespace", DeprecationWarning),
    ]:
        warnings.filterwarnings("ignore", message=message, category=category)
    _main(sys.argv[1])
