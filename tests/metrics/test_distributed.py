"""Two gloo processes with uneven shards compute the single-process result, on every rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import vaekit.handlers  # noqa: F401  (imports ignite with torch.jit's deprecations filtered)
from tests.metrics._dist_metrics import make_batches, run_engine, run_metrics

SCRIPT = Path(__file__).with_name("_dist_metrics.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("dist")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(_free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    return run_metrics(make_batches())


@pytest.mark.slow
def test_every_rank_computes_the_single_process_result(
    ranks: list[dict[str, Any]], single: dict[str, Any]
) -> None:
    for r in ranks:
        assert r["au"].item() == single["au"].item()
        for key in ("ratio", "kl", "au_variance"):
            torch.testing.assert_close(r[key], single[key], rtol=1e-12, atol=1e-12)
    for key in ("ratio", "au", "kl", "au_variance"):
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # bitwise the same everywhere


@pytest.mark.slow
def test_against_float64_references(ranks: list[dict[str, Any]]) -> None:
    data = make_batches()
    cat = {k: torch.cat([b[k] for b in data]).double() for k in data[0]}
    variance = cat["mu"].var(dim=0, correction=0)
    torch.testing.assert_close(ranks[0]["au_variance"], variance, rtol=1e-9, atol=1e-12)
    assert ranks[0]["au"].item() == (variance > 0.01).sum().item() == 3
    ratio = cat["recon"].sum() / cat["kl"].sum()
    torch.testing.assert_close(ranks[0]["ratio"], ratio, rtol=1e-12, atol=0)


@pytest.mark.slow
def test_the_bridge_adds_no_second_reduction(ranks: list[dict[str, Any]]) -> None:
    expected = run_engine(make_batches())
    for r in ranks:
        assert r["engine"]["au"] == expected["au"]
        assert r["engine"]["ratio"] == pytest.approx(expected["ratio"], rel=1e-12)
        torch.testing.assert_close(r["engine"]["kl"], expected["kl"], rtol=1e-12, atol=1e-12)
