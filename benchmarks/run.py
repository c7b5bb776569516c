"""Benchmark the KL term: vaekit against torch.distributions and hand-written formulas.

Run from the repository root::

    python benchmarks/run.py            # full table, a few minutes on 2 cores
    python benchmarks/run.py --quick    # fewer repetitions, for a smoke run

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


def floor(numel: int) -> Callable[[], None]:
    """Forward+backward reads mu and log_var twice and writes two gradients: the memory
    traffic of three copies of a latent-sized tensor."""
    src, dst = torch.randn(numel), torch.empty(numel)

    def copies() -> None:
        for _ in range(3):
            dst.copy_(src)

    return copies


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


def bandwidth(numel: int, reps: int) -> float:
    """Bytes per second of a copy_ between two float32 tensors of numel elements."""
    src, dst = torch.randn(numel), torch.empty(numel)
    dst.copy_(src)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * 4 * numel / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reps_small, reps_large = (30, 7) if args.quick else (400, 101)
    # A long-running process has freed large blocks long ago, which makes glibc serve later
    # allocations from its heap instead of fresh pages; without this, the first candidates
    # to allocate latent-sized temporaries pay page faults that later ones do not.
    torch.ones(2**23).sum()  # 32 MiB, allocated and freed

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, float32, CPU")
    print("forward+backward of the KL term reduced to a scalar; median of paired ratios\n")
    header = (
        f"{'shape':>18} {'thr':>3}  {'a/a':>5} {'vs dist':>7} {'vs nb':>6} {'vs diff':>7}"
        f" {'comp/nb':>7} {'floor x':>7}  {'eager ms':>8} {'nb ms':>7}"
    )
    print(header)
    print("-" * len(header))
    compiled: dict[tuple[int, tuple[int, ...]], Loss] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for shape in SIZES:
            numel = math.prod(shape)
            mu, log_var = make_inputs(shape)
            key = (threads, shape)
            compiled[key] = torch.compile(kl_divergence_normal, fullgraph=True, dynamic=False)
            fns: dict[str, Loss] = {
                "eager": vaekit_eager,
                "again": vaekit_again,
                "compiled": compiled[key],
                "dist": distributions,
                "nb": notebook,
                "diff": diffusers,
            }
            candidates = {name: bind(f, mu, log_var) for name, f in fns.items()}
            candidates["floor"] = floor(numel)
            reps = reps_small if numel < 100_000 else reps_large
            t = paired_ratios(candidates, reps)
            print(
                f"{shape!s:>18} {threads:>3}"
                f"  {median_ratio(t['eager'], t['again']):5.2f}"
                f"  {median_ratio(t['eager'], t['dist']):7.2f}"
                f" {median_ratio(t['eager'], t['nb']):6.2f}"
                f" {median_ratio(t['eager'], t['diff']):7.2f}"
                f" {median_ratio(t['compiled'], t['nb']):7.2f}"
                f" {median_ratio(t['compiled'], t['floor']):7.2f}"
                f"  {1e3 * statistics.median(t['eager']):8.3f}"
                f" {1e3 * statistics.median(t['nb']):7.3f}"
            )
    print(
        "\na/a: vaekit eager over the same call under a second name (1.00 up to noise).\n"
        "vs dist / vs nb / vs diff: vaekit eager time over torch.distributions "
        "(validate_args=True),\nthe notebook's formula, the diffusers formula. comp/nb: vaekit "
        "compiled over the notebook.\nfloor x: vaekit compiled over the bandwidth floor "
        "(three same-sized copy_ calls, interleaved)."
    )

    torch.set_num_threads(1)
    shape = SIZES[-1]
    numel = math.prod(shape)
    latent = 4 * numel
    print(f"\nmemory at {shape} (1 latent-sized float32 tensor = {latent / 2**20:.1f} MiB)")
    print(f"{'candidate':>12} {'saved beyond inputs':>20} {'peak extra':>11}")
    for name, fn in [
        ("eager", vaekit_eager),
        ("compiled", compiled[(1, shape)]),
        ("dist", distributions),
        ("nb", notebook),
        ("diff", diffusers),
    ]:
        mu, log_var = make_inputs(shape)
        saved = saved_bytes_beyond_inputs(fn, mu, log_var) / latent
        peak = peak_bytes(fn, mu, log_var) / latent
        print(f"{name:>12} {saved:17.2f} x {peak:9.2f} x")
    print("(x: latent-sized float32 tensors; peak includes the two gradients)")

    gbs = bandwidth(numel, 21) / 1e9
    big = bandwidth(64 * 2**20, 5) / 1e9
    floor_ms = 3 * 2 * latent / (gbs * 1e9) * 1e3
    print(
        f"\nbandwidth (copy_, 1 thread): {gbs:.1f} GB/s at {latent / 2**20:.0f} MiB, "
        f"{big:.1f} GB/s at 256 MiB; floor for {shape}: {floor_ms:.2f} ms"
    )


if __name__ == "__main__":
    main()
