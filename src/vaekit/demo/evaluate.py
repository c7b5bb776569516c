"""The held-out test split and its importance-weighted NLL, with a discretized likelihood."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from torchmetrics import MeanMetric

from vaekit.demo.model import VAE
from vaekit.functional import log_importance_weights, log_likelihood, reparameterize
from vaekit.functional._recon import optimal_log_sigma
from vaekit.metrics import ImportanceWeightedNLL

__all__ = [
    "eval_likelihood",
    "importance_weighted_nll",
    "read_test_json",
    "split_data",
    "summary",
    "training_variance",
    "write_test_json",
]

_CHUNK_ELEMENTS = 2**23  # decoded elements per evaluation chunk: K * B * D, about 32 MB


def split_data(x: Tensor, test_fraction: float) -> tuple[Tensor, Tensor]:
    """``(train, test)``: a fixed shuffle of ``x`` (the same for every ``--seed``, so that runs
    are compared on one test set), ``round(test_fraction * N)`` samples held out, at least 1.

    Example:
        >>> import torch
        >>> from vaekit.demo.evaluate import split_data
        >>> train, test = split_data(torch.arange(20.0), 0.1)
        >>> len(train), len(test), sorted(torch.cat([train, test]).tolist()) == list(range(20))
        (18, 2, True)
    """
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_test = min(len(x) - 1, max(1, round(test_fraction * len(x))))
    return x[order[n_test:]], x[order[:n_test]]


def eval_likelihood(recon: str) -> str:
    """The discretized likelihood of the test NLL: the trained one, or the Gaussian."""
    return "discretized_logistic" if recon == "discretized_logistic" else "discretized_gaussian"


@torch.no_grad()
def training_variance(model: VAE, x: Tensor, recon: str, recon_var: str | None, seed: int) -> float:
    r"""The decoder variance the test likelihood uses: the learned one, 1 for a Gaussian or
    discretized decoder trained with variance 1, else the batch optimum of training
    (``recon_var="optimal"``, soft-clipped at :math:`\log\sigma = -6`) over the training split,
    which is also the variance a Bernoulli or squared-error decoder is calibrated with."""
    if model.variance is not None:
        return float(model.variance())
    if recon_var is None and recon in ("gaussian", "discretized_gaussian", "discretized_logistic"):
        return 1.0
    device = next(model.parameters()).device
    x = x.to(device)
    model.train()  # z sampled, as in training
    logits, _ = model(x, generator=torch.Generator(device).manual_seed(seed))
    mean = torch.sigmoid(logits)
    log_sigma = optimal_log_sigma((x - mean).square().sum(), x.numel(), -6.0)
    return float(torch.exp(2 * log_sigma))


@torch.no_grad()
def importance_weighted_nll(
    model: VAE,
    x: Tensor,
    *,
    likelihood: str,
    variance: float,
    num_bins: int,
    k: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    r"""The test NLL of ``x``, over ``world_size`` processes (call it on every one).

    Each data point gets ``k`` posterior samples; :func:`vaekit.functional.log_likelihood`
    scores their decoded means under ``likelihood`` on the ``num_bins`` levels of [0, 1], and
    :class:`vaekit.metrics.ImportanceWeightedNLL` averages the importance-weighted bound. The
    data goes in chunks of the whole of ``x``; every process draws a chunk's noise and decodes
    its share, so each data point gets the same samples however many processes share the work,
    and the result is that of one process.

    Returns:
        ``nll`` (nats per data point), ``bits_per_dim`` and ``neg_elbo`` (the mean over the
        samples of :math:`-\log w`, an estimate of the negative ELBO), each over ``x``.
    """
    device = next(model.parameters()).device
    model.eval()
    # float64 results: the report's nats and bits per dimension, not float32 roundings of them
    # (set after the move: torchmetrics' .to() resets the result dtype)
    nll = ImportanceWeightedNLL().to(device)
    bpd = ImportanceWeightedNLL("bits_per_dim", num_dims=x[0].numel()).to(device)
    nll.set_dtype(torch.float64)
    bpd.set_dtype(torch.float64)
    neg_elbo = MeanMetric().to(device)
    g = torch.Generator(device).manual_seed(seed)
    chunk = world_size * max(1, _CHUNK_ELEMENTS // (k * x[0].numel() * world_size))
    mine = slice(rank, None, world_size)  # this process's share of a chunk
    for start in range(0, len(x), chunk):  # chunks start at multiples of world_size
        batch = x[start : start + chunk].to(device)
        _, post = model(batch)
        z = reparameterize(post.mu, post.log_var, n_samples=k, generator=g)[:, mine]
        batch, mu, log_var = batch[mine], post.mu[mine], post.log_var[mine]
        logits = model.decoder(z.flatten(0, 1)).unflatten(0, (k, len(batch)))
        log_px_z = log_likelihood(
            torch.sigmoid(logits), batch, recon=likelihood, recon_var=variance, num_bins=num_bins
        )
        log_w = log_importance_weights(log_px_z, z, mu, log_var)
        nll.update(log_w)
        bpd.update(log_w)
        neg_elbo.update(-log_w.mean(dim=0))
    return {
        "nll": float(nll.compute()),
        "bits_per_dim": float(bpd.compute()),
        "neg_elbo": float(neg_elbo.compute()),
    }


def write_test_json(path: Path, result: Mapping[str, object]) -> None:
    """Write a run's test evaluation as JSON."""
    path.write_text(json.dumps(dict(result), indent=2) + "\n")


def read_test_json(path: Path) -> dict[str, float] | None:
    """The test evaluation of a run, or ``None`` if it has none."""
    if not path.is_file():
        return None
    loaded = json.loads(path.read_text())
    return {k: float(v) for k, v in loaded.items() if isinstance(v, (int, float))}


def summary(result: Mapping[str, float]) -> str:
    """One line: the test NLL in nats and bits per dimension.

    Example:
        >>> from vaekit.demo.evaluate import summary
        >>> print(summary({"nll": 120.0, "bits_per_dim": 2.7, "neg_elbo": 125.0, "k": 256,
        ...                "num_bins": 17, "sigma": 0.1}))
        test NLL 120.00 nats = 2.700 bits/dim (K = 256, 17 levels, sigma = 0.1), -ELBO 125.00
    """
    return (
        f"test NLL {result['nll']:.2f} nats = {result['bits_per_dim']:.3f} bits/dim "
        f"(K = {int(result['k'])}, {int(result['num_bins'])} levels, sigma = "
        f"{result['sigma']:.3g}), -ELBO {result['neg_elbo']:.2f}"
    )
