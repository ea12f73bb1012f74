"""Python's cyclic garbage collector paused through the bulk phases of a long-running service.

A new week's batch makes millions of short-lived containers (rows, messages, answers) while the process holds
a large resident heap, and every full collection walks every tracked object: `make bench-scale` measured
1.3-1.4 s of collection in 20 full collections at 100,000 songs and 25.5-31.7 s in 106-115 at 1,000,000
(20x for 10x the songs: the part of the handling that grew faster than the songs). Reference counting frees
the batch's objects as they go; the few cycles among them are young, and the first collection after the pause
takes them (the collector's own thresholds: no forced full collection, since the resident answers' warmer
passes through a pause every few seconds). Phases that overlap (the batch, its publishing, the rebuild)
share one pause: the collector is on again when the last of them ends, and stays off if something else had
turned it off.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_holders = 0
_resume = False  # whether the collector was on when the first holder paused it


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No automatic cyclic collection inside; the collector on again when the last overlapping pause ends."""
    global _holders, _resume
    with _lock:
        if _holders == 0:
            _resume = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _resume:
                gc.enable()
