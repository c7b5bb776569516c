"""A world of threads: a ``dist_sync_fn`` that all-gathers between threads, without processes.

Each thread plays one process. :meth:`ThreadWorld.gather` has ``all_gather``'s contract (every
rank gets every rank's tensor, in rank order) and logs the shape and dtype of each call, so a
test can check that every rank made the same collectives: a real backend hangs or aborts when
they differ, while this world would exchange mismatched tensors and let the logs tell.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


class ThreadWorld:
    """``size`` threads that gather through shared slots; a thread left waiting times out."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls: list[list[tuple[tuple[int, ...], torch.dtype]]] = [[] for _ in range(size)]
        self._slots: list[Tensor] = [torch.empty(0)] * size
        self._barrier = threading.Barrier(size, timeout=5)
        self._local = threading.local()

    def gather(self, tensor: Tensor, group: Any = None) -> list[Tensor]:
        rank: int = self._local.rank
        self.calls[rank].append((tuple(tensor.shape), tensor.dtype))
        self._slots[rank] = tensor.detach().clone()
        self._barrier.wait()
        gathered = list(self._slots)
        self._barrier.wait()  # nobody overwrites a slot before everyone has read it
        return gathered

    def run(self, fn: Callable[[int], T]) -> list[T | Exception]:
        """Run ``fn(rank)`` on every rank; return each result, or the exception it raised."""
        results: list[T | Exception] = [RuntimeError("did not finish")] * self.size

        def target(rank: int) -> None:
            self._local.rank = rank
            try:
                results[rank] = fn(rank)
            except Exception as err:  # handed to the test
                results[rank] = err

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results
