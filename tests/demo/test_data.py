"""vaekit.demo.data: the digits, the user's array files, and one-line errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from vaekit.demo.data import DataError, load_data, load_digits_tensor

EXPECTED = r"expected an array of shape \(N, C, H, W\) or \(N, D\) with values in \[0, 1\]"


def test_digits_are_sklearns_images_scaled_to_unit_range():
    ref = load_digits().images / 16.0
    x = load_data(None)
    assert x.shape == (1797, 1, 8, 8)
    assert x.dtype == torch.float32
    np.testing.assert_allclose(x[:, 0].numpy(), ref, rtol=0, atol=1e-7)
    assert torch.equal(load_digits_tensor(), x)


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3, 3)])
@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt"])
def test_files_round_trip(tmp_path: Path, shape: tuple[int, ...], suffix: str):
    ref = np.random.default_rng(0).random(shape)
    path = tmp_path / f"data{suffix}"
    if suffix == ".npy":
        np.save(path, ref)
    elif suffix == ".npz":
        np.savez(path, images=ref)
    else:
        torch.save(torch.from_numpy(ref), path)
    x = load_data(path)
    assert x.dtype == torch.float32
    assert x.shape == shape
    np.testing.assert_allclose(x.numpy(), ref.astype(np.float32), rtol=0, atol=0)


def test_integer_and_bool_arrays_are_accepted(tmp_path: Path):
    np.save(tmp_path / "b.npy", np.array([[True, False], [False, True]]))
    assert load_data(tmp_path / "b.npy").tolist() == [[1.0, 0.0], [0.0, 1.0]]


def _bad_files(tmp: Path) -> list[tuple[Path, str]]:
    cases = []

    def add(name: str, problem: str, writer: object) -> None:
        path = tmp / name
        if callable(writer):
            writer(path)
        cases.append((path, problem))

    add("missing.npy", "file not found", None)
    add(
        "data.csv",
        r"unsupported file type '\.csv', use \.npy, \.npz or \.pt",
        lambda p: p.write_text("1"),
    )
    add("noext", r"unsupported file type '\(none\)'", lambda p: p.write_text("1"))
    add("garbage.npy", r"cannot be read \(", lambda p: p.write_bytes(b"not an array"))
    add("garbage.pt", r"cannot be read \(", lambda p: p.write_bytes(b"not a tensor"))
    add("three_d.npy", r"got shape \(4, 8, 8\)", lambda p: np.save(p, np.zeros((4, 8, 8))))
    add("scalar.npy", r"got shape \(\)", lambda p: np.save(p, np.float64(0.5)))
    add("empty.npy", r"got shape \(0, 3\)", lambda p: np.save(p, np.zeros((0, 3))))
    add(
        "one.npy",
        r"got shape \(1, 3\), which has fewer than 2 samples",
        lambda p: np.save(p, np.zeros((1, 3))),
    )
    add("big.npy", r"got values in \[0, 255\]", lambda p: np.save(p, np.array([[0, 255], [3, 4]])))
    add(
        "neg.pt",
        r"got values in \[-1, 0.5\]",
        lambda p: torch.save(torch.tensor([[-1.0, 0.5]] * 2), p),
    )
    add(
        "nan.npy", "got NaN or infinite values", lambda p: np.save(p, np.array([[np.nan, 0.5]] * 2))
    )
    add("text.npy", "got dtype <U1", lambda p: np.save(p, np.array([["a", "b"], ["c", "d"]])))
    add(
        "two.npz",
        r"the \.npz archive holds 2 arrays, not 1",
        lambda p: np.savez(p, a=np.zeros((2, 2)), b=np.zeros((2, 2))),
    )
    add(
        "dict.pt",
        "the file holds a dict, not an array",
        lambda p: torch.save({"x": torch.zeros(2, 2)}, p),
    )
    add(
        "complex.pt",
        "got dtype torch.complex64",
        lambda p: torch.save(torch.zeros(2, 2, dtype=torch.complex64), p),
    )
    add(
        "complex.npy",
        "got dtype complex128",
        lambda p: np.save(p, np.full((2, 2), 0.5 + 0.5j)),
    )
    add(
        "sparse.pt",
        "got a tensor of layout torch.sparse_coo; save a dense tensor",
        lambda p: torch.save(torch.eye(3).to_sparse(), p),
    )
    return cases


def test_bad_files_raise_one_line_naming_the_file_and_the_expected_shape(tmp_path: Path):
    for path, problem in _bad_files(tmp_path):
        with pytest.raises(DataError, match=rf"^--data {path}: {problem}.*; {EXPECTED}$") as info:
            load_data(path)
        assert "\n" not in str(info.value)
        assert info.value.__cause__ is None  # suppressed: nothing chained into a traceback
