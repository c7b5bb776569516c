"""Training one VAE with Ignite: the engines, the beta handler, the metrics, the checkpoints."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, ProgressBar
from torch import Tensor, nn
from torch.multiprocessing.spawn import ProcessRaisedException
from torch.optim import Optimizer

from vaekit import BetaTCVAELoss, LearnedVariance, VAELoss
from vaekit._distributed import free_port
from vaekit.demo.checkpoints import AtomicSaver, demo_checkpoints, load_newest, remove_checkpoints
from vaekit.demo.config import DemoConfig, build_beta
from vaekit.demo.data import load_data
from vaekit.demo.evaluate import (
    eval_likelihood,
    importance_weighted_nll,
    split_data,
    summary,
    training_variance,
    write_test_json,
)
from vaekit.demo.model import VAE
from vaekit.demo.monitors import attach_metrics
from vaekit.demo.report import write_csv, write_report, write_samples
from vaekit.functional._recon import optimal_log_sigma
from vaekit.handlers import BetaController, BetaScheduler
from vaekit.schedules import GECO, Controller

__all__ = [
    "Batches",
    "DivergedError",
    "History",
    "ResumeError",
    "RunError",
    "launch",
    "train",
]


class RunError(Exception):
    """A run that cannot go on; the message is one line, ``exit_code`` the program's status."""

    exit_code = 1


class ResumeError(RunError):
    """``--resume`` found no checkpoint that loads."""

    exit_code = 2


class DivergedError(RunError):
    """Training reached a NaN or infinite state; the last finite checkpoint is kept."""


class Batches:
    """Shuffled mini-batches of an in-memory tensor, one shard per process, fixed by the epoch.

    The order depends only on ``seed`` and the epoch set with :meth:`set_epoch`, so a resumed
    run sees the batches of the uninterrupted one. Every process gets the same number of
    batches (``N`` is cut to a multiple of the world size), as data-parallel training needs.

    Example:
        >>> import torch
        >>> from vaekit.demo.train import Batches
        >>> batches = Batches(torch.arange(10.0), 4, seed=0)
        >>> [b.tolist() for b in batches] == [b.tolist() for b in batches], len(batches)
        (True, 3)
    """

    def __init__(
        self,
        x: Tensor,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        self.x, self.seed, self.rank, self.world_size = x, seed, rank, world_size
        self.per_rank = math.ceil(batch_size / world_size)
        self.shuffle, self.epoch = shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch`` (0-based) for the next iteration."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.x) // self.world_size / self.per_rank)

    def __iter__(self) -> Iterator[Tensor]:
        n = len(self.x) - len(self.x) % self.world_size
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(len(self.x), generator=g)[:n]
        else:
            order = torch.arange(n)
        shard = order[self.rank :: self.world_size]
        for i in range(0, len(shard), self.per_rank):
            yield self.x[shard[i : i + self.per_rank]]


def launch(config: DemoConfig, outs: Mapping[str, Path], *, resume: bool, device: str) -> None:
    """Train one model per schedule of ``outs`` (schedule -> directory), in this process or
    in ``config.nproc_per_node`` data-parallel ones (gloo on CPU, NCCL on GPUs, on loopback)."""
    n = config.nproc_per_node
    if n == 1:
        _worker(0, config, outs, resume, device)
        return
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    try:
        idist.spawn(
            backend,
            _worker,
            (config, outs, resume, device),
            nproc_per_node=n,
            master_addr="127.0.0.1",
            master_port=free_port(),
        )
    except ProcessRaisedException as err:
        raise _run_error_of(err) or err from None


def _run_error_of(err: ProcessRaisedException) -> RunError | None:
    """The RunError a spawned process raised, rebuilt from the traceback it sent, or None."""
    last = err.msg.rstrip().splitlines()[-1]
    for kind in (RunError, ResumeError, DivergedError):
        prefix = f"{kind.__module__}.{kind.__qualname__}: "
        if last.startswith(prefix):
            return kind(last[len(prefix) :])
    return None


def _worker(
    local_rank: int, config: DemoConfig, outs: Mapping[str, Path], resume: bool, device: str
) -> None:
    if idist.get_world_size() > 1:
        device = str(idist.device())
    for schedule, out in outs.items():
        train(config, schedule, out, resume=resume, device=device)
    # No process leaves (and tears down the group) while rank 0 still writes its reports.
    idist.barrier()


def train(config: DemoConfig, schedule: str, out: Path, *, resume: bool, device: str) -> None:
    """Train one model with ``schedule`` into ``out``; every process of the group calls it."""
    rank, world = idist.get_rank(), idist.get_world_size()
    x, x_test = split_data(load_data(config.data), config.test_fraction)
    parts = _build(config, tuple(x.shape[1:]), len(x), device, world)
    data = Batches(x, config.batch_size, seed=config.seed, rank=rank, world_size=world)
    # Uneven evaluation shards, all of the data: the metrics reduce exactly across processes.
    eval_data = Batches(x[rank::world], 512, seed=0, shuffle=False)
    checkpoints = out / "checkpoints"
    trainer, to_save = _engines(parts, config, schedule, data, eval_data, checkpoints, device)
    _checkpoint(trainer, to_save, config, out, resume=resume, rank=rank)
    if rank == 0 and sys.stderr.isatty():  # a bar in a terminal, no carriage returns in logs
        ProgressBar(desc=schedule).attach(
            trainer, output_transform=lambda out: {"loss": out["loss"]}, state_attributes=["beta"]
        )
    if trainer.state.epoch < config.epochs:
        trainer.run(data, max_epochs=config.epochs)
    test = _evaluate_test(parts.vae, x, x_test, config)
    if rank == 0:
        _write_outputs(out, config, schedule, to_save["history"], parts.vae, x, len(x_test), test)


class _Parts(NamedTuple):
    """The model (``model`` wrapped for DDP where processes share it), its optimizer and loss."""

    vae: VAE
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Loss
    decoder: dict[str, Any]


def _build(config: DemoConfig, shape: tuple[int, ...], n: int, device: str, world: int) -> _Parts:
    torch.manual_seed(config.seed)
    vae = VAE(shape, latent_dim=config.latent_dim, learned_variance=config.recon_var == "learned")
    model: nn.Module = vae.to(device)
    if world > 1:  # DDP; alone, auto_model would move the model to a GPU whatever --device says
        model = idist.auto_model(model)
    optimizer = idist.auto_optim(torch.optim.Adam(model.parameters(), lr=config.lr))
    decoder = _decoder_settings(config, vae)
    loss_fn = _loss(config, n, decoder, synced=world > 1).to(device)
    return _Parts(vae, model, optimizer, loss_fn, decoder)


def _engines(
    parts: _Parts,
    config: DemoConfig,
    schedule: str,
    data: Batches,
    eval_data: Batches,
    checkpoints: Path,
    device: str,
) -> tuple[Engine, dict[str, Any]]:
    """The trainer, with the evaluator, beta, the metrics and the history attached; and what a
    checkpoint saves."""
    model, optimizer, loss_fn = parts.model, parts.optimizer, parts.loss_fn
    diverged = _divergence(schedule, checkpoints)
    trainer = Engine(_train_step(model, optimizer, loss_fn, config, device, diverged))
    probe = VAELoss(config.recon, **parts.decoder).to(device)
    evaluator = Engine(_eval_step(model, probe, config))
    trainer.logger.setLevel(logging.CRITICAL)  # a Ctrl-C is reported once, by main()
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: data.set_epoch(e.state.epoch - 1))
    steps = config.epochs * len(data)
    beta = _attach_beta(trainer, build_beta(schedule, config, steps), loss_fn)
    attach_metrics(trainer, evaluator, device=device, sigma=config.recon_var is not None)
    history = History(loss=config.loss)
    trainer.add_event_handler(
        Events.ITERATION_STARTED, lambda _: history.betas.append(float(loss_fn.beta))
    )

    @trainer.on(Events.EPOCH_COMPLETED)
    def evaluate(engine: Engine) -> None:
        # Before the checkpoint of this epoch: a state that is not finite is never saved.
        state = [*_unwrap(model).state_dict().values(), *_tensors(optimizer.state_dict())]
        if not _all_finite(state) or not math.isfinite(engine.state.metrics["train_loss"]):
            raise diverged(engine, "the model or optimizer state is NaN or infinite")
        metrics = {**engine.state.metrics, **evaluator.run(eval_data).metrics}
        if not all(math.isfinite(float(metrics[k])) for k in ("recon", "kl")):
            raise diverged(engine, "the evaluation loss is NaN or infinite")
        history.append(engine.state.epoch, engine.state.iteration, metrics)

    to_save = {
        "model": model,
        "optimizer": optimizer,
        "trainer": trainer,
        "beta": beta,
        "history": history,
    }
    return trainer, to_save


def _checkpoint(
    trainer: Engine,
    to_save: dict[str, Any],
    config: DemoConfig,
    out: Path,
    *,
    resume: bool,
    rank: int,
) -> None:
    """Checkpoint every epoch; resume from the newest checkpoint that loads, or start afresh."""
    checkpoints = out / "checkpoints"
    # The saver keeps the two newest files, read from the directory: nothing in a checkpoint
    # lists other files (n_saved=None, no include_self), so none can name a file that is gone.
    checkpoint = Checkpoint(to_save, AtomicSaver(checkpoints, keep=2), n_saved=None)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    if resume and demo_checkpoints(checkpoints):
        report = _report if rank == 0 else _quiet
        if load_newest(checkpoints, to_save, report) is None:
            raise ResumeError(
                f"--resume: no checkpoint in {checkpoints} loads; run without --resume to start "
                "afresh (which removes them)"
            )
    elif rank == 0:  # a fresh run: no stale checkpoint for a later --resume to pick up
        remove_checkpoints(checkpoints)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def _write_outputs(
    out: Path,
    config: DemoConfig,
    schedule: str,
    history: History,
    vae: VAE,
    x: Tensor,
    n_test: int,
    test: dict[str, Any],
) -> None:
    """``metrics.csv``, ``test.json``, ``report.png`` and ``samples.png``."""
    write_csv(out / "metrics.csv", history.rows)
    write_test_json(out / "test.json", test)
    title = f"vaekit-demo --schedule {schedule} --beta {config.beta:g}"
    if config.loss == "tcvae":
        title = f"vaekit-demo --loss tcvae --schedule {schedule} --tc-beta {config.tc_beta:g}"
    title += f": {len(x)} training samples\n{n_test} held out: {summary(test)}"
    write_report(out / "report.png", history.rows, history.betas, title, dataset_size=len(x))
    write_samples(out / "samples.png", vae, x, config.latent_dim, config.seed)


Step = Callable[[Engine, Tensor], dict[str, Tensor]]
Loss = VAELoss | BetaTCVAELoss


def _loss(config: DemoConfig, dataset_size: int, decoder: dict[str, Any], synced: bool) -> Loss:
    """``--loss vae``: the KL weighted by the schedule; ``tcvae``: its total correlation.
    ``decoder`` holds the VAELoss settings of the decoder; with several processes (``synced``),
    an optimal variance is that of the global batch."""
    if config.loss == "tcvae":
        return BetaTCVAELoss(config.recon, dataset_size=dataset_size, beta=config.tc_beta)
    sync = synced and config.recon_var == "optimal"
    return VAELoss(config.recon, free_bits=config.free_bits, sync_dist=sync, **decoder)


def _train_step(
    model: nn.Module,
    optimizer: Optimizer,
    loss_fn: Loss,
    config: DemoConfig,
    device: str,
    diverged: Callable[[Engine, str], DivergedError],
) -> Step:
    rank = idist.get_rank()

    def step(engine: Engine, batch: Tensor) -> dict[str, Tensor]:
        model.train()
        batch = batch.to(device)
        # The noise is a function of (seed, iteration, rank) alone: a resumed run redraws it.
        seed = (config.seed * 1_000_003 + engine.state.iteration) * 1_009 + rank
        logits, post = model(batch, generator=torch.Generator(device).manual_seed(seed))
        x_hat = _x_hat(logits, config.recon)
        if isinstance(loss_fn, BetaTCVAELoss):
            tc_out = loss_fn(x_hat, batch, post.z, post.mu, post.log_var)
            loss, recon, kl = tc_out.loss, tc_out.recon, tc_out.mi + tc_out.tc + tc_out.dim_kl
        else:
            loss, recon, kl = loss_fn(x_hat, batch, post.mu, post.log_var)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # The parameters are the same on every process (DDP), so all stop together here.
        if not _all_finite(model.parameters()):
            raise diverged(engine, "the model's parameters are NaN or infinite")
        result = {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach()}
        if isinstance(loss_fn, VAELoss) and config.recon_var is not None:
            result["sigma"] = _sigma(loss_fn, x_hat.detach(), batch)
        return result

    return step


def _eval_step(model: nn.Module, probe: VAELoss, config: DemoConfig) -> Step:
    """The evaluation step: ``probe`` is the training loss without free bits (the true KL)."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def step(engine: Engine, batch: Tensor) -> dict[str, Tensor]:
        model.eval()
        batch = batch.to(device)
        logits, post = model(batch)  # in eval(), z is the posterior mean
        out = probe(_x_hat(logits, config.recon), batch, post.mu, post.log_var)
        n = torch.tensor(float(len(batch)), device=device)
        return {"recon": out.recon, "kl": out.kl, "mu": post.mu, "log_var": post.log_var, "n": n}

    return step


def _x_hat(logits: Tensor, recon: str) -> Tensor:
    return logits if recon == "bce_with_logits" else torch.sigmoid(logits)


def _decoder_settings(config: DemoConfig, vae: VAE) -> dict[str, Any]:
    """The VAELoss settings of the decoder: its variance and, if discretized, its grid."""
    variance = vae.variance if vae.variance is not None else config.recon_var
    settings: dict[str, Any] = {"recon_var": variance}
    if config.recon.startswith("discretized_"):
        settings["num_bins"] = config.num_bins
    return settings


def _sigma(loss_fn: VAELoss, x_hat: Tensor, x: Tensor) -> Tensor:
    """The decoder's standard deviation in this step: learned, or the batch's clipped optimum
    (this process's batch: a report, not the synced value the loss used)."""
    if isinstance(loss_fn.recon_var, LearnedVariance):
        variance: Tensor = loss_fn.recon_var()
        return variance.detach().sqrt()
    log_sigma = optimal_log_sigma((x - x_hat).square().sum(), x.numel(), -6.0)
    return log_sigma.exp()


def _evaluate_test(vae: VAE, x: Tensor, x_test: Tensor, config: DemoConfig) -> dict[str, Any]:
    """The test NLL of ``x_test``, shared by the processes; every one calls it."""
    variance = training_variance(vae, x, config.recon, config.recon_var, config.seed)
    likelihood = eval_likelihood(config.recon)
    result: dict[str, Any] = importance_weighted_nll(
        vae,
        x_test,
        likelihood=likelihood,
        variance=variance,
        num_bins=config.num_bins,
        k=config.iw_samples,
        seed=config.seed,
        rank=idist.get_rank(),
        world_size=idist.get_world_size(),
    )
    result.update(
        k=config.iw_samples,
        num_bins=config.num_bins,
        sigma=math.sqrt(variance),
        likelihood=likelihood,
    )
    return result


def _attach_beta(trainer: Engine, beta: Any, loss_fn: Loss) -> BetaScheduler | BetaController:
    if isinstance(beta, Controller):
        key = "recon" if isinstance(beta, GECO) else "kl"
        handler: Any = BetaController(beta, output_transform=lambda out: out[key], target=loss_fn)
    else:
        handler = BetaScheduler(beta, target=loss_fn)
    handler.attach(trainer)
    return handler  # type: ignore[no-any-return]


def _unwrap(model: nn.Module) -> VAE:
    inner = getattr(model, "module", model)
    assert isinstance(inner, VAE)
    return inner


def _all_finite(tensors: Iterable[Any]) -> bool:
    """Whether every floating-point tensor of ``tensors`` is finite (one device sync)."""
    flags = [t.isfinite().all() for t in tensors if isinstance(t, Tensor) and t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def _tensors(state: Any) -> Iterator[Any]:
    """The leaves of a nested state dict."""
    if isinstance(state, Mapping):
        for value in state.values():
            yield from _tensors(value)
    elif isinstance(state, (list, tuple)):
        for value in state:
            yield from _tensors(value)
    else:
        yield state


def _divergence(schedule: str, checkpoints: Path) -> Callable[[Engine, str], DivergedError]:
    """A builder of the error that stops a diverged run, naming the checkpoint it keeps."""

    def error(engine: Engine, what: str) -> DivergedError:
        found = demo_checkpoints(checkpoints)
        kept = "no checkpoint was written"
        if found:
            kept = f"the last good checkpoint is {found[0][1]}"
        return DivergedError(
            f"the {schedule} run diverged at iteration {engine.state.iteration} (epoch "
            f"{engine.state.epoch}): {what}; {kept}; try a smaller --lr"
        )

    return error


def _report(message: str) -> None:
    print(f"vaekit-demo: {message}", file=sys.stderr)


def _quiet(message: str) -> None:
    pass


class History:
    """The per-epoch metrics, kept in the checkpoint so that a resumed run writes them all."""

    def __init__(self, loss: str = "vae") -> None:
        self.loss = loss
        self.rows: list[dict[str, float]] = []
        self.betas: list[float] = []

    def append(self, epoch: int, iteration: int, metrics: Mapping[str, Any]) -> None:
        """Add the row of ``epoch``, whose last iteration used the last of :attr:`betas`.

        Its ``loss`` is the objective on the whole data: ``recon + beta * kl``, or for
        ``tcvae`` ``recon + mi + beta * tc + dim_kl`` with the aggregate-posterior terms.
        """
        beta = self.betas[-1]
        row = {"epoch": float(epoch), "iteration": float(iteration), "beta": beta}
        if self.loss == "tcvae":
            terms = (float(metrics[k]) for k in ("recon", "mi", "tc", "dim_kl"))
            recon, mi, tc, dim_kl = terms
            row["loss"] = recon + mi + beta * tc + dim_kl
        else:
            row["loss"] = float(metrics["recon"]) + beta * float(metrics["kl"])
        for name, value in metrics.items():
            if isinstance(value, Mapping):  # a metric's dict, also stored key by key
                continue
            if isinstance(value, Tensor) and value.dim() > 0:
                row.update({f"{name}_{i}": float(v) for i, v in enumerate(value.flatten())})
            else:
                row[name] = float(value)
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows], "betas": list(self.betas)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rows = [dict(r) for r in state["rows"]]
        self.betas = list(state["betas"])
