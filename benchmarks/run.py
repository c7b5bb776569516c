"""Benchmark the KL term: vaekit against torch.distributions and hand-written formulas.

Run from the repository root::

    python benchmarks/run.py            # full table, a few minutes on 2 cores
    python benchmarks/run.py --quick    # fewer repetitions, for a smoke run
    python benchmarks/run.py --write docs/guides/benchmark_kl.inc   # the table in the docs

Every figure is a ratio measured in one process: in each repetition every candidate runs once,
in a freshly shuffled order, and the ratio of two candidates is taken within the repetition
before the median over repetitions. Absolute times are printed for orientation only.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torch._C._profiler import _EventType
from torch.distributions import Normal, kl_divergence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vaekit.functional import kl_divergence_normal

SIZES = [(64, 10), (256, 128), (16, 4, 64, 64), (4, 16, 128, 256)]
Loss = Callable[[Tensor, Tensor], Tensor]


def latent_dims(x: Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.dim()))


def notebook(mu: Tensor, log_var: Tensor) -> Tensor:
    kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=latent_dims(mu))
    return torch.mean(kl)


def diffusers(mu: Tensor, log_var: Tensor) -> Tensor:
    kl = 0.5 * torch.sum(mu.pow(2) + torch.exp(log_var) - 1.0 - log_var, dim=latent_dims(mu))
    return kl.mean()


def distributions(mu: Tensor, log_var: Tensor) -> Tensor:
    # validate_args=True is torch's default, stated because torch.compile turns it off.
    q = Normal(mu, torch.exp(0.5 * log_var), validate_args=True)
    p = Normal(torch.zeros_like(mu), torch.ones_like(mu), validate_args=True)
    return kl_divergence(q, p).sum() / mu.shape[0]


def vaekit_eager(mu: Tensor, log_var: Tensor) -> Tensor:
    return kl_divergence_normal(mu, log_var)


def vaekit_again(mu: Tensor, log_var: Tensor) -> Tensor:
    """vaekit eager under a second name: the a/a column, the table's own resolution."""
    return kl_divergence_normal(mu, log_var)


def make_inputs(shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(shape, generator=g).requires_grad_()
    log_var = torch.randn(shape, generator=g).requires_grad_()
    return mu, log_var


def step(fn: Loss, mu: Tensor, log_var: Tensor) -> None:
    mu.grad = log_var.grad = None
    fn(mu, log_var).backward()


def bind(fn: Loss, mu: Tensor, log_var: Tensor) -> Callable[[], None]:
    return lambda: step(fn, mu, log_var)


def paired_ratios(candidates: dict[str, Callable[[], None]], reps: int) -> dict[str, list[float]]:
    """Seconds per call of each candidate, one call each per repetition, in a shuffled order.

    The order is drawn afresh (seeded) every repetition. A fixed rotation puts each candidate
    after the same neighbour every time, and the neighbour decides how much of a small call's
    code and data the caches still hold: in a rotation, the same vaekit call entered under two
    names measured 0.70x and 0.90x the notebook at (64, 10); shuffled, 0.83x and 0.82x.
    """
    names = list(candidates)
    for fn in candidates.values():  # warm up
        fn()
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(0)
    for _ in range(reps):
        for name in rng.sample(names, len(names)):
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def saved_bytes_beyond_inputs(fn: Loss, mu: Tensor, log_var: Tensor) -> int:
    """Bytes of distinct storages saved for backward, other than mu's and log_var's own."""
    inputs = {mu.untyped_storage().data_ptr(), log_var.untyped_storage().data_ptr()}
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in inputs:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(mu, log_var)
    return sum(seen.values())


def peak_bytes(fn: Loss, mu: Tensor, log_var: Tensor) -> int:
    """Peak of live bytes allocated during forward+backward, above what was live before.

    CPU tensors have no max_memory_allocated. With profile_memory the profiler records every
    allocation (+bytes) and free (-bytes) made through torch's CPU allocator; in time order,
    their running sum is the memory the step added, and its maximum is the peak.
    """
    step(fn, mu, log_var)  # warm up (and compile)
    mu.grad = log_var.grad = None
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn(mu, log_var).backward()
    allocations: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            allocations.append((event.start_time_ns, event.extra_fields.alloc_size))
        stack.extend(event.children)
    live = peak = 0
    for _, size in sorted(allocations):
        live += size
        peak = max(peak, live)
    return peak


def table(threads: int, shape: tuple[int, ...], reps: int) -> dict[str, float]:
    """The paired ratios of one row: vaekit against each other candidate."""
    torch.set_num_threads(threads)
    mu, log_var = make_inputs(shape)
    fns: dict[str, Loss] = {
        "eager": vaekit_eager,
        "again": vaekit_again,
        "compiled": torch.compile(kl_divergence_normal, fullgraph=True, dynamic=False),
        "nb compiled": torch.compile(notebook, fullgraph=True, dynamic=False),
        "dist": distributions,
        "nb": notebook,
        "diff": diffusers,
    }
    t = paired_ratios({name: bind(f, mu, log_var) for name, f in fns.items()}, reps)
    return {
        "a/a": median_ratio(t["eager"], t["again"]),
        "vs dist": median_ratio(t["eager"], t["dist"]),
        "vs nb": median_ratio(t["eager"], t["nb"]),
        "vs diff": median_ratio(t["eager"], t["diff"]),
        "compiled vs nb compiled": median_ratio(t["compiled"], t["nb compiled"]),
        "eager ms": 1e3 * statistics.median(t["eager"]),
        "nb ms": 1e3 * statistics.median(t["nb"]),
    }


COLUMNS = ["a/a", "vs dist", "vs nb", "vs diff", "compiled vs nb compiled", "eager ms", "nb ms"]


def memory_rows() -> list[tuple[str, float, float]]:
    """Saved-for-backward and peak bytes at the largest size, in latent-sized tensors."""
    torch.set_num_threads(1)
    shape = SIZES[-1]
    latent = 4 * math.prod(shape)
    rows = []
    for name, fn in [
        ("vaekit eager", vaekit_eager),
        ("vaekit compiled", torch.compile(kl_divergence_normal, fullgraph=True, dynamic=False)),
        ("torch.distributions", distributions),
        ("notebook", notebook),
        ("diffusers", diffusers),
    ]:
        mu, log_var = make_inputs(shape)
        saved = saved_bytes_beyond_inputs(fn, mu, log_var) / latent
        rows.append((name, saved, peak_bytes(fn, mu, log_var) / latent))
    return rows


def rst(
    rows: dict[tuple[int, tuple[int, ...]], dict[str, float]],
    memory: list[tuple[str, float, float]],
    reps: tuple[int, int],
) -> str:
    """The results as reStructuredText tables, for the Performance guide."""
    cpu = platform.processor() or platform.machine()
    lines = [
        f"Written by ``python benchmarks/run.py --write`` with torch {torch.__version__} on "
        f"{cpu}, {reps[0]} repetitions below 100,000 elements and {reps[1]} above.",
        "",
        ".. list-table:: forward+backward of the KL term, float32 on the CPU: median of paired "
        "ratios",
        "   :header-rows: 1",
        "",
        "   * - shape",
        "     - threads",
        *[f"     - {c}" for c in COLUMNS],
    ]
    for (threads, shape), row in rows.items():
        lines += [f"   * - {shape}", f"     - {threads}"]
        lines += [
            f"     - {row[c]:.3f}" if c.endswith("ms") else f"     - {row[c]:.2f}" for c in COLUMNS
        ]
    lines += [
        "",
        f".. list-table:: memory at {SIZES[-1]}, in latent-sized float32 tensors",
        "   :header-rows: 1",
        "",
        "   * - candidate",
        "     - saved for backward beyond the inputs",
        "     - peak during forward+backward",
    ]
    for name, saved, peak in memory:
        lines += [f"   * - {name}", f"     - {saved:.2f}", f"     - {peak:.2f}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--write", type=Path, help="also write the tables as rst to this file")
    args = parser.parse_args()
    reps = (30, 7) if args.quick else (400, 101)
    # A long-running process has freed large blocks long ago, which makes glibc serve later
    # allocations from its heap instead of fresh pages; without this, the first candidates
    # to allocate latent-sized temporaries pay page faults that later ones do not.
    torch.ones(2**23).sum()  # 32 MiB, allocated and freed

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, float32, CPU")
    print("forward+backward of the KL term reduced to a scalar; median of paired ratios\n")
    header = f"{'shape':>18} {'thr':>3}  " + " ".join(f"{c[:10]:>10}" for c in COLUMNS)
    print(header)
    print("-" * len(header))
    rows = {}
    for threads in (1, 2):
        for shape in SIZES:
            row = table(threads, shape, reps[0] if math.prod(shape) < 100_000 else reps[1])
            rows[(threads, shape)] = row
            print(f"{shape!s:>18} {threads:>3}  " + " ".join(f"{row[c]:10.3f}" for c in COLUMNS))
    print(
        "\na/a: vaekit eager over the same call under a second name (1.00 up to noise).\n"
        "vs dist / vs nb / vs diff: vaekit eager over torch.distributions (validate_args=True), "
        "the notebook's formula\nand the diffusers formula. compiled vs nb compiled: both under "
        "torch.compile(fullgraph=True)."
    )
    memory = memory_rows()
    print(f"\nmemory at {SIZES[-1]}, in latent-sized float32 tensors")
    print(f"{'candidate':>20} {'saved beyond inputs':>20} {'peak':>6}")
    for name, saved, peak in memory:
        print(f"{name:>20} {saved:20.2f} {peak:6.2f}")
    if args.write is not None:
        args.write.write_text(rst(rows, memory, reps))
        print(f"\nwrote {args.write}")


if __name__ == "__main__":
    main()
