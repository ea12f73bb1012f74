"""Optimisations of the predictor's plain design, all behind `SONGPOP_PREDICTOR_FASTPATH` (on by default).

The plain design is the FastAPI route in `api.py`, the ordinary database engine and Python's default
garbage collection; with the setting off the predictor gives the same answers that way (a test compares
them). Each trick here bypasses a layer of a framework for a measured gain (docs/rest.md, `make bench-api`):

- `resident.ResidentFastPath`: an ASGI middleware answering a resident song's forecast before routing;
- `bodies.gzipped_bodies`: the resident answers built from the rows without pydantic objects (same bytes);
- `reader.make_fast_reader`: an autocommit engine for the REST reads without the driver's ROLLBACK;
- `frozen_heap`: long-lived objects kept out of the collector's full passes.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

from .reader import make_fast_reader
from .resident import ResidentFastPath

__all__ = ["ResidentFastPath", "frozen_heap", "make_fast_reader"]


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """What is loaded so far (modules, models, clients) lives as long as the app: keep it out of the
    collector's full passes, which otherwise stall every request for 100-250 ms now and then."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()  # what was frozen can be collected again once the app is gone
