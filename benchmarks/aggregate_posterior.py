"""The aggregate posterior: AggregatePosterior.compute() and kl_decomposition, timed.

Run from the repository root (needs the ``metrics`` extra)::

    python benchmarks/aggregate_posterior.py [--repeats 7]

It prints the median time of ``AggregatePosterior.compute()`` over the posteriors of N = 1,797
data points (the demo's digits) with an 8-dimensional latent, for several ``num_samples``, and
of a forward+backward of ``kl_decomposition`` ("mss") against the same maths written densely
in one pass (the whole ``(B, B, D)`` tensor at once, as the reference code of Chen et al.
does), at the batch sizes of training. The ratio is taken within each repetition, the two
calls in a shuffled order, and its median printed.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vaekit.functional import kl_decomposition
from vaekit.functional.decomposition import _log_stratified_weights
from vaekit.metrics import AggregatePosterior

N, LATENT = 1797, 8


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def aggregate(repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(N, LATENT, generator=g)
    log_var = torch.randn(N, LATENT, generator=g) - 2
    print(f"AggregatePosterior.compute(), N = {N}, D = {LATENT}, float64, CPU")
    for num_samples in (500, 1000, N):
        metric = AggregatePosterior(num_samples=num_samples)
        for i in range(0, N, 512):
            metric.update(mu[i : i + 512], log_var[i : i + 512])

        def compute(metric: AggregatePosterior = metric) -> None:
            metric._computed = None  # a fresh computation, not torchmetrics' cache
            metric.compute()

        compute()
        times = [_seconds(compute) for _ in range(repeats)]
        print(f"  num_samples={num_samples:>5}: {1e3 * statistics.median(times):8.1f} ms")


def _dense(z: Tensor, mu: Tensor, log_var: Tensor, dataset_size: int) -> Tensor:
    """mss in one pass over the (B, B, D) tensor: the sum of the three terms' gradients."""
    batch = z.shape[0]
    log_q = -0.5 * (math.log(2 * math.pi) + log_var + (z[:, None] - mu).square() / log_var.exp())
    log_w = _log_stratified_weights(batch, dataset_size, z)
    log_qz = torch.logsumexp(log_q.sum(2) + log_w, dim=1)
    log_prod = torch.logsumexp(log_q + log_w[..., None], dim=1).sum(1)
    cond = log_q.diagonal(dim1=0, dim2=1).sum(0)
    prior = (-0.5 * (math.log(2 * math.pi) + z.square())).sum(1)
    return ((cond - log_qz) + 5 * (log_qz - log_prod) + (log_prod - prior)).mean()


def decomposition(repeats: int) -> None:
    print("kl_decomposition('mss') forward+backward, float32, D = 10: vaekit / dense one pass")
    rng = random.Random(0)
    for batch in (64, 256, 1024):
        g = torch.Generator().manual_seed(batch)
        args = [torch.randn(batch, 10, generator=g).requires_grad_() for _ in range(3)]

        def ours(args: list[Tensor] = args) -> None:
            mi, tc, dim_kl = kl_decomposition(*args, dataset_size=60_000)
            (mi + 5 * tc + dim_kl).backward()

        def dense(args: list[Tensor] = args) -> None:
            _dense(*args, dataset_size=60_000).backward()

        ours(), dense()
        ratios, absolute = [], []
        for _ in range(repeats):
            pair = [("ours", ours), ("dense", dense)]
            rng.shuffle(pair)
            t = {name: _seconds(fn) for name, fn in pair}
            ratios.append(t["ours"] / t["dense"])
            absolute.append(t["ours"])
        print(
            f"  B={batch:>5}: {1e3 * statistics.median(absolute):8.2f} ms, "
            f"ratio {statistics.median(ratios):.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    aggregate(args.repeats)
    decomposition(args.repeats)


if __name__ == "__main__":
    main()
