"""The LOAD DATA text of the bulk path (`shared.loadtext`): the default format's escapes and NULLs, and the
columns holding one value in every row, which a load sets instead of reading them from the text."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.dialects import mysql

from shared.loadtext import NULL, column_defaults, key_order, load_text, tsv
from shared.models import ChartEntry, Snapshot

DIALECT = mysql.dialect()
STAMP = dt.datetime(2026, 11, 3, 8, 30, 15, 250_000, tzinfo=dt.UTC)
SNAPSHOT = Snapshot.__table__  # type: ignore[attr-defined]
COLUMNS = [SNAPSHOT.c[name] for name in ("track_id", "week", "popularity", "trending", "updated_at")]


def _row(track_id: str, popularity: int | None, trending: bool) -> dict[str, object]:
    week = dt.date(2026, 11, 2)
    return {
        "track_id": track_id,
        "week": week,
        "popularity": popularity,
        "trending": trending,
        "updated_at": STAMP,
    }


def test_fields_are_escaped_only_where_needed() -> None:
    rows = [_row("plain", 7, True), _row("tab\there\nand\\slash", None, False)]
    lines = tsv(rows, COLUMNS, {}, DIALECT).decode().split("\n")
    assert lines[0] == "plain\t2026-11-02\t7\t1\t2026-11-03 08:30:15.250000"
    assert lines[1] == f"tab\\there\\nand\\\\slash\t2026-11-02\t{NULL}\t0\t2026-11-03 08:30:15.250000"
    assert lines[2] == ""  # the text ends with a newline


def test_columns_of_one_value_are_set_not_rendered() -> None:
    rows = [_row(f"song-{i}", None, True) for i in range(10)]
    text = load_text(rows, COLUMNS, {}, DIALECT)
    assert text.fixed == {
        "week": "2026-11-02",
        "popularity": None,
        "trending": "1",
        "updated_at": "2026-11-03 08:30:15.250000",
    }
    assert [c.name for c in text.columns] == ["track_id"]
    assert text.data.decode().split("\n")[:2] == ["song-0", "song-1"]


def test_the_first_column_is_always_rendered_and_constants_are_unescaped() -> None:
    rows = [_row("same\tid", 1, False), _row("same\tid", 1, False)]
    text = load_text(
        rows, [SNAPSHOT.c.track_id, SNAPSHOT.c.popularity_source], {"popularity_source": "a\\b"}, DIALECT
    )
    assert [c.name for c in text.columns] == ["track_id"]
    assert text.data == b"same\\tid\nsame\\tid\n"
    assert text.fixed == {"popularity_source": "a\\b"}  # a statement parameter: the value itself


def test_defaults_fill_the_columns_the_rows_lack() -> None:
    table = ChartEntry.__table__  # type: ignore[attr-defined]
    rows = [{"track_id": "a", "week": dt.date(2026, 11, 2), "region": "global", "rank": 1, "streams": None}]
    defaults = column_defaults(table, list(rows[0]))
    assert defaults == {"source": "chart", "is_demo": False}
    columns = [table.c[name] for name in [*rows[0], *defaults]]
    assert tsv(rows, columns, defaults, DIALECT) == f"a\t2026-11-02\tglobal\t1\t{NULL}\tchart\t0\n".encode()


def test_rows_in_key_order_are_left_as_they_are() -> None:
    rows = [_row(f"song-{i:04d}", i, False) for i in range(2000)]
    rows[500], rows[501] = rows[501], rows[500]  # a few out of place: close enough to the index order
    assert key_order(rows, ["track_id", "week"]) is None


def test_shuffled_rows_are_ordered_as_a_case_insensitive_index_with_ties_in_their_order() -> None:
    names = ["b-2", "A-1", "a_1", "B-10", "10", "a-1"]
    rows = [_row(name, i, False) for i, name in enumerate(names)]
    order = key_order(rows, ["track_id", "week"])
    # digits before letters; "A-1", "a_1" and "a-1" may be one key to the server: kept as given
    assert order is not None and [names[i] for i in order] == ["10", "A-1", "a_1", "a-1", "B-10", "b-2"]


def test_keys_with_other_than_ascii_text_are_not_ordered() -> None:
    rows = [_row(name, 1, False) for name in ["zeta", "café", "cafe", "alpha"]]
    assert key_order(rows, ["track_id", "week"]) is None
