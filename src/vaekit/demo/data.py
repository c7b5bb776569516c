"""Data for the demo: scikit-learn's handwritten digits, or the user's own array file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["DataError", "load_data", "load_digits_tensor"]

_SHAPE = "an array of shape (N, C, H, W) or (N, D) with values in [0, 1]"


class DataError(ValueError):
    """A ``--data`` file that cannot be used; its message is one line naming the file."""


def load_digits_tensor() -> Tensor:
    """The 1,797 8x8 handwritten digits bundled with scikit-learn, as ``(N, 1, 8, 8)`` in [0, 1].

    Example:
        >>> from vaekit.demo.data import load_digits_tensor
        >>> x = load_digits_tensor()
        >>> x.shape, x.dtype, x.min().item(), x.max().item()
        (torch.Size([1797, 1, 8, 8]), torch.float32, 0.0, 1.0)
    """
    from sklearn.datasets import load_digits

    images = load_digits().images  # integers 0..16
    return torch.from_numpy(images / 16.0).to(torch.float32).unsqueeze(1)


def load_data(path: str | Path | None) -> Tensor:
    """Load the training data: the digits for ``None``, else an ``.npy``/``.npz``/``.pt`` file.

    An ``.npz`` archive must hold exactly one array; a ``.pt`` file one tensor (it is loaded with
    ``weights_only=True``). The result is float32 of shape ``(N, C, H, W)`` or ``(N, D)``.

    Args:
        path: the file, or ``None`` for :func:`load_digits_tensor`.

    Returns:
        The data as a float32 tensor.

    Raises:
        DataError: if the file is missing, unreadable, or not a finite array of shape
            ``(N, C, H, W)`` or ``(N, D)`` with ``N >= 2`` and values in [0, 1].

    Example:
        >>> from vaekit.demo.data import load_data
        >>> load_data("missing.npy")
        Traceback (most recent call last):
        ...
        vaekit.demo.data.DataError: --data missing.npy: file not found; expected an array of shape (N, C, H, W) or (N, D) with values in [0, 1]
    """  # noqa: E501
    if path is None:
        return load_digits_tensor()
    path = Path(path)
    array = _read(path)
    return _validate(path, array)


def _fail(path: Path, problem: str) -> DataError:
    return DataError(f"--data {path}: {problem}; expected {_SHAPE}")


def _read(path: Path) -> np.ndarray | Tensor:
    if not path.is_file():
        raise _fail(path, "file not found")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz", ".pt"):
        raise _fail(path, f"unsupported file type {suffix or '(none)'!r}, use .npy, .npz or .pt")
    try:
        if suffix == ".pt":
            loaded = torch.load(path, weights_only=True, map_location="cpu")
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                loaded = [archive[name] for name in archive.files]
        else:
            loaded = np.load(path, allow_pickle=False)
    except Exception as err:  # any reader error becomes the one-line message
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _fail(path, f"cannot be read ({reason})") from None
    if isinstance(loaded, list):
        if len(loaded) != 1:
            raise _fail(path, f"the .npz archive holds {len(loaded)} arrays, not 1")
        loaded = loaded[0]
    if not isinstance(loaded, (np.ndarray, Tensor)):
        raise _fail(path, f"the file holds a {type(loaded).__name__}, not an array")
    return loaded


def _validate(path: Path, array: np.ndarray | Tensor) -> Tensor:
    if isinstance(array, Tensor) and array.layout != torch.strided:
        raise _fail(path, f"got a tensor of layout {array.layout}; save a dense tensor")
    shape = tuple(array.shape)
    if len(shape) not in (2, 4) or any(s == 0 for s in shape):
        raise _fail(path, f"got shape {shape}")
    if shape[0] < 2:
        raise _fail(path, f"got shape {shape}, which has fewer than 2 samples")
    if isinstance(array, np.ndarray):
        numeric = np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
        if not numeric or np.iscomplexobj(array):
            raise _fail(path, f"got dtype {array.dtype}")
        array = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    elif array.is_complex():
        raise _fail(path, f"got dtype {array.dtype}")
    x = array.detach().to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise _fail(path, "got NaN or infinite values")
    low, high = x.min().item(), x.max().item()
    if low < 0.0 or high > 1.0:
        raise _fail(path, f"got values in [{low:g}, {high:g}]")
    return x.contiguous()
