"""Tests for vaekit.lightning.beta: Trainers on CPU, checkpoint round trips, two gloo processes.

The Ignite handlers are the oracle for the schedules, a plain controller loop for the
controllers, and an uninterrupted run for a resumed one.
"""

from __future__ import annotations

# isort: off
# First: the import guard of vaekit.handlers silences torch's jit deprecations raised by ignite.
import vaekit.handlers  # noqa: F401
# isort: on

import csv
import inspect
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from tests._beta import assert_controller_arguments_are_checked
from tests._distributed import spawn_ranks
from tests.lightning import _dist_beta
from tests.lightning._lit import Loader, Model, make_trainer, rank_kl
from vaekit import VAELoss
from vaekit.handlers import BetaScheduler as IgniteBetaScheduler
from vaekit.lightning import BetaController, BetaScheduler
from vaekit.schedules import GECO, Cyclical, LinearWarmup, PIController

ROOT = Path(__file__).resolve().parents[2]
# Trainer.fit takes weights_only from Lightning 2.6 on; Lightning 2.2, the oldest supported, calls
# torch.load with torch's default, which is weights_only=True since torch 2.6.
FIT_WEIGHTS_ONLY = (
    {"weights_only": True} if "weights_only" in inspect.signature(pl.Trainer.fit).parameters else {}
)
DIST_TIMEOUT_S = 240  # two Lightning imports and a gloo rendezvous take about 20 s
VALUES = [0.0, 0.5, -0.25, 1.0, 0.125, 0.75]  # a batch each, exact in float32

SCHEDULES = [LinearWarmup(7, start=0.1, stop=0.9), Cyclical(12, n_cycles=2, ratio=0.75)]


def ignite_values(schedule, n: int) -> list[float]:
    return [value for _, value in IgniteBetaScheduler.simulate_values(n, schedule=schedule)]


def fit(tmp_path, callback_for, *, driven="module", max_epochs=2, values=VALUES, **kwargs):
    """Fit a fresh Model with ``callback_for(model)`` and return the model."""
    model = Model(driven)
    trainer = make_trainer(
        tmp_path, max_epochs=max_epochs, callbacks=[callback_for(model)], **kwargs
    )
    trainer.fit(model, train_dataloaders=Loader(values))
    return model


def reference_feedback(controller, values: list[float], accumulate: int = 1) -> list[float]:
    """The beta each batch sees when a plain controller is fed each optimizer step's mean KL."""
    seen = []
    for start in range(0, len(values), accumulate):
        group = values[start : start + accumulate]
        seen.extend([controller.beta] * len(group))
        controller.update(sum(rank_kl(v, controller.beta) for v in group) / len(group))
    return seen


# --- BetaScheduler ---------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_scheduler_per_step_is_ignites_sequence(schedule, tmp_path):
    model = fit(tmp_path, lambda m: BetaScheduler(schedule), max_epochs=2)
    assert model.seen == ignite_values(schedule, 2 * len(VALUES))
    assert len(set(model.seen)) >= 5  # the sequence really moves


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_scheduler_per_epoch_is_ignites_sequence(schedule, tmp_path):
    model = fit(tmp_path, lambda m: BetaScheduler(schedule, interval="epoch"), max_epochs=3)
    per_epoch = ignite_values(schedule, 3)
    assert model.seen == [beta for beta in per_epoch for _ in VALUES]
    assert len(set(per_epoch)) == 3


def test_scheduler_drives_a_vae_loss_in_the_module(tmp_path):
    schedule = SCHEDULES[1]
    model = fit(tmp_path, lambda m: BetaScheduler(schedule, target=m.loss_fn), driven="loss")
    expected = ignite_values(schedule, 2 * len(VALUES))
    assert model.seen == pytest.approx(expected, rel=1e-7)  # the buffer is float32
    assert model.beta == -1.0  # the module's own attribute is left alone
    assert model.loss_fn.state_dict() == {}


def test_scheduler_counts_optimizer_steps_under_accumulation(tmp_path):
    # 5 batches an epoch, 2 accumulated: Lightning steps after batches 2, 4 and the epoch's last.
    schedule = LinearWarmup(6)
    model = fit(
        tmp_path,
        lambda m: BetaScheduler(schedule),
        values=VALUES[:5],
        accumulate_grad_batches=2,
    )
    steps = [0, 0, 1, 1, 2, 3, 3, 4, 4, 5]
    assert model.steps == steps
    assert model.seen == [schedule(k) for k in steps]


def test_scheduler_sets_beta_at_setup_for_the_sanity_check(tmp_path):
    schedule = LinearWarmup(4, start=0.3)

    class WithValidation(Model):
        def validation_step(self, batch, batch_idx):
            self.seen_in_validation.append(self.beta)

    model = WithValidation()
    model.seen_in_validation = []
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[BetaScheduler(schedule)])
    trainer.fit(model, train_dataloaders=Loader(VALUES), val_dataloaders=Loader(VALUES[:2]))
    # The sanity check (2 batches) sees schedule(0), the epoch-end validation the last value.
    assert model.seen_in_validation == [0.3, 0.3, *[schedule(5)] * 2]


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_scheduler_logs_beta(interval, tmp_path):
    schedule = SCHEDULES[1]
    logger = CSVLogger(tmp_path, name="", version="")
    fit(
        tmp_path,
        lambda m: BetaScheduler(schedule, interval=interval, log_name="kl_weight"),
        logger=logger,
        log_every_n_steps=1,
    )
    with open(Path(logger.log_dir) / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row["kl_weight"]]
    logged = [float(row["kl_weight"]) for row in rows]
    n = 2 * len(VALUES) if interval == "step" else 2
    assert logged == pytest.approx(ignite_values(schedule, n), rel=1e-7)  # logged in float32


def test_scheduler_log_name_none_logs_nothing(tmp_path):
    model = Model()
    trainer = make_trainer(
        tmp_path, max_epochs=1, callbacks=[BetaScheduler(LinearWarmup(3), log_name=None)]
    )
    trainer.fit(model, train_dataloaders=Loader(VALUES))
    assert "beta" not in trainer.callback_metrics
    assert model.seen == [0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0]


def test_scheduler_state_dict_and_load_state_dict(tmp_path):
    scheduler = BetaScheduler(LinearWarmup(10))
    assert scheduler.state_dict() == {}
    model = fit(tmp_path, lambda m: scheduler, max_epochs=1)
    assert scheduler.state_dict() == {"step": 5, "beta": 0.5}
    state = scheduler.state_dict()
    assert all(type(v) in (int, float) for v in state.values())

    target = VAELoss()
    fresh = BetaScheduler(LinearWarmup(10), target=target)
    fresh.load_state_dict({"step": 3, "beta": 0.25})
    assert fresh.state_dict() == {"step": 3, "beta": 0.25}
    assert target.beta.item() == 0.25  # the loaded value is set on a known target at once
    fresh.load_state_dict({})
    assert fresh.state_dict() == {}
    assert model.seen[-1] == 0.5


STATE_ERRORS = [
    ([("step", 1)], TypeError, r"Argument state_dict should be a mapping, but given list"),
    ({"step": 1}, ValueError, r"should have the keys \['beta', 'step'\], but given \['step'\]"),
    (
        {"step": 1, "beta": 0.5, "extra": 0},
        ValueError,
        r"should have the keys \['beta', 'step'\], but given \['beta', 'extra', 'step'\]",
    ),
    (
        {"step": 1.0, "beta": 0.5},
        TypeError,
        r"state_dict\['step'\] should be an int, but given float",
    ),
    (
        {"step": True, "beta": 0.5},
        TypeError,
        r"state_dict\['step'\] should be an int, but given bool",
    ),
    ({"step": -1, "beta": 0.5}, ValueError, r"'step'\] should be a non-negative int, but given -1"),
    (
        {"step": 1, "beta": "0.5"},
        TypeError,
        r"state_dict\['beta'\] should be a float, but given str",
    ),
    (
        {"step": 1, "beta": math.nan},
        ValueError,
        r"'beta'\] should be a finite number, but given nan",
    ),
    ({"step": 1, "beta": -math.inf}, ValueError, r"should be a finite number, but given -inf"),
]


@pytest.mark.parametrize(("state", "error", "match"), STATE_ERRORS)
def test_scheduler_refused_state_leaves_it_unchanged(state, error, match):
    target = VAELoss(beta=0.75)
    scheduler = BetaScheduler(LinearWarmup(10), target=target)
    scheduler.load_state_dict({"step": 2, "beta": 0.2})
    with pytest.raises(error, match=match):
        scheduler.load_state_dict(state)
    assert scheduler.state_dict() == {"step": 2, "beta": 0.2}
    assert target.beta.item() == pytest.approx(0.2)


def test_scheduler_errors(tmp_path):
    with pytest.raises(TypeError, match=r"Argument schedule should be callable, but given float"):
        BetaScheduler(0.5)
    with pytest.raises(
        ValueError, match=r"Argument interval should be 'step' or 'epoch', but given 'batch'"
    ):
        BetaScheduler(LinearWarmup(3), interval="batch")
    with pytest.raises(TypeError, match=r"Argument interval should be a str, but given int"):
        BetaScheduler(LinearWarmup(3), interval=1)
    with pytest.raises(TypeError, match=r"Argument attr should be a str, but given int"):
        BetaScheduler(LinearWarmup(3), attr=1)
    with pytest.raises(
        TypeError, match=r"Argument log_name should be a str or None, but given int"
    ):
        BetaScheduler(LinearWarmup(3), log_name=0)
    with pytest.raises(
        ValueError, match=r"Argument target should have an attribute 'beta', but given Linear"
    ):
        BetaScheduler(LinearWarmup(3), target=torch.nn.Linear(1, 1))
    with pytest.raises(
        ValueError,
        match=r"Argument target is None, so the LightningModule should have an attribute "
        r"'gamma', but given Model without it",
    ):
        fit(tmp_path, lambda m: BetaScheduler(LinearWarmup(3), attr="gamma"))


@pytest.mark.parametrize(
    ("schedule", "error", "match"),
    [
        (lambda k: "0.5", TypeError, r"Argument schedule\(0\) should be a float, but given str"),
        (
            lambda k: math.inf if k == 1 else 0.0,
            ValueError,
            r"Argument schedule\(1\) should be a finite number, but given inf",
        ),
    ],
    ids=["str", "inf"],
)
def test_scheduler_checks_what_the_schedule_returns(schedule, error, match, tmp_path):
    with pytest.raises(error, match=match):
        fit(tmp_path, lambda m: BetaScheduler(schedule))


# --- BetaController ----------------------------------------------------------------------------


@pytest.mark.parametrize("driven", ["module", "loss"])
def test_controller_feeds_each_steps_kl(driven, tmp_path):
    def callback(model):
        target = None if driven == "module" else model.loss_fn
        return BetaController(PIController(2.0, kp=0.3, ki=0.05), target=target)

    model = fit(tmp_path, callback, driven=driven, max_epochs=3)
    expected = reference_feedback(PIController(2.0, kp=0.3, ki=0.05), VALUES * 3)
    if driven == "module":
        assert model.seen == expected
    else:  # VAELoss.beta is a float32 buffer: the loop feeds back its rounded beta
        assert model.seen == pytest.approx(expected, rel=1e-6)
    assert len(set(model.seen)) >= 10


def test_controller_geco_with_a_callable_monitor(tmp_path):
    monitor = lambda outputs: outputs["recon"]  # noqa: E731
    model = fit(
        tmp_path, lambda m: BetaController(GECO(7.0, step_size=0.05, alpha=0.5), monitor=monitor)
    )
    plain, expected = GECO(7.0, step_size=0.05, alpha=0.5), []
    for value in VALUES * 2:
        expected.append(plain.beta)
        plain.update(10.0 - rank_kl(value, plain.beta))
    assert model.seen == expected
    assert model.seen[0] == 1.0  # beta_init, set at setup


def test_controller_updates_once_per_optimizer_step_under_accumulation(tmp_path):
    # 6 batches, 2 accumulated: beta holds over each pair, and the pair's mean KL is fed.
    model = fit(
        tmp_path,
        lambda m: BetaController(PIController(2.0, kp=0.3, ki=0.05)),
        accumulate_grad_batches=2,
    )
    expected = reference_feedback(PIController(2.0, kp=0.3, ki=0.05), VALUES * 2, accumulate=2)
    assert model.seen == expected
    assert model.seen[0::2] == model.seen[1::2]
    assert len(set(model.seen)) == 6


def test_controller_skipped_batch_feeds_nothing(tmp_path):
    class Skipping(Model):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            return None if batch_idx == 2 else out

    model = Skipping()
    callback = BetaController(PIController(2.0, kp=0.3, ki=0.05))
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[callback])
    with pytest.warns(UserWarning, match=r"`training_step` returned `None`"):  # Lightning's
        trainer.fit(model, Loader(VALUES))
    kept = [v for i, v in enumerate(VALUES) if i != 2]
    expected = reference_feedback(PIController(2.0, kp=0.3, ki=0.05), kept)
    assert [beta for i, beta in enumerate(model.seen) if i != 2] == expected
    assert model.seen[2] == model.seen[3]  # no step, no update


def test_controller_nan_observation_warns_and_keeps_beta(tmp_path):
    values = [0.0, math.nan, 0.0]
    callback = BetaController(PIController(2.0, kp=0.0, ki=0.01))
    with pytest.warns(RuntimeWarning, match=r"ignored the non-finite observation nan"):
        model = fit(tmp_path, lambda m: callback, max_epochs=1, values=values)
    assert model.seen == [0.0, pytest.approx(0.02), pytest.approx(0.02)]  # I = -ki * (2 - 4)


def test_controller_state_is_the_controllers(tmp_path):
    controller = PIController(2.0, kp=0.3, ki=0.05)
    callback = BetaController(controller)
    fit(tmp_path, lambda m: callback, max_epochs=1)
    assert callback.state_dict() == controller.state_dict()
    assert set(callback.state_dict()) == {"beta", "integral"}

    target = VAELoss()
    fresh = BetaController(PIController(2.0), target=target)
    fresh.load_state_dict({"beta": 0.5, "integral": 0.25})
    assert fresh.controller.beta == 0.5
    assert target.beta.item() == 0.5
    with pytest.raises(ValueError, match=r"should have the keys \['beta', 'integral'\]"):
        fresh.load_state_dict({"beta": 0.1})
    with pytest.raises(TypeError, match=r"Argument state_dict should be a mapping"):
        fresh.load_state_dict([0.1, 0.2])
    assert fresh.state_dict() == {"beta": 0.5, "integral": 0.25}
    assert target.beta.item() == 0.5


def test_controller_errors():
    assert_controller_arguments_are_checked(BetaController)
    with pytest.raises(
        TypeError, match=r"Argument monitor should be a str or callable, but given int"
    ):
        BetaController(PIController(1.0), monitor=0)


@pytest.mark.parametrize(
    ("monitor", "kl", "error", "match"),
    [
        (
            "elbo",
            None,
            ValueError,
            r"Argument monitor should name an entry of the training_step output, "
            r"but given 'elbo' and an output with \['kl', 'loss', 'recon'\]",
        ),
        (
            "kl",
            torch.ones(2),
            ValueError,
            r"one-element tensor, but given a tensor of shape \(2,\)",
        ),
        ("kl", "1.0", TypeError, r"a number or a one-element tensor, but given str"),
    ],
    ids=["missing", "two-elements", "str"],
)
def test_controller_output_errors(monitor, kl, error, match, tmp_path):
    class Reporting(Model):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            return out if kl is None else {**out, "kl": kl}

    model = Reporting()
    callback = BetaController(PIController(1.0), monitor=monitor)
    with pytest.raises(error, match=match):
        make_trainer(tmp_path, max_epochs=1, callbacks=[callback]).fit(model, Loader(VALUES))
    assert callback.controller.state_dict() == PIController(1.0).state_dict()


def test_state_keys_tell_the_callbacks_apart():
    keys = {
        BetaScheduler(LinearWarmup(3)).state_key,
        BetaScheduler(LinearWarmup(3), attr="capacity", log_name="capacity").state_key,
        BetaController(PIController(1.0)).state_key,
    }
    assert keys == {
        "BetaScheduler{'attr': 'beta', 'log_name': 'beta'}",
        "BetaScheduler{'attr': 'capacity', 'log_name': 'capacity'}",
        "BetaController{'attr': 'beta', 'log_name': 'beta'}",
    }


# --- resuming with ckpt_path gives exactly the uninterrupted sequence --------------------------


class SaveAt(pl.Callback):
    """Saves a checkpoint after optimizer step ``step`` (in the second epoch) or at the end of
    the first epoch, and records the module's beta then."""

    def __init__(self, path: Path, step: int | None) -> None:
        self.path, self.step = path, step
        self.beta = math.nan

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self.save(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        if self.step is None and trainer.current_epoch == 0:
            self.save(trainer, pl_module)

    def save(self, trainer, pl_module):
        trainer.save_checkpoint(self.path)
        self.beta = pl_module.beta


class AtTrainStart(pl.Callback):
    """Records the module's beta when training starts: after a checkpoint is restored."""

    def on_train_start(self, trainer, pl_module):
        self.beta = pl_module.beta


MAKERS = {
    "schedule": lambda: BetaScheduler(Cyclical(15, n_cycles=2, ratio=0.7, shape="cosine")),
    "schedule-per-epoch": lambda: BetaScheduler(Cyclical(4, n_cycles=2), interval="epoch"),
    "pi-controller": lambda: BetaController(PIController(2.0, kp=0.3, ki=0.05)),
}


@pytest.mark.parametrize("saved_after", [9, None], ids=["mid-epoch", "end-of-epoch"])
@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_resume_from_a_checkpoint_gives_the_uninterrupted_sequence(make, saved_after, tmp_path):
    path = tmp_path / "beta.ckpt"
    uninterrupted, callback, saver = Model(), make(), SaveAt(tmp_path / "beta.ckpt", saved_after)
    trainer = make_trainer(tmp_path, max_epochs=3, callbacks=[callback, saver])
    trainer.fit(uninterrupted, train_dataloaders=Loader(VALUES))

    checkpoint = torch.load(path, weights_only=True)  # plain values only
    done = saved_after or len(VALUES)
    assert checkpoint["callbacks"][callback.state_key] == state_after(make, done, tmp_path)

    resumed, fresh, probe = Model(), make(), AtTrainStart()
    trainer = make_trainer(tmp_path, max_epochs=3, callbacks=[fresh, probe])
    trainer.fit(resumed, train_dataloaders=Loader(VALUES), ckpt_path=path, **FIT_WEIGHTS_ONLY)
    assert probe.beta == saver.beta  # the target holds what it held when the checkpoint was taken
    assert resumed.seen == uninterrupted.seen[done:]
    assert resumed.steps == list(range(done, 3 * len(VALUES)))
    assert len(set(resumed.seen)) >= 2


def state_after(make, batches: int, root: Path) -> dict:
    """The callback's state after ``batches`` batches, from a run that stops there."""
    model, callback = Model(), make()
    trainer = make_trainer(root, max_epochs=3, max_steps=batches, callbacks=[callback])
    trainer.fit(model, train_dataloaders=Loader(VALUES))
    return callback.state_dict()


# --- two processes -----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_gloo_ranks_agree_on_beta(tmp_path):
    rank0, rank1 = spawn_ranks(Path(_dist_beta.__file__), tmp_path, timeout=DIST_TIMEOUT_S)
    assert rank0 == rank1

    controller, expected = _dist_beta.make_controller(), []
    for value in _dist_beta.VALUES * _dist_beta.EPOCHS:
        expected.append(controller.beta)
        kls = [rank_kl(value, controller.beta, rank) for rank in (0, 1)]
        controller.update((kls[0] + kls[1]) / 2)
    assert rank0["beta"] == [*expected, controller.beta]
    assert rank0["gamma"] == [
        _dist_beta.schedule(epoch) for epoch in range(_dist_beta.EPOCHS) for _ in _dist_beta.VALUES
    ]
    one_rank = _dist_beta.make_controller()
    one_rank.update(rank_kl(_dist_beta.VALUES[0], 0.0, rank=0))
    assert rank0["beta"][1] != one_rank.beta  # the ranks' KLs differ: the mean is what moved beta
