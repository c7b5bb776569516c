"""vaekit.demo.checkpoints: atomic writes, kept files read from the directory, resume that skips
what does not load."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from vaekit.demo.checkpoints import AtomicSaver, demo_checkpoints, load_newest, remove_checkpoints


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_keeps_the_newest_two_and_drops_later_steps_and_partial_files(tmp_path: Path) -> None:
    saver = AtomicSaver(tmp_path, keep=2)
    (tmp_path / ".checkpoint_9.pt.abc.tmp").write_bytes(b"partial")  # left by a kill
    (tmp_path / "checkpoint_40.pt").write_bytes(b"from the run this one replays")
    (tmp_path / "notes.txt").write_text("mine")
    for step in (7, 14, 21):
        saver({"step": torch.tensor(step)}, f"checkpoint_{step}.pt")
    assert _names(tmp_path) == ["checkpoint_14.pt", "checkpoint_21.pt", "notes.txt"]
    loaded = torch.load(tmp_path / "checkpoint_21.pt", weights_only=True)
    assert loaded["step"].item() == 21


def test_an_interrupted_write_leaves_the_old_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saver = AtomicSaver(tmp_path, keep=2)
    saver({"step": 7}, "checkpoint_7.pt")
    before = (tmp_path / "checkpoint_7.pt").read_bytes()

    def half_then_ctrl_c(obj: Any, f: io.BufferedWriter, *args: Any, **kwargs: Any) -> None:
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        saver({"step": 14}, "checkpoint_14.pt")
    assert _names(tmp_path) == ["checkpoint_7.pt"]
    assert (tmp_path / "checkpoint_7.pt").read_bytes() == before


def test_only_rank_0_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ignite.distributed.get_rank", lambda: 1)
    AtomicSaver(tmp_path / "ckpt")({"step": 7}, "checkpoint_7.pt")
    assert not (tmp_path / "ckpt").exists()


def test_remove_is_quiet_about_a_file_already_gone(tmp_path: Path) -> None:
    AtomicSaver(tmp_path).remove("checkpoint_7.pt")  # Ignite's contract; nothing to remove


def test_listing_and_fresh_start_touch_only_the_demos_names(tmp_path: Path) -> None:
    for name in ("checkpoint_7.pt", "checkpoint_21.pt", "checkpoint_abc.pt", "checkpoint_3.pth"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".checkpoint_28.pt.x.tmp").write_bytes(b"")
    assert [s for s, _ in demo_checkpoints(tmp_path)] == [21, 7]  # by step, not by name
    remove_checkpoints(tmp_path)
    assert _names(tmp_path) == ["checkpoint_3.pth", "checkpoint_abc.pt"]


def test_load_newest_falls_back_to_an_older_checkpoint(tmp_path: Path) -> None:
    saver = AtomicSaver(tmp_path, keep=3)
    for step in (1, 2, 3):
        model = nn.Linear(2, 1)
        nn.init.constant_(model.weight, float(step))
        saver({"model": model.state_dict()}, f"checkpoint_{step}.pt")
    (tmp_path / "checkpoint_3.pt").write_bytes(b"truncated")
    damaged = torch.load(tmp_path / "checkpoint_2.pt", weights_only=True)
    damaged["model"]["weight"] = torch.zeros(5)
    torch.save(damaged, tmp_path / "checkpoint_2.pt")
    reports: list[str] = []
    target = nn.Linear(2, 1)
    assert load_newest(tmp_path, {"model": target}, reports.append) == tmp_path / "checkpoint_1.pt"
    assert target.weight.tolist() == [[1.0, 1.0]]
    assert [r.split(": it ")[0] for r in reports] == [
        f"--resume skips {tmp_path / 'checkpoint_3.pt'}",
        f"--resume skips {tmp_path / 'checkpoint_2.pt'}",
    ]
    assert reports[0].startswith(
        f"--resume skips {tmp_path / 'checkpoint_3.pt'}: it cannot be read"
    )
    assert reports[1].startswith(
        f"--resume skips {tmp_path / 'checkpoint_2.pt'}: it does not fit this run (Error(s) in "
        "loading state_dict for Linear:"
    )
    (tmp_path / "checkpoint_1.pt").write_bytes(b"")
    assert load_newest(tmp_path, {"model": target}, reports.append) is None
