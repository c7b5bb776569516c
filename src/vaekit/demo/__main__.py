"""The ``vaekit-demo`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from vaekit import BetaTCVAELoss, LearnedVariance, VAELoss
from vaekit.demo.checkpoints import demo_checkpoints
from vaekit.demo.config import LOSSES, SCHEDULES, DemoConfig, build_beta
from vaekit.demo.data import DataError, load_data
from vaekit.demo.evaluate import read_test_json, split_data
from vaekit.demo.report import format_table, read_csv, write_compare
from vaekit.demo.train import RunError, launch
from vaekit.functional.loss import RECONS

_SCALED = ("gaussian", "discretized_gaussian", "discretized_logistic")  # recons with a variance

__all__ = ["main"]

_MAX_SEED = 2**32 - 1  # the derived seeds of batches and noise stay within torch's range


def _parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(
        prog="vaekit-demo",
        description="Train a VAE with vaekit's components and draw what they do. Default data: "
        "the 1,797 8x8 handwritten digits bundled with scikit-learn.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", help="an .npy/.npz/.pt array, (N, C, H, W) or (N, D), in [0, 1]")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the data")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    p.add_argument("--latent-dim", type=int, default=d.latent_dim, help="latent units")
    p.add_argument(
        "--schedule",
        default="constant",
        help=f"one of {','.join(SCHEDULES)}, or a comma-separated list to compare",
    )
    p.add_argument("--beta", type=float, default=d.beta, help="the final or constant beta")
    p.add_argument(
        "--loss",
        choices=LOSSES,
        default=d.loss,
        help="vae: recon + beta * KL; tcvae: recon + I(x; z) + beta * TC + dimension-wise KL",
    )
    p.add_argument(
        "--tc-beta",
        type=float,
        default=d.tc_beta,
        help="with --loss tcvae: the final or constant TC weight (in place of --beta)",
    )
    p.add_argument("--free-bits", type=float, default=d.free_bits, help="nats per latent")
    p.add_argument("--recon", choices=RECONS, default=d.recon, help="reconstruction loss")
    p.add_argument(
        "--recon-var",
        choices=("optimal", "learned"),
        help="the decoder variance of a gaussian or discretized recon: the batch optimum or a "
        "learned one (a calibrated decoder, the sigma-VAE); default 1",
    )
    p.add_argument(
        "--num-bins",
        type=int,
        help="the levels of the data, for the discretized likelihoods and the test NLL "
        "(default: 17 for the digits, 256 for --data)",
    )
    p.add_argument(
        "--test-fraction", type=float, default=d.test_fraction, help="held-out test share"
    )
    p.add_argument(
        "--iw-samples",
        type=int,
        default=d.iw_samples,
        help="posterior samples per test point of the importance-weighted NLL",
    )
    p.add_argument("--target-kl", type=float, default=d.target_kl, help="KL target of 'pi'")
    p.add_argument(
        "--recon-goal", type=float, default=d.recon_goal, help="reconstruction goal of 'geco'"
    )
    p.add_argument("--lr", type=float, default=d.lr, help="Adam's learning rate")
    p.add_argument(
        "--seed", type=int, default=d.seed, help="seed of data order and init, 0 to 2**32 - 1"
    )
    p.add_argument("--out", default="vaekit-out", help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="data-parallel processes (gloo on CPU, NCCL on GPUs)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vaekit-demo`` with ``argv`` (default: the command line); returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    schedules = _check_arguments(parser, args)
    try:
        n = len(split_data(load_data(args.data), args.test_fraction)[0])
    except DataError as err:
        return _fail(str(err))
    if n < args.nproc_per_node:
        parser.error(
            f"--nproc-per-node should be <= the {n} training samples, but given "
            f"{args.nproc_per_node}"
        )
    config = _config(args)
    problem = _check_tcvae(config, n) or _check_settings(config, schedules, args.device)
    if problem:
        parser.error(problem)
    outs = {s: args.out if len(schedules) == 1 else args.out / s for s in schedules}
    problem = (_check_resume(config, outs) if args.resume else None) or _check_out(outs)
    if problem:
        return _fail(problem)
    try:
        launch(config, outs, resume=args.resume, device=args.device)
    except RunError as err:
        return _fail(str(err), err.exit_code)
    except KeyboardInterrupt:
        print(
            f"\nvaekit-demo: interrupted; the last checkpoint is in {args.out}: run the same "
            "command with --resume to continue",
            file=sys.stderr,
        )
        return 130
    _summarize(config, outs, args.out)
    return 0


def _fail(message: str, exit_code: int = 2) -> int:
    print(f"vaekit-demo: error: {message}", file=sys.stderr)
    return exit_code


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Exit through ``parser.error`` on an argument that is wrong by itself; return the
    schedules to train. ``args.out`` becomes a Path."""
    schedules = [s.strip() for s in args.schedule.split(",") if s.strip()]
    unknown = [s for s in schedules if s not in SCHEDULES]
    if not schedules or unknown or len(set(schedules)) != len(schedules):
        parser.error(
            f"--schedule should list distinct names of {', '.join(SCHEDULES)}, "
            f"but given {args.schedule!r}"
        )
    for name in ("epochs", "batch_size", "latent_dim", "nproc_per_node", "iw_samples"):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')} should be >= 1, but given {getattr(args, name)}"
            )
    if not 0 < args.lr < math.inf:
        parser.error(f"--lr should be a finite number > 0, but given {args.lr}")
    if not 0 <= args.seed <= _MAX_SEED:
        parser.error(f"--seed should be an int in [0, 2**32 - 1], but given {args.seed}")
    if not 0 < args.test_fraction < 1:
        parser.error(f"--test-fraction should be in (0, 1), but given {args.test_fraction}")
    if args.num_bins is not None and args.num_bins < 2:
        parser.error(f"--num-bins should be >= 2, but given {args.num_bins}")
    if args.recon_var is not None and args.recon not in _SCALED:
        parser.error(
            f"--recon-var needs --recon {', '.join(_SCALED)}, but given --recon {args.recon}"
        )
    discretized = args.recon.startswith("discretized_")
    if args.loss == "tcvae" and (args.recon_var is not None or discretized):
        parser.error(
            "--loss tcvae trains its decoder with variance 1 on 256 levels: --recon-var and the "
            "discretized recons need --loss vae"
        )
    if not args.out.strip():
        parser.error(f"--out should name a directory, but given {args.out!r}")
    args.out = Path(args.out)
    return schedules


def _config(args: argparse.Namespace) -> DemoConfig:
    """The settings: each field from the argument of its name, with the data path as a str and
    the data's default number of levels."""
    settings = {field.name: getattr(args, field.name) for field in dataclasses.fields(DemoConfig)}
    settings["data"] = None if args.data is None else str(args.data)
    settings["num_bins"] = args.num_bins or (17 if args.data is None else 256)
    return DemoConfig(**settings)


def _summarize(config: DemoConfig, outs: dict[str, Path], out: Path) -> None:
    """Print the table of the runs, and draw their comparison when there are several."""
    runs = {s: read_csv(o / "metrics.csv") for s, o in outs.items()}
    tests = {s: read_test_json(o / "test.json") for s, o in outs.items()}
    print(format_table(runs, config.latent_dim, tests))
    if len(outs) > 1:
        write_compare(out / "compare.png", runs)
    print(
        f"wrote {', '.join(sorted({str(o) for o in outs.values()}))}"
        + (f" and {out / 'compare.png'}" if len(outs) > 1 else "")
    )


def _check_settings(config: DemoConfig, schedules: list[str], device: str) -> str | None:
    """What is wrong with the settings, in the components' own words, or None."""
    if math.isfinite(config.free_bits) and config.free_bits > torch.finfo(torch.float32).max:
        return f"--free-bits should be a finite float32 number, but given {config.free_bits:g}"
    try:
        kind = torch.device(device).type
        recon_var = LearnedVariance() if config.recon_var == "learned" else config.recon_var
        VAELoss(
            config.recon,
            beta=config.beta,
            free_bits=config.free_bits,
            recon_var=recon_var,
            num_bins=config.num_bins,
        )
        for schedule in schedules:
            build_beta(schedule, config, total_steps=config.epochs)
    except (RuntimeError, TypeError, ValueError) as err:
        return str(err).splitlines()[0]
    if kind == "meta":
        return f"--device should hold data (cpu, cuda, ...), but given {device!r}"
    if kind == "cuda" and not torch.cuda.is_available():
        return f"--device {device} is not available: torch sees no CUDA device"
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as err:  # torch asserts on a backend it lacks
        return f"--device {device} is not available: {str(err).splitlines()[0]}"
    return None


def _check_tcvae(config: DemoConfig, n: int) -> str | None:
    """Why ``--loss tcvae`` cannot train on ``n`` samples, or None: its estimator of the total
    correlation needs at least 2 data points in every batch of every process."""
    if config.loss != "tcvae":
        return None
    try:
        BetaTCVAELoss(config.recon, dataset_size=n, beta=config.tc_beta)
    except (TypeError, ValueError) as err:
        return str(err).replace("Argument beta ", "--tc-beta ", 1)
    world = config.nproc_per_node
    per_process = -(-config.batch_size // world)
    last = (n // world) % per_process
    if per_process < 2 or last == 1:
        return (
            f"--loss tcvae needs at least 2 samples in every batch of every process, but "
            f"--batch-size {config.batch_size} leaves batches of 1 (of {n} samples in {world} "
            "process(es)); choose another --batch-size"
        )
    return None


def _check_out(outs: dict[str, Path]) -> str | None:
    """Why the run cannot write its outputs, or None; creates the directories it will write."""
    for out in outs.values():
        target = out / "checkpoints"
        existing = next((p for p in (target, *target.parents) if p.exists()), Path("."))
        if not existing.is_dir():
            return f"--out {out} should be a writable directory, but {existing} is not a directory"
        try:
            target.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=target):
                pass
        except OSError as err:
            return (
                f"--out {out} should be a writable directory, but {target} cannot be written "
                f"({err.strerror or type(err).__name__})"
            )
    return None


def _check_resume(config: DemoConfig, outs: dict[str, Path]) -> str | None:
    """Why ``--resume`` cannot continue, or None; a schedule not yet started starts afresh."""
    started = [out for out in outs.values() if demo_checkpoints(out / "checkpoints")]
    if not started:
        where = ", ".join(str(out / "checkpoints") for out in outs.values())
        return f"--resume: no checkpoint in {where}; run without --resume"
    now = config.to_dict()
    for out in started:
        path = out / "config.json"
        try:
            saved = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            reason = "it is missing" if isinstance(err, FileNotFoundError) else f"({err})"
            return (
                f"--resume needs the settings in {path}, but {reason}; restore it, or run "
                "without --resume to start afresh"
            )
        if not isinstance(saved, dict) or set(saved) != set(now):
            return (
                f"--resume needs the settings in {path}, but it does not hold the demo's "
                "settings; restore it, or run without --resume to start afresh"
            )
        changed = [
            f"--{k.replace('_', '-')} was {v!r}, now {now.get(k)!r}"
            for k, v in saved.items()
            if now.get(k) != v
        ]
        if changed:
            return f"--resume needs the settings of the run it continues: {'; '.join(changed)}"
    return None


if __name__ == "__main__":
    sys.exit(main())
