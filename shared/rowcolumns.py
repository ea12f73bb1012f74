"""Rows held as columns (`RowColumns`): a large write's rows without a dict per row.

A batch of 1,000,000 songs writes 2,000,000 prediction rows; as dicts they took about 1 GB before the first
byte was sent. `RowColumns` keeps one list per column and is still a sequence of rows (mappings): what
`shared.db.upsert` takes. The MySQL/MariaDB bulk path reads its columns as they are
(`shared.loadtext.values_of`); the plain path and SQLite's get dicts built as they iterate, a chunk at a
time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np


class RowColumns(Sequence[Mapping[str, Any]]):
    """Rows as one list of values per column, every list as long; indexing gives a row's dict, slicing
    and `take` give `RowColumns`."""

    def __init__(self, columns: Mapping[str, list[Any]]) -> None:
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self.columns = dict(columns)
        self._length = lengths.pop() if lengths else 0

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def column(self, name: str) -> list[Any]:
        return self.columns[name]

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> RowColumns: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | RowColumns:
        if isinstance(index, slice):
            return RowColumns({name: values[index] for name, values in self.columns.items()})
        return {name: values[index] for name, values in self.columns.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        names = self.names
        for values in zip(*self.columns.values(), strict=True):
            yield dict(zip(names, values, strict=True))

    def take(self, positions: Sequence[int]) -> RowColumns:
        """The rows at `positions`, in that order."""
        return RowColumns(
            {name: list(map(values.__getitem__, positions)) for name, values in self.columns.items()}
        )


def gathered(parts: Sequence[Sequence[Any]], part: np.ndarray, position: np.ndarray) -> list[Any]:
    """`[parts[part[k]][position[k]] for k ...]` at C speed: the parts laid end to end once, then indexed
    (the values are the parts' own objects, not copies)."""
    if not parts:
        return []
    starts = np.cumsum([0, *(len(p) for p in parts[:-1])], dtype=np.int64)
    flat = np.empty(sum(len(p) for p in parts), dtype=object)
    for start, values in zip(starts.tolist(), parts, strict=True):
        flat[start : start + len(values)] = values
    return flat[starts[part] + position].tolist()  # type: ignore[no-any-return]


def picked(values: Sequence[Any], index: np.ndarray) -> list[Any]:
    """`[values[i] for i in index]` at C speed."""
    return gathered([values], np.zeros(len(index), np.int64), index)
