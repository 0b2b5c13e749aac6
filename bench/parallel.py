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
from itertools import chain, islice
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator


def ordered_map(fn: Callable[..., Any], args: Iterable[tuple[Any, ...]], workers: int | None = None,
                ahead: int = 2) -> Iterator[Any]:
    """``fn(*a)`` for each ``a`` in ``args``, computed in worker processes, yielded in order.

    At most ``workers * ahead`` results wait at a time, so memory stays at a
    few chunks however many there are. ``fn`` must be a module-level function.
    One worker (or one core, or a single item) computes in this process, without a pool.
    """
    workers = workers or os.cpu_count() or 1
    items = iter(args)
    first = list(islice(items, 2))
    # One item (a smoke run's city is one chunk) is computed here too: a pool would only add its start.
    if workers <= 1 or len(first) < 2:
        for a in chain(first, items):
            yield fn(*a)
        return
    args = chain(first, items)
    # fork: the workers start at once with this process's modules (no re-import per worker).
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        pending: deque[Future[Any]] = deque()
        for a in args:
            pending.append(pool.submit(fn, *a))
            if len(pending) >= workers * ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
