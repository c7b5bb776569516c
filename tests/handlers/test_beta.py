"""Tests for vaekit.handlers.beta: Ignite engines, Checkpoint round trips, two gloo processes."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, NamedTuple

# isort: off
# First: the import guard of vaekit.handlers silences torch's jit deprecations raised by ignite.
import vaekit.handlers  # noqa: F401
# isort: on

import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from ignite.handlers.state_param_scheduler import LambdaStateScheduler
from torch import Tensor, nn

from tests._beta import assert_controller_arguments_are_checked
from tests._distributed import spawn_ranks
from tests.handlers import _dist_beta
from vaekit import VAELoss
from vaekit.handlers import BetaController, BetaScheduler
from vaekit.schedules import GECO, Cyclical, LinearWarmup, PIController

ROOT = Path(__file__).resolve().parents[2]


class Weighted(nn.Module):
    """A stand-in loss whose beta is a property over a non-persistent 0-dim buffer."""

    _beta: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_beta", torch.tensor(-1.0), persistent=False)

    @property
    def beta(self) -> Tensor:
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        with torch.no_grad():
            self._beta.fill_(value)


class Output(NamedTuple):
    loss: float
    recon: float
    kl: float


def recording_trainer(target: Any = None) -> tuple[Engine, list[float], list[float]]:
    """An engine whose process function records engine.state.beta and target.beta."""
    seen: list[float] = []
    seen_target: list[float] = []

    def step(engine: Engine, batch: Any) -> None:
        seen.append(engine.state.beta)
        if target is not None:
            seen_target.append(float(target.beta))

    return Engine(step), seen, seen_target


# --- BetaScheduler ---------------------------------------------------------------------------


def test_scheduler_first_iteration_sees_schedule_at_zero():
    schedule = Cyclical(12, n_cycles=2, ratio=0.5)
    target = Weighted()
    trainer, seen, seen_target = recording_trainer(target)
    BetaScheduler(schedule, target=target, save_history=True).attach(trainer)
    trainer.run(range(5), max_epochs=3)
    expected = [schedule(k) for k in range(15)]
    assert seen == expected
    assert seen_target == pytest.approx(expected, rel=1e-7)  # the buffer is float32
    assert trainer.state.param_history["beta"] == expected


def test_scheduler_is_ignites_state_scheduler_shifted_by_one():
    # Ignite's own state scheduler passes 1 on its first firing: ours passes 0.
    schedule = LinearWarmup(10, start=0.2, stop=0.7)
    ours, seen, _ = recording_trainer()
    BetaScheduler(schedule).attach(ours)
    ours.run(range(4), max_epochs=3)

    ignites, seen_ignite, _ = recording_trainer()
    LambdaStateScheduler(lambda k: schedule(k - 1), param_name="beta", create_new=True).attach(
        ignites, Events.ITERATION_STARTED
    )
    ignites.run(range(4), max_epochs=3)
    assert seen == seen_ignite


def test_scheduler_per_epoch():
    trainer, seen, _ = recording_trainer()
    BetaScheduler(LinearWarmup(2), param_name="beta").attach(trainer, Events.EPOCH_STARTED)
    trainer.run(range(3), max_epochs=3)
    assert seen == [0.0] * 3 + [0.5] * 3 + [1.0] * 3


def test_scheduler_drives_vae_loss():
    loss_fn = VAELoss()
    x, x_hat = torch.zeros(4, 3), torch.ones(4, 3)
    mu, log_var = torch.ones(4, 2), torch.zeros(4, 2)
    losses: list[float] = []
    trainer = Engine(lambda e, b: losses.append(loss_fn(x_hat, x, mu, log_var).loss.item()))
    BetaScheduler(LinearWarmup(4), target=loss_fn).attach(trainer)
    trainer.run(range(6))
    recon, kl = 3.0, 1.0  # per data point: sum of 3 unit squared errors; 2 * mu^2 / 2
    assert losses == pytest.approx([recon + min(k / 4, 1.0) * kl for k in range(6)])
    assert loss_fn.state_dict() == {}


def test_simulate_and_plot_values():
    schedule = Cyclical(20, n_cycles=2)
    values = BetaScheduler.simulate_values(25, schedule=schedule)
    assert values == [[k, schedule(k)] for k in range(25)]
    named = BetaScheduler.simulate_values(3, schedule=schedule, param_name="kl_weight")
    assert named == values[:3]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = BetaScheduler.plot_values(25, schedule=schedule)
    assert lines[0].get_label() == "beta"
    assert list(lines[0].get_ydata()) == [v for _, v in values]
    plt.close("all")


def test_scheduler_state_dict_is_plain_numbers():
    scheduler = BetaScheduler(LinearWarmup(3))
    trainer, _, _ = recording_trainer()
    scheduler.attach(trainer)
    trainer.run(range(4))
    assert dict(scheduler.state_dict()) == {"event_index": 4}
    fresh = BetaScheduler(LinearWarmup(3))
    fresh.load_state_dict({"event_index": 2})
    engine = Engine(lambda e, b: None)
    fresh(engine)  # the third firing
    assert engine.state.beta == 2 / 3


@pytest.mark.parametrize(
    ("state", "error", "message"),
    [
        ([2], TypeError, "Argument state_dict should be a mapping, but given list"),
        (
            {"event_index": 2, "lambda_obj": None},
            ValueError,
            "Argument state_dict should have the keys ['event_index'], "
            "but given ['event_index', 'lambda_obj']",
        ),
        (
            {"event_index": 2.5},
            TypeError,
            "Argument state_dict['event_index'] should be an int, but given float",
        ),
        (
            {"event_index": "2"},
            TypeError,
            "Argument state_dict['event_index'] should be an int, but given str",
        ),
        (
            {"event_index": -1},
            ValueError,
            "Argument state_dict['event_index'] should be a non-negative int, but given -1",
        ),
    ],
)
def test_scheduler_refuses_a_tampered_state_at_load(state, error, message):
    scheduler = BetaScheduler(LinearWarmup(4))
    trainer, seen, _ = recording_trainer()
    scheduler.attach(trainer)
    trainer.run(range(2))
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        scheduler.load_state_dict(state)
    assert dict(scheduler.state_dict()) == {"event_index": 2}  # unchanged
    trainer.run(range(2), max_epochs=2)  # and it goes on where it was
    assert seen == [0.0, 0.25, 0.5, 0.75]


def test_scheduler_errors():
    with pytest.raises(TypeError, match=r"Argument schedule should be callable, but given float"):
        BetaScheduler(0.5)
    with pytest.raises(TypeError, match=r"Argument attr should be a str, but given int"):
        BetaScheduler(LinearWarmup(3), attr=1)
    with pytest.raises(TypeError, match=r"Argument param_name should be a str, but given NoneType"):
        BetaScheduler(LinearWarmup(3), param_name=None)
    with pytest.raises(
        ValueError, match=r"Argument target should have an attribute 'beta', but given Linear"
    ):
        BetaScheduler(LinearWarmup(3), target=nn.Linear(1, 1))
    trainer, _, _ = recording_trainer()
    BetaScheduler(LinearWarmup(3)).attach(trainer)
    with pytest.raises(ValueError, match=r"Attribute 'beta' already exists in the engine.state"):
        BetaScheduler(LinearWarmup(3)).attach(trainer)


# --- BetaController ----------------------------------------------------------------------------


def feedback_step(target: Weighted, seen: list[float]):
    """A process function whose KL falls as beta rises (as a VAE's does)."""

    def step(engine: Engine, batch: float) -> Output:
        beta = engine.state.beta
        seen.append(beta)
        assert float(target.beta) == pytest.approx(beta, rel=1e-7)
        kl = 4.0 + batch - 6.0 * beta
        return Output(loss=0.0, recon=10.0 - kl, kl=kl)

    return step


def reference_feedback(controller, batches: list[float]) -> list[float]:
    """The same loop without Ignite: beta seen by each step, from the plain controller."""
    seen = []
    for batch in batches:
        seen.append(controller.beta)
        controller.update(4.0 + batch - 6.0 * controller.beta)
    return seen


def test_controller_feeds_kl_and_publishes_beta():
    batches = [0.0, 0.5, -0.3, 1.0, 0.2] * 4
    target, seen = Weighted(), []
    trainer = Engine(feedback_step(target, seen))
    handler = BetaController(PIController(2.0, kp=0.3, ki=0.05), target=target)
    handler.attach(trainer)
    assert trainer.state.beta == 0.0 == float(target.beta)  # published before the first step
    trainer.run(batches)
    assert seen == reference_feedback(PIController(2.0, kp=0.3, ki=0.05), batches)
    assert trainer.state.beta == handler.controller.beta


def test_controller_with_geco_on_the_reconstruction():
    batches = [0.0, 2.0, 1.0] * 5
    target, seen = Weighted(), []
    trainer = Engine(feedback_step(target, seen))
    geco = GECO(7.0, step_size=0.05, alpha=0.5)
    BetaController(geco, output_transform=lambda out: out.recon, target=target).attach(trainer)
    trainer.run(batches)
    plain, expected = GECO(7.0, step_size=0.05, alpha=0.5), []
    for batch in batches:
        expected.append(plain.beta)
        plain.update(10.0 - (4.0 + batch - 6.0 * plain.beta))
    assert seen == expected


@pytest.mark.parametrize(
    "output",
    [{"kl": 3.0}, {"kl": torch.tensor(3.0, requires_grad=True)}, Output(0.0, 0.0, 3.0)],
    ids=["mapping", "tensor", "namedtuple"],
)
def test_controller_default_output_transform(output):
    trainer = Engine(lambda e, b: output)
    BetaController(PIController(1.0, kp=0.0, ki=0.1)).attach(trainer)
    trainer.run([0])
    assert trainer.state.beta == pytest.approx(0.2)  # I = -ki * (1 - 3)


def test_controller_with_vae_loss_output():
    loss_fn = VAELoss()
    mu, log_var = torch.full((2, 3), 2.0), torch.zeros(2, 3)  # KL = 3 * 2^2 / 2 = 6 per point
    trainer = Engine(lambda e, b: loss_fn(mu, mu, mu, log_var))
    BetaController(PIController(1.0, kp=0.0, ki=0.01), target=loss_fn).attach(trainer)
    trainer.run([0, 0])
    assert trainer.state.beta == pytest.approx(0.1)  # twice I += 0.01 * (6 - 1)
    assert loss_fn.beta.item() == pytest.approx(0.1)


def test_controller_nan_observation_warns_and_keeps_beta():
    outputs = iter([{"kl": 5.0}, {"kl": math.nan}, {"kl": 5.0}])
    trainer = Engine(lambda e, b: next(outputs))
    handler = BetaController(PIController(1.0, kp=0.0, ki=0.01))
    handler.attach(trainer)
    with pytest.warns(RuntimeWarning, match=r"ignored the non-finite observation nan"):
        trainer.run(range(3))
    assert trainer.state.beta == pytest.approx(0.08)


def test_controller_attach_does_not_reset_a_loaded_state():
    state = {"beta": 0.25, "integral": 0.25}
    before = BetaController(PIController(1.0))
    before.load_state_dict(state)
    trainer, _, _ = recording_trainer()
    before.attach(trainer)
    assert trainer.state.beta == 0.25

    after, seen = BetaController(PIController(1.0, kp=0.0, ki=0.0)), []
    trainer = Engine(lambda e, b: seen.append(e.state.beta) or {"kl": 1.0})
    after.attach(trainer)
    after.load_state_dict(state)  # loaded after attach: published when the run starts
    trainer.run([None])
    assert seen == [0.25]


def test_controller_errors():
    assert_controller_arguments_are_checked(BetaController)
    with pytest.raises(
        TypeError, match=r"Argument output_transform should be callable, but given str"
    ):
        BetaController(PIController(1.0), output_transform="kl")
    trainer, _, _ = recording_trainer()
    BetaScheduler(LinearWarmup(3)).attach(trainer)
    with pytest.raises(ValueError, match=r"Attribute 'beta' already exists in the engine.state"):
        BetaController(PIController(1.0)).attach(trainer)


OUTPUT_ERRORS = [
    ({"recon": 1.0}, TypeError, r"Argument output_transform is needed: .* but given dict"),
    (torch.tensor(1.0), TypeError, r"Argument output_transform is needed: .* but given Tensor"),
    ({"kl": torch.ones(2)}, ValueError, r"one-element tensor, but given a tensor of shape \(2,\)"),
    (
        {"kl": "1.0"},
        TypeError,
        r"The observation should be a number or a one-element tensor, but given str",
    ),
]


@pytest.mark.parametrize(("output", "error", "match"), OUTPUT_ERRORS)
def test_controller_output_errors(output, error, match):
    trainer = Engine(lambda e, b: output)
    BetaController(PIController(1.0)).attach(trainer)
    with pytest.raises(error, match=match):
        trainer.run([0])


# --- Checkpoint: resuming gives exactly the uninterrupted sequence -----------------------------


def make_scheduler(target: Weighted) -> BetaScheduler:
    return BetaScheduler(Cyclical(30, n_cycles=3, ratio=0.7, shape="cosine"), target=target)


def make_controller(target: Weighted) -> BetaController:
    return BetaController(PIController(2.0, kp=0.3, ki=0.05), target=target)


@pytest.mark.parametrize("make_handler", [make_scheduler, make_controller])
def test_checkpoint_resume_gives_the_uninterrupted_sequence(make_handler, tmp_path):
    batches = [0.0, 0.5, -0.3, 1.0, 0.2]

    def run(max_epochs: int, resume_from: Path | None = None) -> list[float]:
        target, seen = Weighted(), []
        trainer = Engine(feedback_step(target, seen))
        handler = make_handler(target)
        handler.attach(trainer)
        objects = {"trainer": trainer, "beta": handler}
        if resume_from is None:
            saver = DiskSaver(tmp_path, require_empty=False)
            trainer.add_event_handler(
                Events.EPOCH_COMPLETED, Checkpoint(objects, saver, n_saved=None)
            )
        else:
            Checkpoint.load_objects(objects, torch.load(resume_from, weights_only=True))
        trainer.run(batches, max_epochs=max_epochs)
        return seen

    uninterrupted = run(6)
    resumed = run(6, resume_from=tmp_path / "checkpoint_15.pt")  # saved after epoch 3
    assert resumed == uninterrupted[15:]
    assert len(set(resumed)) >= 5  # the sequence really moves


# --- two processes -----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_gloo_ranks_agree_on_beta(tmp_path):
    rank0, rank1 = spawn_ranks(Path(_dist_beta.__file__), tmp_path)
    assert rank0 == rank1

    controller, expected = _dist_beta.make_controller(), []
    for iteration in range(1, _dist_beta.ITERATIONS + 1):
        beta = controller.beta
        expected.append(beta)
        kls = [_dist_beta.rank_kl(rank, iteration, beta) for rank in (0, 1)]
        controller.update((kls[0] + kls[1]) / 2)
    assert rank0 == [*expected, controller.beta]
    one_rank = _dist_beta.make_controller()
    one_rank.update(_dist_beta.rank_kl(0, 1, 0.0))
    assert rank0[1] != one_rank.beta  # the ranks' KLs differ: the mean is what moved beta
