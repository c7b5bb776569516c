"""vaekit-demo end to end: outputs checked against plain-tensor recomputation, exact resume after
an interruption, one-line data errors, and a 2-process gloo run."""

from __future__ import annotations

import csv
import json
import math
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from tests.demo.test_evaluate import reference_nll
from vaekit.demo.__main__ import main
from vaekit.demo.checkpoints import demo_checkpoints
from vaekit.demo.config import DemoConfig, build_beta
from vaekit.demo.evaluate import split_data
from vaekit.demo.model import VAE
from vaekit.functional.monitors import _aggregate_posterior_draw

N = 223  # 201 training samples, odd: the two processes get uneven evaluation shards; 22 held out
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
    found = demo_checkpoints(out / "checkpoints")
    assert 0 < len(found) <= 2
    return torch.load(found[0][1], weights_only=True)  # type: ignore[no-any-return]


def _assert_same_run(full: Path, resumed: Path) -> None:
    """``resumed`` ended with exactly the files and the state of the uninterrupted ``full``."""
    assert (resumed / "metrics.csv").read_text() == (full / "metrics.csv").read_text()
    a, b = _checkpoint(full), _checkpoint(resumed)
    assert a["trainer"] == b["trainer"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["beta"] == b["beta"]
    assert a["history"] == b["history"]
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == sorted(
        p.name for p in (full / "checkpoints").iterdir()
    )  # the two newest, no temporary file


def _stop_at(monkeypatch: pytest.MonkeyPatch, iteration: int, action: Callable[[], None]) -> None:
    """Run ``action`` after the optimizer step of ``iteration`` (1-based) in this process."""
    step = torch.optim.Adam.step
    calls = {"n": 0}

    def counted(self: torch.optim.Adam, *args: Any, **kwargs: Any) -> Any:
        result = step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == iteration:
            action(self)
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", counted)


def _ctrl_c(optimizer: torch.optim.Optimizer) -> None:
    raise KeyboardInterrupt


def _poison(optimizer: torch.optim.Optimizer) -> None:
    with torch.no_grad():
        optimizer.param_groups[0]["params"][0].fill_(math.nan)


def _reference(out: Path, data: Path, latent_dim: int, world: int = 1) -> dict[str, float]:
    """The last epoch's metrics recomputed from the checkpointed weights, in float64, on the
    training split; the aggregate posterior's from the same draws over the posteriors in the
    order the processes of ``world`` hold them, scored by torch.distributions' mixtures."""
    x = split_data(torch.from_numpy(np.load(data)).float(), 0.1)[0]
    assert len(x) == 201
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
    ref.update(
        _aggregate_reference(*(torch.cat([t[r::world] for r in range(world)]) for t in (mu, lv)))
    )
    return ref


def _aggregate_reference(mu: torch.Tensor, log_var: torch.Tensor) -> dict[str, float]:
    n, d = mu.shape
    index, noise = _aggregate_posterior_draw(n, d, 1000, seed=0)
    std = (0.5 * log_var).exp()
    z = mu[index] + std[index] * noise
    uniform = Categorical(logits=torch.zeros(n, dtype=torch.float64))
    log_qz = MixtureSameFamily(uniform, Independent(Normal(mu, std), 1)).log_prob(z)
    log_dims = sum(
        MixtureSameFamily(uniform, Normal(mu[:, j], std[:, j])).log_prob(z[:, j]) for j in range(d)
    )
    log_prior = Normal(0.0, 1.0).log_prob(z).sum(dim=1)
    return {
        "mi": (Normal(mu[index], std[index]).log_prob(z).sum(dim=1) - log_qz).mean().item(),
        "marginal_kl": (log_qz - log_prior).mean().item(),
        "tc": (log_qz - log_dims).mean().item(),
        "dim_kl": (log_dims - log_prior).mean().item(),
    }


def _assert_matches_reference(
    out: Path, data: Path, latent_dim: int, world: int = 1, loss: str = "vae"
) -> None:
    last = {k: float(v) for k, v in _rows(out / "metrics.csv")[-1].items()}
    ref = _reference(out, data, latent_dim, world)
    for key, value in ref.items():
        assert last[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    if loss == "tcvae":
        objective = ref["recon"] + ref["mi"] + last["beta"] * ref["tc"] + ref["dim_kl"]
    else:
        objective = ref["recon"] + last["beta"] * ref["kl"]
    assert last["loss"] == pytest.approx(objective, rel=1e-6)


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


def _trained(out: Path, data: Path, **kw: Any) -> tuple[VAE, torch.Tensor, torch.Tensor]:
    """The checkpointed model, and the training and test splits of ``data``."""
    x, x_test = split_data(torch.from_numpy(np.load(data)).float(), 0.1)
    vae = VAE(tuple(x.shape[1:]), latent_dim=4, **kw)
    vae.load_state_dict(_checkpoint(out)["model"])
    return vae, x, x_test


def test_the_test_nll_equals_an_independent_recomputation(linear_run, data):
    _assert_test_nll_matches_reference(linear_run[0], data)


def _training_sigma(vae: VAE, x: torch.Tensor) -> float:
    """The decoder's sigma without a learned variance: the soft-clipped root training MSE,
    sigma + e^-6, of the decoder's means in training mode with the run's noise."""
    with torch.no_grad():
        logits, _ = vae.train()(x, generator=torch.Generator().manual_seed(0))
    return (x - torch.sigmoid(logits)).square().mean().sqrt().item() + math.exp(-6.0)


def _assert_test_nll_matches_reference(out: Path, data: Path) -> None:
    vae, x, x_test = _trained(out, data)
    test = json.loads((out / "test.json").read_text())
    assert test["k"] == 256
    assert test["num_bins"] == 256  # --data without --num-bins: 8-bit levels
    assert test["likelihood"] == "discretized_gaussian"
    assert test["sigma"] == pytest.approx(_training_sigma(vae, x), rel=1e-6)
    nll, neg_elbo = reference_nll(vae, x_test, test["sigma"] ** 2, 256, 256, seed=0)
    assert test["nll"] == pytest.approx(nll, rel=1e-5)
    assert test["neg_elbo"] == pytest.approx(neg_elbo, rel=1e-5)
    assert test["bits_per_dim"] == pytest.approx(nll / (64 * math.log(2)), rel=1e-5)


@pytest.mark.parametrize("recon_var", ["optimal", "learned"])
def test_a_sigma_vae_reports_its_sigma_and_its_test_nll(data, tmp_path, recon_var):
    args = ["--data", str(data), *SMALL, "--recon", "gaussian", "--recon-var", recon_var]
    assert main([*args, "--num-bins", "17", "--iw-samples", "20", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "metrics.csv")
    sigmas = [float(r["sigma"]) for r in rows]
    assert all(math.exp(-6.0) < s < 1.01 for s in sigmas)
    test = json.loads((tmp_path / "test.json").read_text())
    assert (test["k"], test["num_bins"]) == (20, 17)
    vae, x, x_test = _trained(tmp_path, data, learned_variance=recon_var == "learned")
    if recon_var == "learned":
        assert vae.variance is not None
        # The checkpoint holds the learned log sigma; it moved from its start at 0.
        variance = vae.variance().item()
        assert 0.5 < math.sqrt(variance) < 1.0
        assert test["sigma"] == pytest.approx(math.sqrt(variance), rel=1e-6)
        assert sigmas[-1] == pytest.approx(math.sqrt(variance), rel=0.02)  # its last epoch
    else:
        assert sigmas[0] > sigmas[-1]  # the fit improves
        assert test["sigma"] == pytest.approx(_training_sigma(vae, x), rel=1e-6)
    nll, _ = reference_nll(vae, x_test, test["sigma"] ** 2, 17, 20, seed=0)
    assert test["nll"] == pytest.approx(nll, rel=1e-5)


def test_a_tcvae_run_weighs_the_total_correlation(data, tmp_path):
    args = [
        "--data",
        str(data),
        *SMALL,
        "--loss",
        "tcvae",
        "--tc-beta",
        "6",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    rows = _rows(tmp_path / "metrics.csv")
    assert [float(r["beta"]) for r in rows] == [6.0, 6.0, 6.0]  # the constant schedule, at 6
    _assert_matches_reference(tmp_path, data, latent_dim=4, loss="tcvae")
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["loss"], config["tc_beta"]) == ("tcvae", 6.0)


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
        "I(x;z)",
        "KL(q(z))",
        "beta",
        "recon/kl",
        "active",
        "units",
        "test",
        "nll",
        "bits/dim",
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


@pytest.mark.slow
def test_interrupted_then_resumed_equals_uninterrupted(data, tmp_path, capsys, monkeypatch):
    args = ["--data", str(data), *SMALL, "--schedule", "pi,cyclical"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    cut = ["--out", str(tmp_path / "cut")]
    # Ctrl-C in pi's second epoch (its 10th step); on resume, pi finishes (14 steps from
    # iteration 7) and Ctrl-C hits cyclical's second epoch (its 12th step, the 26th of the
    # process); the last resume finishes cyclical.
    _stop_at(monkeypatch, 10, _ctrl_c)
    assert main([*args, *cut]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert int(_checkpoint(tmp_path / "cut" / "pi")["trainer"]["iteration"]) == 7  # usable
    monkeypatch.undo()
    _stop_at(monkeypatch, 26, _ctrl_c)
    assert main([*args, *cut, "--resume"]) == 130
    assert int(_checkpoint(tmp_path / "cut" / "cyclical")["trainer"]["iteration"]) == 7
    monkeypatch.undo()
    assert main([*args, *cut, "--resume"]) == 0
    for schedule in ("pi", "cyclical"):
        full, resumed = tmp_path / "full" / schedule, tmp_path / "cut" / schedule
        assert (resumed / "metrics.csv").read_text() == (full / "metrics.csv").read_text()
        a, b = _checkpoint(full), _checkpoint(resumed)
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), key
        assert a["beta"] == b["beta"]
        assert a["history"] == b["history"]
        assert (resumed / "test.json").read_text() == (full / "test.json").read_text()
    assert (tmp_path / "cut" / "compare.png").is_file()
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table[-3:-1]] == ["pi", "cyclical"]
    for line, schedule in zip(table[-3:-1], ("pi", "cyclical"), strict=True):
        test = json.loads((tmp_path / "cut" / schedule / "test.json").read_text())
        assert line.split()[-2:] == [f"{test['nll']:.3f}", f"{test['bits_per_dim']:.3f}"]


LINEAR = ["--schedule", "linear"]


def _cut_run(data: Path, out: Path, monkeypatch: pytest.MonkeyPatch, stop: int) -> None:
    """The linear run of ``linear_run`` stopped by a Ctrl-C after iteration ``stop``."""
    _stop_at(monkeypatch, stop, _ctrl_c)
    assert main(["--data", str(data), *SMALL, *LINEAR, "--out", str(out)]) == 130
    monkeypatch.undo()


def _resume(data: Path, out: Path) -> int:
    return main(["--data", str(data), *SMALL, *LINEAR, "--out", str(out), "--resume"])


def test_resume_after_the_older_checkpoint_was_deleted(linear_run, data, tmp_path, monkeypatch):
    # Ctrl-C in epoch 3: checkpoints 7 and 14 kept. Delete the older by hand and, as older
    # versions did, list both in the newer one: a resumed run must not need the gone file.
    out = tmp_path / "cut"
    _cut_run(data, out, monkeypatch, stop=17)
    checkpoints = out / "checkpoints"
    assert [s for s, _ in demo_checkpoints(checkpoints)] == [14, 7]
    (checkpoints / "checkpoint_7.pt").unlink()
    newest = torch.load(checkpoints / "checkpoint_14.pt", weights_only=True)
    newest["checkpointer"] = {"_saved": [[7, "checkpoint_7.pt"], [14, "checkpoint_14.pt"]]}
    torch.save(newest, checkpoints / "checkpoint_14.pt")
    assert _resume(data, out) == 0
    _assert_same_run(linear_run[0], out)


def test_resume_skips_a_truncated_newest_checkpoint_and_a_stray_name(
    linear_run, data, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "cut"
    _cut_run(data, out, monkeypatch, stop=17)
    checkpoints = out / "checkpoints"
    newest = checkpoints / "checkpoint_14.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # what a lost write leaves behind
    (checkpoints / "checkpoint_abc.pt").write_bytes(b"mine")
    capsys.readouterr()
    assert _resume(data, out) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        f"vaekit-demo: --resume ignores {checkpoints / 'checkpoint_abc.pt'}: the demo names "
        "its checkpoints checkpoint_<iteration>.pt"
    )
    assert err[1].startswith(f"vaekit-demo: --resume skips {newest}: it cannot be read (")
    assert len(err) == 2
    assert (checkpoints / "checkpoint_abc.pt").read_bytes() == b"mine"  # not the demo's to remove
    (checkpoints / "checkpoint_abc.pt").unlink()
    _assert_same_run(linear_run[0], out)


def test_resume_skips_a_checkpoint_its_objects_refuse(linear_run, data, tmp_path, monkeypatch):
    out = tmp_path / "cut"
    _cut_run(data, out, monkeypatch, stop=17)
    newest = out / "checkpoints" / "checkpoint_14.pt"
    tampered = torch.load(newest, weights_only=True)
    tampered["beta"] = {"event_index": -3}
    torch.save(tampered, newest)
    assert _resume(data, out) == 0  # from checkpoint_7.pt
    _assert_same_run(linear_run[0], out)


def test_resume_with_no_checkpoint_that_loads_is_one_line(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cut"
    _cut_run(data, out, monkeypatch, stop=17)
    before = {}
    for _, path in demo_checkpoints(out / "checkpoints"):
        path.write_bytes(b"")
        before[path] = b""
    capsys.readouterr()
    assert _resume(data, out) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        f"vaekit-demo: error: --resume: no checkpoint in {out / 'checkpoints'} loads; run "
        "without --resume to start afresh (which removes them)"
    )
    assert len(err) == 3  # a line for each skipped file, then the error
    assert {p: p.read_bytes() for p in before} == before  # nothing removed or rewritten


def test_divergence_stops_with_exit_1_and_keeps_the_last_good_checkpoint(
    linear_run, data, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "cut"
    _stop_at(monkeypatch, 10, _poison)  # NaN weights in epoch 2
    assert main(["--data", str(data), *SMALL, *LINEAR, "--out", str(out)]) == 1
    monkeypatch.undo()
    checkpoints = out / "checkpoints"
    assert capsys.readouterr().err == (
        "vaekit-demo: error: the linear run diverged at iteration 10 (epoch 2): the model's "
        f"parameters are NaN or infinite; the last good checkpoint is "
        f"{checkpoints / 'checkpoint_7.pt'}; try a smaller --lr\n"
    )
    assert [p.name for p in checkpoints.iterdir()] == ["checkpoint_7.pt"]
    assert not (out / "metrics.csv").exists()
    assert _resume(data, out) == 0  # the kept checkpoint is good: the run goes on exactly
    _assert_same_run(linear_run[0], out)


def test_diverging_learning_rate_stops_with_exit_1_and_writes_no_checkpoint(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--data", str(data), *SMALL, "--lr", "1e10", "--out", str(out)]) == 1
    assert capsys.readouterr() == (
        "",
        "vaekit-demo: error: the constant run diverged at iteration 2 (epoch 1): the model's "
        "parameters are NaN or infinite; no checkpoint was written; try a smaller --lr\n",
    )
    assert list((out / "checkpoints").iterdir()) == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "it is missing"),
        ('{"epochs": 3,', r"\(Expecting property name enclosed in double quotes: .*\)"),
        ("[1, 2]", "it does not hold the demo's settings"),
        ('{"epochs": 3}', "it does not hold the demo's settings"),
    ],
)
def test_resume_with_a_damaged_config_is_one_line(
    data, tmp_path, monkeypatch, capsys, content, reason
):
    out = tmp_path / "cut"
    _cut_run(data, out, monkeypatch, stop=10)
    config = out / "config.json"
    if content is None:
        config.unlink()
    else:
        config.write_text(content)
    capsys.readouterr()
    assert _resume(data, out) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(
        rf"vaekit-demo: error: --resume needs the settings in {re.escape(str(config))}, but "
        rf"{reason}; restore it, or run without --resume to start afresh\n",
        err,
    ), err
    assert [s for s, _ in demo_checkpoints(out / "checkpoints")] == [7]


@pytest.mark.parametrize("where", ["under_a_file", "dev_null", "proc"])
def test_unwritable_out_is_one_line_and_exit_code_2(data, tmp_path, capsys, where):
    (tmp_path / "file").write_text("x")
    out, blocker = {
        "under_a_file": (tmp_path / "file" / "run", tmp_path / "file"),
        "dev_null": (Path("/dev/null"), Path("/dev/null")),
        "proc": (Path("/proc/vaekit-run"), None),
    }[where]
    assert main(["--data", str(data), "--epochs", "1", "--out", str(out)]) == 2
    expected = (
        f"but {blocker} is not a directory"
        if blocker is not None
        else f"but {out / 'checkpoints'} cannot be written (No such file or directory)"
    )
    assert capsys.readouterr() == (
        "",
        f"vaekit-demo: error: --out {out} should be a writable directory, {expected}\n",
    )


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


@pytest.mark.slow
def test_bad_data_from_the_console_has_no_traceback(tmp_path):
    cmd = [sys.executable, "-m", "vaekit.demo", "--data", str(tmp_path / "none.pt")]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"vaekit-demo: error: --data {tmp_path / 'none.pt'}: file not found; "
        "expected an array of shape (N, C, H, W) or (N, D) with values in [0, 1]\n"
    )


# The arguments refused, and the line that says why after "vaekit-demo: error: "; "..." stands
# for the wording of argparse or torch, which their versions change.
BAD_ARGUMENTS = [
    (
        ["--schedule", "warm"],
        "--schedule should list distinct names of constant, linear, cyclical, logistic, pi, geco, "
        "but given 'warm'",
    ),
    (["--schedule", "pi,pi"], "--schedule should list distinct names of ..., but given 'pi,pi'"),
    (["--epochs", "0"], "--epochs should be >= 1, but given 0"),
    (["--recon", "huber"], "argument --recon: invalid choice: 'huber'..."),
    (["--lr", "-1"], "--lr should be a finite number > 0, but given -1.0"),
    (["--lr", "inf"], "--lr should be a finite number > 0, but given inf"),
    (["--lr", "nan"], "--lr should be a finite number > 0, but given nan"),
    (["--beta", "-1"], "Argument beta should be a finite number >= 0, but given -1.0"),
    (["--free-bits", "nan"], "Argument free_bits should be a finite number >= 0, but given nan"),
    (["--free-bits", "1e300"], "--free-bits should be a finite float32 number, but given 1e+300"),
    (["--device", "gpu"], "...device string: gpu"),
    (["--device", "meta"], "--device should hold data (cpu, cuda, ...), but given 'meta'"),
    (
        ["--recon-var", "optimal"],
        "--recon-var needs --recon gaussian, discretized_gaussian, discretized_logistic, "
        "but given --recon bce_with_logits",
    ),
    (["--recon", "gaussian", "--recon-var", "best"], "argument --recon-var: invalid choice: ..."),
    (["--test-fraction", "0"], "--test-fraction should be in (0, 1), but given 0.0"),
    (["--test-fraction", "1"], "--test-fraction should be in (0, 1), but given 1.0"),
    (["--iw-samples", "0"], "--iw-samples should be >= 1, but given 0"),
    (["--num-bins", "1"], "--num-bins should be >= 2, but given 1"),
    (["--seed", str(2**64)], f"--seed should be an int in [0, 2**32 - 1], but given {2**64}"),
    (["--seed", "-1"], "--seed should be an int in [0, 2**32 - 1], but given -1"),
    (["--out", ""], "--out should name a directory, but given ''"),
    (["--out", "  "], "--out should name a directory, but given '  '"),
    (["--loss", "tc"], "argument --loss: invalid choice: 'tc'..."),
    (
        ["--loss", "tcvae", "--tc-beta", "-1"],
        "--tc-beta should be a finite number >= 0, but given -1.0",
    ),
    (
        ["--loss", "tcvae", "--batch-size", "1616"],
        "--loss tcvae needs at least 2 samples in every batch of every process, but "
        "--batch-size 1616 leaves batches of 1 (of 1617 samples in 1 process(es)); choose "
        "another --batch-size",
    ),
    (
        ["--loss", "tcvae", "--recon", "gaussian", "--recon-var", "optimal"],
        "--loss tcvae trains its decoder with variance 1 on 256 levels: --recon-var and the "
        "discretized recons need --loss vae",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_ARGUMENTS)
def test_a_bad_argument_exits_2_with_one_line_naming_it(
    args, message, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    expected = ".*".join(re.escape(part) for part in f"vaekit-demo: error: {message}".split("..."))
    assert re.fullmatch(expected, err.splitlines()[-1])
    assert list(tmp_path.iterdir()) == []  # nothing written, not even into the current directory


# A vaekit-demo process whose checkpoint writes are slow, half on disk halfway: a signal can
# land inside one. Markers tell the test where the process is. Nothing of this is in the demo.
_SLOW_WRITES = """
import io, signal, sys, time
from pathlib import Path

import torch

# Ctrl-C as in a terminal, also where pytest itself ignores SIGINT (a background job of a shell)
signal.signal(signal.SIGINT, signal.default_int_handler)

marks, real_save, count = Path(sys.argv[1]), torch.save, [0]


def slow_save(obj, f, *args, **kwargs):
    count[0] += 1
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    (marks / f"writing-{count[0]}").touch()
    time.sleep(0.4)
    f.write(data[len(data) // 2 :])
    (marks / f"written-{count[0]}").touch()


torch.save = slow_save
from vaekit.demo.__main__ import main

sys.exit(main(sys.argv[2:]))
"""
KILL_ARGS = ["--epochs", "6", "--batch-size", "32", "--latent-dim", "4", "--schedule", "pi"]


class _Demo:
    """``vaekit-demo`` in a child process with slow checkpoint writes."""

    def __init__(self, data: Path, out: Path, marks: Path, *extra: str) -> None:
        marks.mkdir()
        self.marks = marks
        args = ["--data", str(data), *KILL_ARGS, "--out", str(out), *extra]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SLOW_WRITES, str(marks), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a signal for the child never reaches pytest
        )

    def wait_for(self, mark: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.marks / mark).exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, f"no {mark} within {timeout} s"
            time.sleep(0.01)

    def finish(self, sig: int | None = None, timeout: float = 120.0) -> tuple[int, str]:
        if sig is not None:
            self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err


def _files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


@pytest.mark.slow
def test_killed_anywhere_then_resumed_equals_uninterrupted(data, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["--data", str(data), *KILL_ARGS, "--out", str(full)]) == 0
    run = _Demo(data, cut, tmp_path / "m1")
    run.wait_for("writing-3")  # SIGKILL inside the third write: the lost state
    assert run.finish(signal.SIGKILL)[0] == -signal.SIGKILL
    names = _files(cut)
    assert names[1:] == ["checkpoint_14.pt", "checkpoint_7.pt"]
    assert re.fullmatch(r"\.checkpoint_21\.pt\..*\.tmp", names[0])  # the partial write

    run = _Demo(data, cut, tmp_path / "m2", "--resume")
    run.wait_for("writing-2")  # Ctrl-C inside a write: the partial file is removed
    code, err = run.finish(signal.SIGINT)
    assert code == 130, err
    assert "vaekit-demo: interrupted; the last checkpoint is in" in err
    assert _files(cut) == ["checkpoint_14.pt", "checkpoint_21.pt"]

    rng = random.Random(17)  # then once anywhere: renaming, pruning, training or writing
    run = _Demo(data, cut, tmp_path / "m3", "--resume")
    run.wait_for("written-1")
    time.sleep(rng.uniform(0.0, 0.8))
    code, err = run.finish(rng.choice([signal.SIGKILL, signal.SIGINT]))
    assert code in (-signal.SIGKILL, 130, 0), err  # 0: the signal came after the last write
    assert demo_checkpoints(cut / "checkpoints")[0][0] >= 21

    code, err = _Demo(data, cut, tmp_path / "m4", "--resume").finish()
    assert code == 0, err
    _assert_same_run(full, cut)


@pytest.mark.slow
def test_two_process_gloo_run_is_exact_over_uneven_shards(data, tmp_path):
    args = ["--data", str(data), *SMALL, "--schedule", "pi", "--nproc-per-node", "2"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "metrics.csv")
    # 201 samples: 100 per process, 16 per process-batch, 7 steps an epoch.
    assert [r["iteration"] for r in rows] == ["7", "14", "21"]
    _assert_matches_reference(tmp_path, data, latent_dim=4, world=2)
    # The 22 test points shared 11 and 11: each got the samples one process would draw.
    _assert_test_nll_matches_reference(tmp_path, data)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_is_an_argument_error(capsys):
    with pytest.raises(SystemExit, match="2"):
        main(["--device", "cuda"])
    assert "--device cuda is not available: torch sees no CUDA device" in capsys.readouterr().err
