"""vaekit.demo.report: the CSV, the image mosaics and the figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vaekit.demo.model import VAE
from vaekit.demo.report import (
    _mosaic,
    format_table,
    read_csv,
    write_compare,
    write_csv,
    write_report,
    write_samples,
)


def _rows(epochs: int, latent: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(0)
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "iteration": 10 * e, "beta": e / epochs, "loss": 30 - e, "recon": 25 - e}
        row |= {"kl": 5.0, "recon_kl_ratio": (25 - e) / 5, "active_units": 2, "train_loss": 31 - e}
        row |= {"mi": 3.0 + e / 10, "marginal_kl": 2.0 - e / 10, "tc": 0.5, "dim_kl": 1.5 - e / 10}
        row |= {f"kl_per_dim_{j}": float(rng.random()) for j in range(latent)}
        rows.append(row)
    return rows


def test_csv_round_trip_is_exact(tmp_path: Path):
    rows = _rows(3, latent=2)
    rows[0]["kl"] = 0.1 + 0.2  # repr keeps every digit
    write_csv(tmp_path / "m.csv", rows)
    header = (tmp_path / "m.csv").read_text().splitlines()[0]
    assert header == (
        "epoch,iteration,beta,loss,recon,kl,recon_kl_ratio,active_units,train_loss,"
        "mi,marginal_kl,tc,dim_kl,kl_per_dim_0,kl_per_dim_1"
    )
    assert read_csv(tmp_path / "m.csv") == [{k: float(v) for k, v in r.items()} for r in rows]


def test_mosaic_tiles_images_and_vectors():
    x = torch.arange(6.0).view(6, 1, 1, 1) / 10
    grid = _mosaic(x, columns=4)  # 2 rows of 4 tiles of 1x1, 1-pixel white borders
    assert grid.shape == (5, 9)
    assert grid[1, 1::2].tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert grid[3, 1:4:2].tolist() == pytest.approx([0.4, 0.5])
    assert grid[3, 5] == 1.0  # the empty slot stays blank
    assert _mosaic(torch.rand(3, 16), columns=3).shape == (6, 16)  # 4x4 squares
    assert _mosaic(torch.rand(3, 5), columns=3).shape == (3, 19)  # 1x5 strips
    assert _mosaic(torch.rand(2, 3, 4, 4), columns=2).shape == (6, 11, 3)  # RGB
    assert _mosaic(torch.rand(2, 2, 4, 4), columns=2).shape == (6, 11)  # first channel


def test_figures_are_written(tmp_path: Path):
    rows = _rows(4, latent=3)
    write_report(tmp_path / "r.png", rows, [0.1] * 40, "title", dataset_size=1797)
    write_report(tmp_path / "r2.png", rows, [0.1] * 40, "title")  # no log N line
    write_compare(tmp_path / "c.png", {"constant": rows, "pi": rows})
    torch.manual_seed(0)
    write_samples(tmp_path / "s.png", VAE((5,), latent_dim=3, hidden=8), torch.rand(20, 5), 3, 0)
    for name in ("r.png", "r2.png", "c.png", "s.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_table_lists_the_last_epoch_of_each_run():
    table = format_table({"constant": _rows(2, 1), "linear": _rows(3, 1)}, latent_dim=4)
    lines = table.splitlines()
    assert lines[0].split()[5:7] == ["I(x;z)", "KL(q(z))"]
    assert lines[1].split() == [
        "constant",
        "2",
        "28.000",
        "23.000",
        "5.000",
        "3.200",
        "1.800",
        "1.0000",
        "4.600",
        "2/4",
    ]
    assert lines[2].split() == [
        "linear",
        "3",
        "27.000",
        "22.000",
        "5.000",
        "3.300",
        "1.700",
        "1.0000",
        "4.400",
        "2/4",
    ]


def test_a_calibrated_decoder_draws_its_sigma(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rows = [dict(r, sigma=0.5 / r["epoch"]) for r in _rows(4, latent=3)]
    drawn = []
    original = Axes.twinx

    def twinx(self):
        twin = original(self)
        drawn.append(twin)
        return twin

    monkeypatch.setattr(Axes, "twinx", twinx)
    write_report(tmp_path / "r.png", rows, [0.1] * 40, "title")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    (twin,) = drawn
    assert twin.lines[0].get_ydata().tolist() == [0.5, 0.25, 0.5 / 3, 0.125]
    write_report(tmp_path / "plain.png", _rows(4, latent=3), [0.1] * 40, "title")
    assert len(drawn) == 1  # no sigma, no second axis


def test_a_negative_recon_kl_ratio_is_drawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A continuous density's reconstruction term is negative once it fits well.
    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *args, **kwargs: figures.append(fig))
    rows = [dict(r, recon_kl_ratio=r["recon_kl_ratio"] - 4.5) for r in _rows(4, latent=3)]
    write_report(tmp_path / "r.png", rows, [0.1] * 40, "title")
    write_report(tmp_path / "r.png", _rows(4, latent=3), [0.1] * 40, "title")
    ratio_axes = [fig.axes[2] for fig in figures]
    assert [ax.get_title() for ax in ratio_axes] == ["recon / KL ratio"] * 2
    assert [ax.get_yscale() for ax in ratio_axes] == ["symlog", "log"]


def test_table_adds_the_test_nll_of_each_run_that_has_one():
    tests = {"constant": {"nll": 101.25, "bits_per_dim": 2.28125}, "linear": None}
    lines = format_table({"constant": _rows(2, 1), "linear": _rows(3, 1)}, 4, tests).splitlines()
    assert lines[0].endswith("test nll  bits/dim")
    assert lines[1].split()[-2:] == ["101.250", "2.281"]
    assert lines[2].split()[-1] == "2/4"  # no test evaluation: no value
