"""The two popularity signals songpop forecasts; every branch on a signal takes one of these."""

from __future__ import annotations

from enum import StrEnum


class Signal(StrEnum):
    """Which popularity signal a forecast is of: weekly chart streams or Spotify's popularity index."""

    STREAMS = "streams"  # weekly chart streams, from the Top-200 chart files
    POPULARITY = "popularity"  # Spotify's popularity index (0-100): Extended Quota or imported history
