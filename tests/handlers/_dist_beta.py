"""Two gloo processes on the loopback drive one BetaController each with different KLs.

Run as two ranks by tests/handlers/test_beta.py (tests/_distributed.py). Each rank saves the
beta its process function saw at every iteration, then the final beta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests._distributed import rank_main

ITERATIONS = 12


def rank_kl(rank: int, iteration: int, beta: float) -> float:
    """The KL rank ``rank`` reports: it depends on beta, so the feedback loop matters."""
    return 3.0 + 2.0 * rank + 0.1 * iteration - 5.0 * beta


def make_controller() -> Any:
    from vaekit.schedules import PIController

    return PIController(2.0, kp=0.5, ki=0.05)


def _run(out: Path) -> list[float]:
    import ignite.distributed as idist
    from ignite.engine import Engine

    from vaekit.handlers import BetaController

    rank = idist.get_rank()
    seen: list[float] = []

    def step(engine: Engine, batch: object) -> dict[str, float]:
        seen.append(engine.state.beta)
        return {"kl": rank_kl(rank, engine.state.iteration, engine.state.beta)}

    trainer = Engine(step)
    BetaController(make_controller()).attach(trainer)
    trainer.run(range(ITERATIONS), max_epochs=1)
    return [*seen, trainer.state.beta]


if __name__ == "__main__":
    rank_main(_run)
