"""Keep Python's garbage collector off the request path.

The imported libraries and a loaded model are hundreds of thousands of long-lived objects. A full
collection walks all of them (~0.2 s with a 100-tree forest) and lands on whichever request triggers it,
so after each load everything alive is frozen: out of the collector's sight, which is what `gc.freeze`
is for. Released models are collected before anything else is loaded (their reference cycles, if any,
must not survive into the next model's memory). The freeze after a load does not collect first: a full
collection walks the whole heap (a large share of a mapped load's time, benchmarks/load_bench.py), and the
little cyclic garbage a load leaves is collected with the next release.

A request allocates a container per row (a 1,000-row body is ~1,000 lists, all freed by reference
counting when it ends); at the default threshold of 700 that runs a young collection on every such
request. Collections of the young generation every YOUNG_THRESHOLD allocations cost the same work,
spread over many requests.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune_for_requests() -> None:
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def collect_released() -> None:
    """Free what released models left, including objects frozen with them."""
    gc.unfreeze()
    gc.collect()


def freeze_survivors() -> None:
    """After a load: freeze what is alive (released models were collected before the load began)."""
    gc.freeze()
