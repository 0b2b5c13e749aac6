"""Chunks of generated data made on every core, consumed in order (the benchmarks' set-up, not what they time).

Generating a million spots and turning them into file text or table rows is
pure Python per spot, single-threaded, and was a third of ``make bench``;
the consumer (a file, a database) takes them in order while the other cores
make the next ones.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator


def ordered_map(fn: Callable[..., Any], args: Iterable[tuple[Any, ...]], workers: int | None = None,
                ahead: int = 2) -> Iterator[Any]:
    """``fn(*a)`` for each ``a`` in ``args``, computed in worker processes, yielded in order.

    At most ``workers * ahead`` results wait at a time, so memory stays at a
    few chunks however many there are. ``fn`` must be a module-level function.
    One worker (or one core) computes in this process, without a pool.
    """
    workers = workers or os.cpu_count() or 1
    if workers <= 1:
        for a in args:
            yield fn(*a)
        return
    # fork: the workers start at once with this process's modules (no re-import per worker).
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        pending: deque[Future[Any]] = deque()
        for a in args:
            pending.append(pool.submit(fn, *a))
            if len(pending) >= workers * ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
