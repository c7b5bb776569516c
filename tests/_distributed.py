"""The one launcher of the multi-process tests, and the body their rank scripts share.

:func:`spawn_ranks` starts ``world_size`` processes of ``python SCRIPT OUT_DIR`` with the
environment ``torchrun`` would give them (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT`` on the loopback), and loads what each saved to
``OUT_DIR/rank<r>.pt``. Starting the ranks directly saves the start-up of a launcher process.
A rank that fails ends the others at once, and ranks that hang are killed with their process
groups at a deadline, so a collective mismatch fails a test instead of hanging it.

An Ignite rank script ends with ``rank_main(run)``; a Lightning one lets ``Trainer`` read the
same environment (a set ``LOCAL_RANK`` tells it that the processes are started for it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch

from vaekit._distributed import free_port

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = timedelta(seconds=60)  # of each collective: a mismatch fails instead of hanging
LAUNCH_TIMEOUT_S = 120.0  # of the whole launch


def spawn_ranks(
    script: Path, out: Path, world_size: int = 2, *, timeout: float = LAUNCH_TIMEOUT_S
) -> list[Any]:
    """Run ``script`` as ``world_size`` gloo ranks and return what each saved, in rank order."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    env.setdefault("GLOO_SOCKET_IFNAME", "lo0" if sys.platform == "darwin" else "lo")
    logs = [out / f"rank{rank}.log" for rank in range(world_size)]
    procs = []
    try:
        for rank, log in enumerate(logs):
            with log.open("w") as output:  # a file, so that no rank blocks on a full pipe
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(script), str(out)],
                        env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # killable with whatever it spawns
                    )
                )
        hung = not _wait(procs, timeout)
    finally:
        for proc in procs:
            _kill(proc)
    output = "\n".join(f"--- rank {r}:\n{log.read_text()[-3000:]}" for r, log in enumerate(logs))
    if hung:
        pytest.fail(f"{script.name} did not finish in {timeout} s\n{output}")
    assert [proc.returncode for proc in procs] == [0] * world_size, output
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(world_size)]


def _wait(procs: list[subprocess.Popen[bytes]], timeout: float) -> bool:
    """Whether every process ended by the deadline; a failed one ends the wait at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [proc.poll() for proc in procs]
        if all(code is not None for code in codes) or any(code for code in codes):
            return True
        time.sleep(0.05)
    return False


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # it ended in between
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def rank_main(run: Callable[[Path], Any]) -> None:
    """The body of an Ignite rank script: join the group that :func:`spawn_ranks` describes,
    save what ``run(OUT_DIR)`` returns to ``OUT_DIR/rank<r>.pt``, and leave the group."""
    import ignite.distributed as idist

    out = Path(sys.argv[1])
    idist.initialize("gloo", timeout=TIMEOUT)
    try:
        result = run(out)
        torch.save(result, out / f"rank{idist.get_rank()}.pt")
    finally:
        idist.finalize()
