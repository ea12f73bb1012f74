"""The batch this process just stored, held for its resident answers, and whether one is being stored.

After a new week every song's resident answer is rebuilt. Its predictions are the batch's: this process
computed them, so instead of reading back the 200,000 rows it just wrote (100,000 songs), the rebuild takes
them from the rows it stored (`ScoredWeek`), still in memory; the songs' other data (the song, its
snapshots and chart entries, written by the ingestor) are read as before.

The held rows stand for what the database holds only while no other write of predictions came after them,
which the outbox says: the transaction that stores a batch stages its songs' row
(`batch_messages.songs_row`), and the resident answers take the held batch (`take`) when the rows they
apply hold that row and no other prediction row (`tracks.apply_changes`). A look that cannot tell (the
first at start-up, a late commit) reads everything back.

While a batch is being scored and stored (`storing`), a rebuild of songs it is about to replace waits: the
`db-updated` that starts it also drops every answer (the songs' history moved), and rebuilding them
from the old predictions then would cost as much CPU as the rebuild that follows, beside the scoring.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from shared.outbox import Staged
from shared.rowcolumns import RowColumns

# The stored prediction columns a resident answer reads, in the order its read gives them.
PREDICTION_COLUMNS = (
    "week", "signal", "region", "horizon_weeks", "current", "value", "lower", "upper", "p_chart",
    "model_version", "cold_start",
)  # fmt: skip


@dataclass(frozen=True)
class ScoredWeek:
    """A stored batch's prediction rows (by song, then signal and horizon, as stored), and the outbox row
    of its songs' messages staged with them: (its id, its event id)."""

    row: tuple[int, str]
    week: dt.date
    rows: RowColumns

    @functools.cached_property
    def spans(self) -> dict[str, tuple[int, int]]:
        """Each song's rows: (first, end)."""
        spans: dict[str, tuple[int, int]] = {}
        for k, track_id in enumerate(self.rows.column("track_id")):
            first = spans.get(track_id, (k, k))[0]
            spans[track_id] = (first, k + 1)
        return spans

    def __contains__(self, track_id: object) -> bool:
        return track_id in self.spans

    def predictions(self, track_ids: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
        """The rows of these songs of the batch as tuples of `PREDICTION_COLUMNS`, by song."""
        spans = [self.spans[i] for i in track_ids]
        positions = [k for first, end in spans for k in range(first, end)]
        columns = [list(map(self.rows.column(name).__getitem__, positions)) for name in PREDICTION_COLUMNS]
        rows = list(zip(*columns, strict=True))
        ends = accumulate(end - first for first, end in spans)
        starts = accumulate((end - first for first, end in spans), initial=0)
        return {i: rows[a:b] for i, a, b in zip(track_ids, starts, ends, strict=False)}


_held: ScoredWeek | None = None  # the last batch this process stored, until a resident store takes it
_storing = 0  # batches being scored and stored by this process


def hold(songs_row: Staged, rows: RowColumns) -> None:
    """Keep a batch's rows, about to be committed with its songs' outbox row `songs_row`, in place of any
    batch held before (none when its rows are not of one anchor week: each song's answer reads its own)."""
    global _held
    weeks = set(rows.column("week"))
    _held = ScoredWeek((songs_row.id, songs_row.event_id), weeks.pop(), rows) if len(weeks) == 1 else None


def forget() -> None:
    """Drop the batch held (its transaction failed)."""
    global _held
    _held = None


def take(row: tuple[int, str]) -> ScoredWeek | None:
    """The batch held whose songs' outbox row is `row` (id, event id), given up by the holder; None when
    another is held, or none."""
    global _held
    held, _held = _held, None
    if held is not None and held.row != row:
        _held = held
        return None
    return held


@contextlib.contextmanager
def storing() -> Iterator[None]:
    """Mark a batch as being scored and stored by this process for the duration."""
    global _storing
    _storing += 1
    try:
        yield
    finally:
        _storing -= 1


def is_storing() -> bool:
    return _storing > 0
