"""vaekit-demo end to end: outputs checked against plain-tensor recomputation, exact resume after
an interruption, one-line data errors, and a 2-process gloo run."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import vaekit.demo.train as train_module
from vaekit.demo.__main__ import main
from vaekit.demo.config import DemoConfig, build_beta
from vaekit.demo.model import VAE

N = 201  # odd: the two processes get uneven evaluation shards
SMALL = ["--epochs", "3", "--batch-size", "32", "--latent-dim", "4"]
COLUMNS = ["epoch", "iteration", "beta", "loss", "recon", "kl", "recon_kl_ratio", "active_units"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "digits.npy"
    np.save(path, (load_digits().images[:N] / 16.0).reshape(N, 1, 8, 8))
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _checkpoint(out: Path) -> dict[str, object]:
    """The last checkpoint: of the two kept, the one with the highest iteration."""
    paths = sorted((out / "checkpoints").glob("checkpoint_*.pt"), key=lambda p: int(p.stem[11:]))
    assert len(paths) <= 2
    return torch.load(paths[-1], weights_only=True)  # type: ignore[no-any-return]


def _reference(out: Path, data: Path, latent_dim: int) -> dict[str, float]:
    """The last epoch's metrics recomputed from the checkpointed weights, in float64."""
    x = torch.from_numpy(np.load(data)).float()
    vae = VAE(tuple(x.shape[1:]), latent_dim=latent_dim)
    vae.load_state_dict(_checkpoint(out)["model"])
    with torch.no_grad():
        logits, post = vae.eval()(x)
    x64, mu, lv = x.double(), post.mu.double(), post.log_var.double()
    recon = F.binary_cross_entropy_with_logits(logits.double(), x64, reduction="sum") / len(x)
    kl = 0.5 * (mu.square() + lv.exp() - 1 - lv)
    ref = {"recon": recon.item(), "kl": kl.sum().item() / len(x)}
    ref["recon_kl_ratio"] = ref["recon"] / ref["kl"]
    ref["active_units"] = float((mu.var(dim=0, unbiased=False) > 0.01).sum())
    ref.update({f"kl_per_dim_{j}": v for j, v in enumerate(kl.mean(dim=0).tolist())})
    return ref


def _assert_matches_reference(out: Path, data: Path, latent_dim: int) -> None:
    last = {k: float(v) for k, v in _rows(out / "metrics.csv")[-1].items()}
    ref = _reference(out, data, latent_dim)
    for key, value in ref.items():
        assert last[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert last["loss"] == pytest.approx(ref["recon"] + last["beta"] * ref["kl"], rel=1e-6)


@pytest.fixture(scope="module")
def linear_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("linear")
    code = main(["--data", str(data), *SMALL, "--schedule", "linear", "--out", str(out)])
    return out, code


def test_run_writes_every_output(linear_run: tuple[Path, int]):
    out, code = linear_run
    assert code == 0
    for name in ("metrics.csv", "report.png", "samples.png", "config.json"):
        assert (out / name).is_file(), name
    for png in ("report.png", "samples.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _rows(out / "metrics.csv")
    assert list(rows[0])[: len(COLUMNS)] == COLUMNS
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [r["iteration"] for r in rows] == ["7", "14", "21"]  # ceil(201 / 32) per epoch
    assert set(_checkpoint(out)) >= {"model", "optimizer", "trainer", "beta", "history"}


def test_metrics_equal_a_plain_tensor_recomputation(linear_run, data):
    _assert_matches_reference(linear_run[0], data, latent_dim=4)


def test_beta_column_follows_the_schedule(linear_run):
    rows = _rows(linear_run[0] / "metrics.csv")
    schedule = build_beta("linear", DemoConfig(), total_steps=21)
    assert [float(r["beta"]) for r in rows] == [schedule(int(r["iteration"]) - 1) for r in rows]


def test_summary_table_is_printed(data, tmp_path, capsys):
    assert (
        main(["--data", str(data), "--epochs", "1", "--latent-dim", "2", "--out", str(tmp_path)])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "schedule",
        "epochs",
        "loss",
        "recon",
        "kl",
        "beta",
        "recon/kl",
        "active",
        "units",
    ]
    row = _rows(tmp_path / "metrics.csv")[-1]
    assert lines[1].split()[:4] == [
        "constant",
        "1",
        f"{float(row['loss']):.3f}",
        f"{float(row['recon']):.3f}",
    ]


def test_progress_bar_in_a_terminal(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert (
        main(["--data", str(data), "--epochs", "1", "--latent-dim", "2", "--out", str(tmp_path)])
        == 0
    )
    err = capsys.readouterr().err
    assert "constant: [1/4]" in err
    assert "loss=" in err
    assert "beta=1" in err


def test_interrupted_then_resumed_equals_uninterrupted(data, tmp_path, capsys, monkeypatch):
    args = ["--data", str(data), *SMALL, "--schedule", "pi,cyclical"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    cut = ["--out", str(tmp_path / "cut")]
    # Ctrl-C in pi's second epoch; on resume, pi finishes and Ctrl-C hits cyclical's second
    # epoch; the last resume finishes cyclical.
    monkeypatch.setattr(train_module, "INTERRUPT_AT", ("pi", 10))
    assert main([*args, *cut]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert int(_checkpoint(tmp_path / "cut" / "pi")["trainer"]["iteration"]) == 7  # usable
    monkeypatch.setattr(train_module, "INTERRUPT_AT", ("cyclical", 12))
    assert main([*args, *cut, "--resume"]) == 130
    monkeypatch.setattr(train_module, "INTERRUPT_AT", None)
    assert main([*args, *cut, "--resume"]) == 0
    for schedule in ("pi", "cyclical"):
        full, resumed = tmp_path / "full" / schedule, tmp_path / "cut" / schedule
        assert (resumed / "metrics.csv").read_text() == (full / "metrics.csv").read_text()
        a, b = _checkpoint(full), _checkpoint(resumed)
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), key
        assert a["beta"] == b["beta"]
        assert a["history"] == b["history"]
    assert (tmp_path / "cut" / "compare.png").is_file()
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table[-3:-1]] == ["pi", "cyclical"]


def test_resume_refuses_changed_settings_and_missing_checkpoints(
    linear_run, data, tmp_path, capsys
):
    out = str(linear_run[0])
    changed = ["--data", str(data), *SMALL, "--schedule", "linear", "--beta", "0.5"]
    assert main([*changed, "--out", out, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "vaekit-demo: error: --resume needs the settings of the run it continues: "
        "--beta was 1.0, now 0.5\n"
    )
    assert main(["--data", str(data), "--out", str(tmp_path), "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"vaekit-demo: error: --resume: no checkpoint in {tmp_path / 'checkpoints'}; "
        "run without --resume\n"
    )


def test_resume_of_a_finished_run_trains_no_further(linear_run, data, capsys):
    out = linear_run[0]
    before = (out / "metrics.csv").read_text()
    args = ["--data", str(data), *SMALL, "--schedule", "linear", "--out", str(out), "--resume"]
    assert main(args) == 0
    assert (out / "metrics.csv").read_text() == before


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (None, "file not found"),
        (lambda p: np.save(p, np.zeros((4, 8, 8))), r"got shape \(4, 8, 8\)"),
        (lambda p: np.save(p, np.full((4, 3), 2.0)), r"got values in \[2, 2\]"),
        (lambda p: p.write_bytes(b"junk"), r"cannot be read"),
    ],
)
def test_bad_data_is_one_line_and_exit_code_2(tmp_path, capsys, make, problem):
    path = tmp_path / "x.npy"
    if make is not None:
        make(path)
    assert main(["--data", str(path), "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"vaekit-demo: error: --data {path}: ")
    assert re.search(problem, err)
    assert err.rstrip().endswith(
        "expected an array of shape (N, C, H, W) or (N, D) with values in [0, 1]"
    )
    assert not (tmp_path / "out").exists()


def test_bad_data_from_the_console_has_no_traceback(tmp_path):
    cmd = [sys.executable, "-m", "vaekit.demo", "--data", str(tmp_path / "none.pt")]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"vaekit-demo: error: --data {tmp_path / 'none.pt'}: file not found; "
        "expected an array of shape (N, C, H, W) or (N, D) with values in [0, 1]\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--schedule", "warm"], "--schedule should list distinct names of constant, linear"),
        (["--schedule", "pi,pi"], "--schedule should list distinct names"),
        (["--epochs", "0"], "--epochs should be >= 1, but given 0"),
        (["--recon", "huber"], "argument --recon: invalid choice: 'huber'"),
        (["--lr", "-1"], "--lr should be > 0, but given -1.0"),
        (["--beta", "-1"], "Argument beta should be a finite number >= 0, but given -1.0"),
        (
            ["--free-bits", "nan"],
            "Argument free_bits should be a finite number >= 0, but given nan",
        ),
        (["--device", "gpu"], "device string: gpu"),
    ],
)
def test_bad_arguments_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_gloo_run_is_exact_over_uneven_shards(data, tmp_path):
    args = ["--data", str(data), *SMALL, "--schedule", "pi", "--nproc-per-node", "2"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "metrics.csv")
    # 201 samples: 100 per process, 16 per process-batch, 7 steps an epoch.
    assert [r["iteration"] for r in rows] == ["7", "14", "21"]
    _assert_matches_reference(tmp_path, data, latent_dim=4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_is_an_argument_error(capsys):
    with pytest.raises(SystemExit, match="2"):
        main(["--device", "cuda"])
    assert "--device cuda is not available: torch sees no CUDA device" in capsys.readouterr().err
