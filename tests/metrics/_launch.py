"""Launch a two-rank gloo script and load what each rank saved.

A script run as ``python SCRIPT OUT_DIR PORT`` spawns two gloo processes on the loopback, each of
which saves ``OUT_DIR/rank<r>.pt``. Its collectives time out, and a launch that still hangs is
killed with its process group, so a collective mismatch fails a test instead of hanging it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

SRC = Path(__file__).resolve().parents[2] / "src"
LAUNCH_TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(script: Path, out: Path) -> list[Any]:
    """Run ``script OUT PORT`` (two gloo ranks) and load what each rank saved."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), str(_free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, with the ranks it spawns
    )
    try:
        _, err = proc.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"{script.name} hung for {LAUNCH_TIMEOUT} s: {err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
