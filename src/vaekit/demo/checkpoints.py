"""The demo's checkpoints: written atomically, and resumed from the newest one that loads.

Ignite's :class:`~ignite.handlers.checkpoint.Checkpoint` builds the checkpoint and its file name
(``checkpoint_<iteration>.pt``); :class:`AtomicSaver` writes it. Which files are kept is read
from the directory after each write, never from a list saved in a checkpoint: a list of that
kind names files that a kill, or a user, may since have removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.handlers import Checkpoint
from ignite.handlers.checkpoint import BaseSaveHandler

__all__ = ["AtomicSaver", "demo_checkpoints", "load_newest", "remove_checkpoints"]

_NAME = re.compile(r"checkpoint_(\d+)\.pt")
_PATTERN = "checkpoint_<iteration>.pt"


class AtomicSaver(BaseSaveHandler):
    """Writes a checkpoint completely or not at all, then keeps the ``keep`` newest.

    The checkpoint goes to a temporary file in the same directory, which is flushed and synced
    to disk, renamed over the final name (atomic on POSIX and Windows), and the directory synced:
    a kill at any point leaves either the old files or the new one complete, never a partial
    file under a checkpoint's name. Only then are older checkpoints removed, so a complete one is
    always on disk. In a process group only rank 0 writes.

    Args:
        dirname: the directory, created if missing.
        keep: how many checkpoints to keep, the one just written included.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from vaekit.demo.checkpoints import AtomicSaver, demo_checkpoints
        >>> folder = Path(tempfile.mkdtemp())
        >>> saver = AtomicSaver(folder, keep=2)
        >>> for step in (7, 14, 21):
        ...     saver({"step": step}, f"checkpoint_{step}.pt")
        >>> [step for step, _ in demo_checkpoints(folder)]
        [21, 14]
    """

    def __init__(self, dirname: Path, *, keep: int = 2) -> None:
        self.dirname = Path(dirname)
        self.keep = keep

    def __call__(
        self,
        checkpoint: Mapping[str, Any],
        filename: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if idist.get_rank() != 0:
            return
        self.dirname.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dirname, prefix=f".{filename}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, os.stat(tmp).st_mode | stat.S_IRGRP | stat.S_IROTH)
            os.replace(tmp, self.dirname / filename)
        except BaseException:  # a Ctrl-C in the middle of a write too: no partial file stays
            Path(tmp).unlink(missing_ok=True)
            raise
        _sync_directory(self.dirname)
        match = _NAME.fullmatch(filename)
        self._prune(int(match[1]) if match else None)

    def _prune(self, written: int | None) -> None:
        """Remove what a resumed run no longer needs: the older checkpoints beyond ``keep``,
        any of a later step (left by the run this one replays), and partial temporary files."""
        found = demo_checkpoints(self.dirname)
        kept = [s for s, _ in found if written is None or s <= written][: self.keep]
        for step, path in found:
            if step not in kept:
                path.unlink(missing_ok=True)
        for tmp in self.dirname.glob(".checkpoint_*.tmp"):
            tmp.unlink(missing_ok=True)
        _sync_directory(self.dirname)

    def remove(self, filename: str) -> None:
        """Remove ``filename`` if it is there (the kept files are managed after each write)."""
        if idist.get_rank() == 0:
            (self.dirname / filename).unlink(missing_ok=True)


def _sync_directory(dirname: Path) -> None:
    """Make the renames and removals in ``dirname`` durable (a no-op where unsupported)."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:  # pragma: no cover - Windows: the rename itself is durable
        return
    fd = os.open(dirname, os.O_RDONLY | flags)
    try:
        with contextlib.suppress(OSError):  # some file systems refuse to sync a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def demo_checkpoints(dirname: Path) -> list[tuple[int, Path]]:
    """The files named ``checkpoint_<iteration>.pt`` in ``dirname``, newest first.

    Example:
        >>> from pathlib import Path
        >>> from vaekit.demo.checkpoints import demo_checkpoints
        >>> demo_checkpoints(Path("no-such-directory"))
        []
    """
    if not dirname.is_dir():
        return []
    found = [(int(m[1]), p) for p in dirname.iterdir() if (m := _NAME.fullmatch(p.name))]
    return sorted(found, key=lambda item: item[0], reverse=True)


def _strays(dirname: Path) -> list[Path]:
    """Files that look like checkpoints but are not named as the demo names them."""
    if not dirname.is_dir():
        return []
    return sorted(p for p in dirname.glob("checkpoint_*.pt") if not _NAME.fullmatch(p.name))


def remove_checkpoints(dirname: Path) -> None:
    """Remove the demo's checkpoints and temporary files in ``dirname`` (a fresh run's start);
    any other file stays."""
    for _, path in demo_checkpoints(dirname):
        path.unlink(missing_ok=True)
    if dirname.is_dir():
        for tmp in dirname.glob(".checkpoint_*.tmp"):
            tmp.unlink(missing_ok=True)


def load_newest(
    dirname: Path, to_load: Mapping[str, Any], report: Callable[[str], None]
) -> Path | None:
    """Load the newest checkpoint of ``dirname`` that loads into ``to_load``; return its path.

    A checkpoint that cannot be read (truncated, damaged) or does not fit the objects is
    skipped for the next older one, and a file named like a checkpoint but not
    ``checkpoint_<iteration>.pt`` is ignored, each with a one-line ``report``. Every object's
    ``load_state_dict`` replaces its whole state, so a checkpoint that failed part-way leaves
    nothing behind once an older one has loaded. Returns ``None`` when none loads.
    """
    for path in _strays(dirname):
        report(f"--resume ignores {path}: the demo names its checkpoints {_PATTERN}")
    for _, path in demo_checkpoints(dirname):
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # any reader error: the file is not usable
            report(f"--resume skips {path}: it cannot be read ({_first_line(err)})")
            continue
        missing = sorted(set(to_load) - set(checkpoint)) if isinstance(checkpoint, dict) else None
        if missing is None or missing:
            held = "no dict" if missing is None else f"no {', '.join(missing)}"
            report(f"--resume skips {path}: it holds {held}")
            continue
        try:
            Checkpoint.load_objects(to_load, {key: checkpoint[key] for key in to_load})
        except Exception as err:  # a state the objects refuse
            report(f"--resume skips {path}: it does not fit this run ({_first_line(err)})")
            continue
        return path
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
