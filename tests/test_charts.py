"""Chart CSV reader: both formats, names, corrupted files, and every real chart folder."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest

from shared.charts import ChartFormatError, iter_chart_paths, parse_chart_name, read_chart, week_charts
from shared.forecasting.panel import chart_panel_from_files
from shared.forecasting.synthetic import OLD_DISCLAIMER

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ID_A, ID_B, ID_C = "5knuzwU65gJK7IF5yJsuaW", "5lyTvBqxtjyPray48fCWgj", "7BKLCZ1jbUBVqRi2FVlTVw"


def old_chart(folder: Path, name: str, rows: list[str]) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([OLD_DISCLAIMER, 'Position,"Track Name",Artist,Streams,URL', *rows]) + "\n")
    return path


def old_row(rank: int, track_id: str, streams: str = "1000", name: str = "Song") -> str:
    return f'{rank},"{name}","Artist {rank}",{streams},https://open.spotify.com/track/{track_id}'


NEW_HEADER = "rank,uri,artist_names,track_name,source,peak_rank,previous_rank,weeks_on_chart,streams"


def new_chart(folder: Path, name: str, rows: list[str]) -> Path:
    path = folder / name
    path.write_bytes(("\ufeff" + "\r\n".join([NEW_HEADER, *rows]) + "\r\n").encode("utf-8"))
    return path


def test_old_format_weekly_with_date_and_region_from_the_name(tmp_path: Path) -> None:
    path = old_chart(
        tmp_path,
        "it_2016-12-23--2016-12-30.csv",
        [old_row(1, ID_A, "707134", "Rockabye (feat. Sean Paul & Anne-Marie)"), old_row(2, ID_B, "571758")],
    )
    chart = read_chart(path)
    assert (chart.region, chart.period, chart.format) == ("it", "weekly", "spotifycharts")
    assert chart.series == "it"  # a weekly chart is its region's
    assert chart.date == dt.date(2016, 12, 29)  # the end date is the next chart's first day
    assert chart.week == dt.date(2016, 12, 26) and chart.week.weekday() == 0
    assert [r.rank for r in chart.rows] == [1, 2]
    assert chart.rows[0].track_id == ID_A and chart.rows[0].streams == 707134
    assert chart.rows[0].track_name == "Rockabye (feat. Sean Paul & Anne-Marie)"
    assert chart.rows[0].artists == ["Artist 1"]
    assert chart.problems == [] and len(chart.sha256) == 64
    assert chart.floor_streams == 571758


def test_new_format_bom_crlf_quoted_numbers(tmp_path: Path) -> None:
    path = new_chart(
        tmp_path,
        "regional-global-weekly-2024-08-29.csv",
        [
            f'1,spotify:track:{ID_A},"Sabrina Carpenter, Someone Else",Espresso,Island,1,-1,"1","12,345,678"',
            f'2,spotify:track:{ID_B},Artist B,"Song, with comma",Label,"2","3",5,"9876543"',
        ],
    )
    chart = read_chart(path)
    assert (chart.region, chart.period, chart.format) == ("global", "weekly", "charts.spotify.com")
    assert chart.week == dt.date(2024, 8, 26)
    assert chart.rows[0].artists == ["Sabrina Carpenter", "Someone Else"]
    assert chart.rows[0].streams == 12_345_678
    assert chart.rows[1].track_name == "Song, with comma" and chart.rows[1].streams == 9_876_543


def test_daily_name_folder_region_and_explicit_overrides(tmp_path: Path) -> None:
    daily = old_chart(tmp_path, "regional-it-daily-2020-01-01.csv", [old_row(1, ID_A)])
    chart = read_chart(daily)
    assert (chart.region, chart.period, chart.week) == ("it", "daily", dt.date(2019, 12, 30))
    assert chart.series == "it-daily" and chart.weekly_streams(chart.rows[0]) == 7_000  # 1,000 that day
    in_folder = old_chart(tmp_path / "de", "chart-2020-03-05.csv", [old_row(1, ID_A)])
    assert read_chart(in_folder).region == "de"
    explicit = read_chart(in_folder, region="fr", week=dt.date(2021, 6, 2))
    assert (explicit.region, explicit.week) == ("fr", dt.date(2021, 5, 31))
    nameless = old_chart(tmp_path, "export.csv", [old_row(1, ID_A)])
    with pytest.raises(ChartFormatError, match="no region"):
        read_chart(nameless)


def test_a_series_week_is_its_latest_file_in_the_reader_and_the_panel(tmp_path: Path) -> None:
    days = {  # Italy's daily chart on three days of one week, its weekly chart, and the next Monday's list
        "regional-it-daily-2024-08-26.csv": [old_row(1, ID_A, "5000"), old_row(2, ID_B, "900")],
        "regional-it-daily-2024-08-28.csv": [old_row(1, ID_B, "4000"), old_row(2, ID_C, "2000")],
        "regional-it-daily-2024-08-27.csv": [old_row(1, ID_C, "3000")],
        "regional-it-weekly-2024-08-29.csv": [old_row(1, ID_A, "90000")],
        "regional-it-daily-2024-09-02.csv": [old_row(1, ID_A, "6000")],
    }
    charts = [read_chart(old_chart(tmp_path, name, rows)) for name, rows in days.items()]
    kept = week_charts(charts)  # Wednesday's daily file, the weekly file, the next week's daily file
    assert sorted(c.name for c in kept) == sorted(list(days)[i] for i in (1, 3, 4))

    panel = chart_panel_from_files([tmp_path])
    week = panel.entries[panel.entries["region"] == "it-daily"]
    first_week = week[week["week"] == week["week"].min()]
    assert sorted(zip(first_week["track"], first_week["rank"], strict=True)) == [(ID_B, 1), (ID_C, 2)]
    floors = panel.charts[panel.charts["region"] == "it-daily"]["log_floor"]
    assert floors.round(6).tolist() == [round(math.log(2000 * 7), 6), round(math.log(6000 * 7), 6)]


def test_parse_chart_name_variants() -> None:
    assert parse_chart_name("x/us/us_2019-02-22--2019-03-01.csv").region == "us"
    assert parse_chart_name("regional-br-weekly-2023-01-05.csv").period == "weekly"


def test_truncated_file_keeps_the_complete_rows(tmp_path: Path) -> None:
    path = old_chart(tmp_path, "gb_2018-01-05--2018-01-12.csv", [old_row(1, ID_A), old_row(2, ID_B)])
    content = path.read_text()
    path.write_text(content + '3,"Cut off in the mid')  # the download stopped inside a row
    chart = read_chart(path)
    assert [r.track_id for r in chart.rows] == [ID_A, ID_B]
    assert len(chart.problems) == 1
    problem = chart.problems[0]
    assert problem.file == path.name and problem.line == 5 and "truncated" in problem.reason


def test_wrong_header_names_file_line_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "us_2018-01-05--2018-01-12.csv"
    path.write_text("date,song,plays\n2018-01-05,x,3\n")
    with pytest.raises(ChartFormatError) as err:
        read_chart(path)
    assert err.value.file == str(path) and err.value.line >= 1
    assert "no chart header" in str(err.value) and str(path) in str(err.value)


def test_empty_and_binary_files_are_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "us_2018-01-05--2018-01-12.csv"
    empty.write_text("")
    with pytest.raises(ChartFormatError, match="empty file"):
        read_chart(empty)
    binary = tmp_path / "us_2018-01-12--2018-01-19.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(ChartFormatError, match="not UTF-8"):
        read_chart(binary)


def test_non_numeric_streams_is_a_problem_not_a_failure(tmp_path: Path) -> None:
    path = old_chart(
        tmp_path,
        "fr_2018-01-05--2018-01-12.csv",
        [old_row(1, ID_A), old_row(2, ID_B, "lots"), old_row(3, ID_C)],
    )
    chart = read_chart(path)
    assert [r.rank for r in chart.rows] == [1, 3]
    assert len(chart.problems) == 1
    assert chart.problems[0].line == 4 and "not a number" in chart.problems[0].reason
    assert str(chart.problems[0]).startswith(f"{path.name}:4:")


def test_duplicate_rows_are_problems_and_the_first_is_kept(tmp_path: Path) -> None:
    path = old_chart(
        tmp_path,
        "es_2018-01-05--2018-01-12.csv",
        [old_row(1, ID_A, "900"), old_row(1, ID_A, "900"), old_row(2, ID_A, "800"), old_row(3, ID_B, "700")],
    )
    chart = read_chart(path)
    assert [(r.rank, r.track_id) for r in chart.rows] == [(1, ID_A), (3, ID_B)]
    assert [p.line for p in chart.problems] == [4, 5]
    assert all("duplicate" in p.reason for p in chart.problems)


def test_bad_links_and_ranks(tmp_path: Path) -> None:
    path = old_chart(
        tmp_path,
        "br_2018-01-05--2018-01-12.csv",
        [old_row(1, ID_A), '2,"x","y",10,https://example.com/nope', '0,"x","y",10,', '4,"No link","y",10,'],
    )
    chart = read_chart(path)
    assert [(r.rank, r.track_id) for r in chart.rows] == [(1, ID_A), (4, None)]
    assert {p.line for p in chart.problems} == {4, 5}


def test_a_file_with_no_readable_row_raises(tmp_path: Path) -> None:
    path = old_chart(tmp_path, "br_2018-01-05--2018-01-12.csv", ['x,"a","b",c,d'])
    with pytest.raises(ChartFormatError, match="no readable chart rows"):
        read_chart(path)


def test_iter_chart_paths_sorted_by_chart_date(tmp_path: Path) -> None:
    later = old_chart(tmp_path / "it", "it_2018-01-12--2018-01-19.csv", [old_row(1, ID_A)])
    earlier = old_chart(tmp_path / "us", "us_2018-01-05--2018-01-12.csv", [old_row(1, ID_A)])
    newest = new_chart(
        tmp_path, "regional-global-weekly-2024-08-29.csv", [f"1,spotify:track:{ID_A},a,b,c,1,1,1,5"]
    )
    (tmp_path / "notes.txt").write_text("not a chart")
    assert iter_chart_paths([tmp_path]) == [earlier, later, newest]
    with pytest.raises(FileNotFoundError):
        iter_chart_paths([tmp_path / "missing"])


@pytest.mark.real_data
def test_every_real_chart_folder_loads() -> None:
    folders = [REAL_DATA / "charts-weekly-2017-2020", REAL_DATA / "charts-it-daily-monthly-2020-2021"]
    if not all(f.is_dir() for f in folders):
        pytest.skip("../shared/data is absent")
    weekly = [read_chart(p) for p in iter_chart_paths([folders[0]])]
    daily = [read_chart(p) for p in iter_chart_paths([folders[1]])]
    assert sum(len(c.rows) for c in weekly) == 315_200
    assert len({r.track_id for c in weekly for r in c.rows}) == 19_259
    assert {c.region for c in weekly} == {"br", "de", "es", "fr", "gb", "global", "in", "it", "us"}
    assert all(c.period == "weekly" and c.week.weekday() == 0 for c in weekly)
    assert len({(c.region, c.week) for c in weekly}) == len(weekly)  # one chart per region and week
    assert sum(len(c.rows) for c in daily) == 4_800 and all(c.period == "daily" for c in daily)
    assert not any(c.problems for c in weekly + daily)
