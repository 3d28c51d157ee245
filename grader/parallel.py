"""Ordered, bounded look-ahead map: image work in a pool runs ahead of its consumer (a model)."""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int, prefetch: int = 8,
                 pool: str = "threads") -> Iterator[R]:
    """``map(fn, items)`` in input order, with at most ``prefetch`` items in flight.

    ``workers <= 0`` runs serially in the caller. ``pool="processes"`` uses spawned processes
    (``fn`` and items must pickle): worth it when the consumer needs the GIL, e.g. a thread
    launching GPU kernels.
    """
    if pool not in ("threads", "processes"):
        raise ValueError(f"pool must be 'threads' or 'processes', got {pool!r}")
    if workers <= 0:
        yield from map(fn, items)
        return
    ex = (ThreadPoolExecutor(max_workers=workers) if pool == "threads" else
          ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")))
    try:
        it = iter(items)
        pending = [ex.submit(fn, x) for _, x in zip(range(max(prefetch, 1)), it)]
        while pending:
            result = pending.pop(0).result()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append(ex.submit(fn, nxt))
            yield result
    except BaseException:
        # Closed early or failed: cancel what is queued and do not join the workers (they end
        # after their current item). A generator the consumer dropped is closed by the garbage
        # collector in whatever thread it runs, once inside another thread's start-up, where
        # joining threads deadlocked a CI run.
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


_END = object()
