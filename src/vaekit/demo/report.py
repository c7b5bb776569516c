"""What a run writes: ``metrics.csv``, ``report.png``, ``samples.png``, ``compare.png``, tables."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from vaekit.demo.model import VAE

__all__ = [
    "format_table",
    "read_csv",
    "write_compare",
    "write_csv",
    "write_report",
    "write_samples",
]

Rows = Sequence[Mapping[str, float]]
_COLUMNS = (
    "epoch",
    "iteration",
    "beta",
    "loss",
    "recon",
    "kl",
    "recon_kl_ratio",
    "active_units",
    "train_loss",
    "mi",
    "marginal_kl",
    "tc",
    "dim_kl",
)


def write_csv(path: Path, rows: Rows) -> None:
    """One row per epoch: the columns of ``_COLUMNS``, then ``kl_per_dim_<j>`` per latent."""
    extra = [k for k in rows[0] if k not in _COLUMNS] if rows else []
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*_COLUMNS, *extra])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(k, v) for k, v in row.items()})


def read_csv(path: Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv``, as floats."""
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _fmt(key: str, value: float) -> str:
    return str(int(value)) if key in ("epoch", "iteration") else repr(float(value))


def _column(rows: Rows, key: str) -> np.ndarray:
    return np.array([row[key] for row in rows])


def _kl_matrix(rows: Rows) -> np.ndarray:
    keys = sorted(
        (k for k in rows[0] if k.startswith("kl_per_dim_")), key=lambda k: int(k.rsplit("_", 1)[1])
    )
    return np.array([[row[k] for row in rows] for k in keys])  # (latent, epoch)


def write_report(
    path: Path,
    rows: Rows,
    betas: Sequence[float],
    title: str,
    *,
    dataset_size: int | None = None,
) -> None:
    """Loss terms, beta, recon/KL ratio, active units, KL per latent, and the KL split by the
    aggregate posterior over training; ``dataset_size`` :math:`N` draws the :math:`\\log N`
    cap of the estimate of :math:`I(x; z)`. Where the rows have a ``sigma`` (a calibrated
    decoder), the beta panel draws it too."""
    epoch = _column(rows, "epoch")
    fig = Figure(figsize=(17, 7), layout="constrained")  # no pyplot: no global backend state
    axes = fig.subplots(2, 4)
    fig.suptitle(title)
    ax = axes[0, 0]
    for key in ("loss", "recon", "kl"):
        ax.plot(epoch, _column(rows, key), label=key)
    ax.set(title="Loss terms (nats per data point)", xlabel="epoch")
    ax.legend()
    ax = axes[0, 1]
    ax.plot(np.arange(1, len(betas) + 1) * epoch[-1] / max(1, len(betas)), betas)
    ax.set(title="beta (per iteration)", xlabel="epoch", ylim=(0, None))
    if "sigma" in rows[0]:
        twin = ax.twinx()
        twin.plot(epoch, _column(rows, "sigma"), color="C3", marker=".")
        twin.set(ylim=(0, None))
        twin.tick_params(axis="y", colors="C3")
        ax.set(title="beta, and decoder sigma (red, right)")
    ax = axes[0, 2]
    ratio = _column(rows, "recon_kl_ratio")
    ax.plot(epoch, ratio)
    # A continuous density's reconstruction term, and so the ratio, can be negative.
    scale = "log" if (ratio > 0).all() else "symlog"
    ax.set(title="recon / KL ratio", xlabel="epoch", yscale=scale)
    kl = _kl_matrix(rows)
    ax = axes[1, 0]
    ax.plot(epoch, _column(rows, "active_units"), marker=".")
    ax.set(title="Active units (Var[mu] > 0.01)", xlabel="epoch", ylim=(-0.3, kl.shape[0] + 0.3))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax = axes[1, 1]
    image = ax.imshow(
        kl,
        aspect="auto",
        origin="lower",
        cmap="viridis",
        extent=(epoch[0] - 0.5, epoch[-1] + 0.5, -0.5, kl.shape[0] - 0.5),
    )
    ax.set(title="KL per latent dimension (nats)", xlabel="epoch", ylabel="latent dimension")
    fig.colorbar(image, ax=ax)
    ax = axes[1, 2]
    ax.bar(np.arange(kl.shape[0]), np.maximum(kl[:, -1], 1e-6))
    ax.axhline(0.01, color="k", linestyle=":", label="0.01 nats")
    ax.set(title="KL per latent dimension, last epoch", xlabel="latent dimension", ylabel="nats")
    ax.set(yscale="log", ylim=(1e-6, None))
    ax.legend()
    _draw_aggregate(axes[0, 3], axes[1, 3], rows, dataset_size)
    fig.savefig(path, dpi=80)


def _draw_aggregate(top: Any, bottom: Any, rows: Rows, dataset_size: int | None) -> None:
    """The KL as I(x; z) + KL(q(z) || p(z)), and that marginal KL as TC + dimension-wise KL."""
    epoch = _column(rows, "epoch")
    for key, label in (("kl", "KL"), ("mi", "I(x; z)"), ("marginal_kl", "KL(q(z) || p(z))")):
        top.plot(epoch, _column(rows, key), label=label)
    if dataset_size is not None:
        top.axhline(math.log(dataset_size), color="k", linestyle=":", label="log N, the cap")
    top.set(title="KL = I(x; z) + KL(q(z) || p(z))", xlabel="epoch", ylabel="nats")
    top.legend()
    for key, label in (("marginal_kl", "KL(q(z) || p(z))"), ("tc", "total correlation")):
        bottom.plot(epoch, _column(rows, key), label=label)
    bottom.plot(epoch, _column(rows, "dim_kl"), label="dimension-wise KL")
    bottom.set(title="KL(q(z) || p(z)) = TC + dim-wise KL", xlabel="epoch", ylabel="nats")
    bottom.legend()


def _mosaic(x: Tensor, columns: int) -> np.ndarray:
    """Tile ``(N, C, H, W)`` or ``(N, D)`` samples into one image, ``columns`` per row."""
    x = x.detach().cpu().float().clamp(0, 1)
    if x.dim() == 2:
        side = math.isqrt(x.shape[1])
        x = x.view(len(x), 1, side, side) if side * side == x.shape[1] else x.view(len(x), 1, 1, -1)
    if x.shape[1] not in (1, 3):
        x = x[:, :1]
    n, c, h, w = x.shape
    rows = math.ceil(n / columns)
    grid = torch.ones(c, rows * (h + 1) + 1, columns * (w + 1) + 1)
    for i in range(n):
        r, k = divmod(i, columns)
        grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + k * (w + 1) : 1 + k * (w + 1) + w] = x[i]
    return np.asarray(grid.permute(1, 2, 0).squeeze(-1).numpy())


@torch.no_grad()
def write_samples(path: Path, model: VAE, x: Tensor, latent_dim: int, seed: int) -> None:
    """Originals beside their reconstructions, and samples decoded from the prior."""
    device = next(model.parameters()).device
    model.eval()
    originals = x[:16].to(device)
    logits, _ = model(originals)
    g = torch.Generator().manual_seed(seed)
    prior = torch.sigmoid(model.decoder(torch.randn(32, latent_dim, generator=g).to(device)))
    panels = [
        ("originals", originals),
        ("reconstructions", torch.sigmoid(logits)),
        ("samples from the prior N(0, I)", prior),
    ]
    # Vectors that are not square images are drawn as strips, two to a row.
    d = x[0].numel()
    columns = 2 if x.dim() == 2 and math.isqrt(d) ** 2 != d else 16
    mosaics = [(name, _mosaic(images, columns)) for name, images in panels]
    heights = [m.shape[0] / m.shape[1] for _, m in mosaics]
    fig = Figure(figsize=(8, min(10.0, 0.5 + 8.5 * sum(heights))), layout="constrained")
    axes = fig.subplots(3, 1, gridspec_kw={"height_ratios": heights})
    for ax, (name, mosaic) in zip(axes, mosaics, strict=True):
        ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1, aspect="auto")
        ax.set_title(name)
        ax.axis("off")
    fig.savefig(path, dpi=80)


def write_compare(path: Path, runs: Mapping[str, Rows]) -> None:
    """KL, reconstruction, active units and beta over training, one line per schedule."""
    fig = Figure(figsize=(12, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    fig.suptitle("Schedules compared on the same data and seed")
    panels = [
        ("kl", "KL (nats per data point)"),
        ("recon", "Reconstruction (nats per data point)"),
        ("active_units", "Active units"),
        ("beta", "beta at the end of each epoch"),
    ]
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        for name, rows in runs.items():
            ax.plot(_column(rows, "epoch"), _column(rows, key), label=name, marker=".")
        ax.set(title=title, xlabel="epoch")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", title="--schedule")
    fig.savefig(path, dpi=80)


def format_table(
    runs: Mapping[str, Rows],
    latent_dim: int,
    tests: Mapping[str, Mapping[str, float] | None] | None = None,
) -> str:
    """The last epoch of each run, one line per schedule, with its test NLL if ``tests`` has
    one (nats per data point and bits per dimension, see :mod:`vaekit.demo.evaluate`).

    Example:
        >>> from vaekit.demo.report import format_table
        >>> row = {"epoch": 3, "beta": 1.0, "loss": 30.0, "recon": 20.0, "kl": 10.0,
        ...        "recon_kl_ratio": 2.0, "active_units": 5, "mi": 6.5, "marginal_kl": 3.5}
        >>> print(format_table({"constant": [row]}, latent_dim=8))
        schedule  epochs    loss   recon      kl  I(x;z)  KL(q(z))    beta  recon/kl  active units
        constant       3  30.000  20.000  10.000   6.500     3.500  1.0000     2.000           5/8
        >>> test = {"nll": 118.25, "bits_per_dim": 2.6656}
        >>> print(format_table({"constant": [row]}, latent_dim=8, tests={"constant": test}))
        schedule  epochs    loss   recon      kl  I(x;z)  KL(q(z))    beta  recon/kl  active units
          test nll  bits/dim
        constant       3  30.000  20.000  10.000   6.500     3.500  1.0000     2.000           5/8
           118.250     2.666
    """
    header = f"{'schedule':<9} {'epochs':>6} {'loss':>7} {'recon':>7} {'kl':>7} "
    header += f"{'I(x;z)':>7} {'KL(q(z))':>9} {'beta':>7} "
    header += f"{'recon/kl':>9} {'active units':>13}"
    lines = [header + (f" {'test nll':>9} {'bits/dim':>9}" if tests else "")]
    for name, rows in runs.items():
        r = rows[-1]
        line = (
            f"{name:<9} {int(r['epoch']):>6} {r['loss']:>7.3f} {r['recon']:>7.3f} {r['kl']:>7.3f} "
            f"{r['mi']:>7.3f} {r['marginal_kl']:>9.3f} "
            f"{r['beta']:>7.4f} {r['recon_kl_ratio']:>9.3f} "
            f"{str(int(r['active_units'])) + '/' + str(latent_dim):>13}"
        )
        test = (tests or {}).get(name)
        if test is not None:
            line += f" {test['nll']:>9.3f} {test['bits_per_dim']:>9.3f}"
        lines.append(line)
    return "\n".join(lines)
