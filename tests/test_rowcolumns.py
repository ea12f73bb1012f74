"""Rows held as columns (`shared.rowcolumns`): a sequence of row dicts to whoever reads it as one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shared.rowcolumns import RowColumns, gathered, picked

COLUMNS: dict[str, list[Any]] = {"id": ["a", "b", "c", "d"], "value": [1.5, None, 3.0, 4.25]}


def test_rows_read_as_dicts_slices_and_takes_as_columns() -> None:
    rows = RowColumns(COLUMNS)
    assert len(rows) == 4 and rows.names == ["id", "value"]
    assert rows[1] == {"id": "b", "value": None} and rows[-1] == {"id": "d", "value": 4.25}
    assert list(rows) == [{"id": i, "value": v} for i, v in zip(COLUMNS["id"], COLUMNS["value"], strict=True)]
    part = rows[1:3]
    assert isinstance(part, RowColumns) and part.column("id") == ["b", "c"]
    taken = rows.take([3, 0, 3])
    assert taken.column("value") == [4.25, 1.5, 4.25] and taken.column("id") == ["d", "a", "d"]
    assert len(RowColumns({})) == 0 and list(RowColumns({"id": []})) == []


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="lengths"):
        RowColumns({"id": ["a"], "value": []})


def test_gathered_picks_from_parts_laid_end_to_end() -> None:
    parts = [["a0", "a1"], [], ["c0", "c1", "c2"]]
    part, position = np.array([2, 0, 2, 0]), np.array([2, 1, 0, 0])
    assert gathered(parts, part, position) == ["c2", "a1", "c0", "a0"]
    assert gathered([], np.zeros(0, np.int64), np.zeros(0, np.int64)) == []
    day = object()
    assert picked([day, None, 7], np.array([0, 2, 1, 0])) == [day, 7, None, day]
    assert picked([day], np.array([0]))[0] is day  # the values themselves, not copies
