"""How work uses the cores: an ordered, bounded look-ahead map (image work in a pool runs ahead of
its consumer, a model) and :func:`one_thread` for small models."""
from __future__ import annotations

import multiprocessing as mp
import sys
import threading
from contextlib import contextmanager
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


@contextmanager
def one_thread() -> Iterator[None]:
    """Run small models and per-box maths on one thread: torch's intra-op pool (where torch is
    loaded), numpy's BLAS and scikit-learn's OpenMP. On the busy 2-core machine here two
    OpenMP threads spinning made a 234-example tree fit take 30 CPU-s against 3.5 on one; two
    OpenMP threads waiting at barriers made one box-grader epoch 17x slower in wall time (60 s
    vs 3.6 s), and a (12, 3549) x (3549, 80) float64 product (the detector's class evidence per
    box) took 75 ms on two OpenBLAS threads against 1 ms on one; on a few thousand labels the
    ensemble's fits gain nothing from a pool either.

    Inside another ``one_thread`` of the same thread it does nothing: threadpoolctl scans the
    loaded libraries on every entry (3-5 ms), which grading paid once per image (0.6 s of
    grade() on 128 images)."""
    if getattr(_ONE_THREAD, "held", False):
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")   # never imported for this: the ensemble does without it
    n = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    _ONE_THREAD.held = True
    try:
        with threadpool_limits(1):   # BLAS and OpenMP (scikit-learn's trees) alike
            yield
    finally:
        _ONE_THREAD.held = False
        if torch is not None:
            torch.set_num_threads(n)


#: whether this thread is inside :func:`one_thread`
_ONE_THREAD = threading.local()
