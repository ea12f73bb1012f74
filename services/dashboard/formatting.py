"""How numbers, times and sparklines look on the pages (Jinja filters; static/live.js mirrors them)."""

from __future__ import annotations

import calendar
import datetime as dt
from typing import Any

from jinja2 import Environment

from shared.signals import Signal
from shared.weeks import add_weeks

from .service import ForecastCell, TrackDetail

SPARK_WIDTH, SPARK_HEIGHT = 100.0, 24.0
COMPACT = ((1e9, "B"), (1e6, "M"), (1e3, "K"))


def fmt_value(value: float | None, signal: str | None = None) -> str:
    """Popularity as a whole number within 0–100; streams compactly (1.2M)."""
    if value is None:
        return "—"
    if signal != Signal.STREAMS:
        return f"{min(100.0, max(0.0, value)):.0f}"  # the index is bounded; intervals may not be
    value = max(0.0, value)
    for size, suffix in COMPACT:
        if value >= size:
            scaled = value / size  # about three significant digits: 1.2M, 35.5K, 704K
            return (f"{scaled:.0f}" if scaled >= 100 else f"{scaled:.1f}".rstrip("0").rstrip(".")) + suffix
    return f"{value:.0f}"


def fmt_interval(cell: ForecastCell | None, signal: str | None = None) -> str:
    """`lower–upper` of an 80% interval, or nothing."""
    if cell is None or cell.lower is None or cell.upper is None:
        return ""
    return f"{fmt_value(cell.lower, signal)}–{fmt_value(cell.upper, signal)}"


def fmt_serving(cell: ForecastCell | None) -> str:
    """Which method serves a forecast and its skill against the best naive answer, in words (as
    static/trending.js writes it for live rows)."""
    if cell is None or not cell.method:
        return ""
    if cell.skill is None:
        return f"served by {cell.method}"
    return f"served by {cell.method}, skill {cell.skill:+.2f} against the best naive answer"


def fmt_metric(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def fmt_time(value: object) -> str:
    """An ISO string or datetime as `YYYY-MM-DD HH:MM UTC` (naive values are UTC)."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


SIGNAL_LABELS: dict[str, str] = {
    Signal.POPULARITY: "Popularity index (0–100)",
    Signal.STREAMS: "Weekly chart streams",
}


def signal_label(signal: str | None) -> str:
    return SIGNAL_LABELS.get(signal or "", "—")


def sparkline(values: list[float]) -> str:
    """SVG polyline points for a small trend line, scaled to the values' own range."""
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = SPARK_WIDTH / (len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{SPARK_HEIGHT - 2 - (v - low) / span * (SPARK_HEIGHT - 4):.1f}"
        for i, v in enumerate(values)
    )


def _epoch(day: dt.date) -> int:
    return calendar.timegm(day.timetuple())


def chart_data(detail: TrackDetail) -> dict[str, Any]:
    """What static/track.js needs to draw history, forecast and its 80% band (times in epoch seconds)."""
    forecasts = []
    if detail.week is not None:
        for horizon, cell in sorted(detail.forecasts.items()):
            forecasts.append(
                {
                    "h": horizon,
                    "t": _epoch(add_weeks(detail.week, horizon)),
                    "value": cell.value,
                    "lower": cell.lower,
                    "upper": cell.upper,
                }
            )
    return {
        "track_id": detail.track_id,
        "signal": detail.signal,
        "region": detail.region,
        "anchor": _epoch(detail.week) if detail.week else None,
        "current": detail.current,
        "history": [[_epoch(week), value] for week, value in detail.history],
        "forecasts": forecasts,
    }


HEADLINE_COUNTS = ("tracks", "snapshots", "chart_entries", "predictions")


def headline_counts(counts: dict[str, Any]) -> list[tuple[str, Any]]:
    """The counts worth a glance (the rest go in a tooltip): the main ones, else every non-zero one."""
    main = [(k, counts[k]) for k in HEADLINE_COUNTS if k in counts]
    return main or [(k, v) for k, v in sorted(counts.items()) if v]


def register(env: Environment) -> None:
    """Install the filters and globals the templates use."""
    env.filters.update(
        value=fmt_value,
        interval=fmt_interval,
        serving=fmt_serving,
        metric=fmt_metric,
        time=fmt_time,
        sparkline=sparkline,
        headline_counts=headline_counts,
    )
    env.globals.update(signal_label=signal_label)
