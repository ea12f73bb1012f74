"""A deterministic generated Spotify catalog whose popularity evolves week by week.

Everything is drawn from one seed with vectorised numpy, so a 20,000-track catalog is built in a fraction
of a second and the same seed always gives the same artists, albums, tracks, popularity and charts.

Dynamics of a track's popularity (0-100) at week w, `a` weeks after its release:
rise over a song-specific number of weeks, decay from its peak towards a floor at a song-specific
half-life, an optional comeback bump (a sync, a viral moment), a yearly Christmas bump for seasonal songs,
and a little weekly noise. Weekly streams follow from popularity (log-linear, with a per-region taste),
so the Top-200 charts are consistent with the popularity the API reports.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from shared.weeks import week_of

EPOCH = dt.date(2014, 1, 6)  # a Monday: week index 0 of the catalog
CATALOG_WEEKS = 16 * 52  # releases spread from EPOCH to about 2029
CHART_SIZE = 200
HISTORY_CHUNK_WEEKS = 52  # weeks of streams computed at once when a chart's history is first needed
TRENDING_SIZE = 50
CHART_HEADER = [
    "rank", "uri", "artist_names", "track_name", "source",
    "peak_rank", "previous_rank", "weeks_on_chart", "streams",
]  # fmt: skip
REGION_SCALE = {"global": 1.0, "us": 0.22, "gb": 0.06, "de": 0.06, "br": 0.07, "mx": 0.06, "fr": 0.04}
OTHER_REGION_SCALE = 0.03


def _words(text: str, sep: str = " ") -> list[str]:
    return text.split(sep)


ALPHABET = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
WORDS_A = _words(
    "Golden Broken Midnight Electric Silent Neon Wild Lonely Velvet Burning Paper Summer "
    "Crystal Faded Hollow Sweet Bitter Endless Falling Restless Blue Crimson Lucky Quiet "
    "Savage Tender Frozen Hidden"
)
WORDS_B = _words(
    "Heart Lights Dreams River Fire Echo Road Ocean Skies Nights Rain Stars Mirror Shadows "
    "Waves Garden Thunder Letters Streets Roses Highway Satellite Paradise Horizon Memories "
    "Diamonds Ghosts Angels"
)
FIRST = _words(
    "Mila Theo Ava Luca Nova Kai Zoe Leo Ivy Omar Lena Max Aria Jude Nia Eli Sol Remy Yara "
    "Finn Ines Bo Cleo Dario Esme Felix Gaia Hugo Iris Jonas"
)
LAST = _words(
    "Rivers Stone Vega Moreau Kline Santos Nakamura Reyes Holm Adeyemi Costa Lindqvist Petrov "
    "Haddad Okafor Brandt Silva Novak Quinn Marlowe"
)
BANDS = _words("Wolves Comets Parade Machines Saints Tigers Pilots Ghosts Sirens Lanterns Owls Kings")
LABELS = _words(
    "Northbound Records|Polar Music Group|Blue Harbor|Sunset Audio|Indie Lane|"
    "Big Wave Entertainment|Nightjar Recordings|Lighthouse Music|Red Fern|Open Sky Records|"
    "Atlas Sound|Copper Coast",
    "|",
)
GENRES = _words(
    "pop|dance pop|hip hop|rap|indie|rock|r&b|latin|k-pop|edm|afrobeats|country|reggaeton|soul",
    "|",
)
HTML_SUFFIXES = [" &amp; Friends", " <3", " <b>Live</b>", " (Rock &amp; Roll)", " Tom &quot;The Voice&quot;"]
EMOJI_SUFFIXES = [" 🔥", " 💔", " ✨", " 🌙", " 🇧🇷", " 👩‍🎤"]
ISRC_COUNTRIES = ["US", "GB", "DE", "SE", "FR", "IT", "BR", "KR", "QZ"]
MARKETS = ["US", "GB", "DE", "FR", "IT", "ES", "BR", "MX", "SE", "JP", "IN", "AU"]


@dataclass(frozen=True)
class ChartRow:
    """One row of a weekly Top-200 chart in charts.spotify.com's current format."""

    rank: int
    track_id: str
    artist_names: str
    track_name: str
    source: str
    peak_rank: int
    previous_rank: int  # -1 for a new entry
    weeks_on_chart: int
    streams: int

    @property
    def uri(self) -> str:
        return f"spotify:track:{self.track_id}"


def week_index(week: dt.date) -> int:
    """Weeks from the catalog's epoch to the ISO week containing `week`."""
    return (week_of(week) - EPOCH).days // 7


def week_date(index: int) -> dt.date:
    """The Monday of catalog week `index`."""
    return EPOCH + dt.timedelta(weeks=int(index))


def _ids(rng: np.random.Generator, n: int) -> list[str]:
    """`n` distinct 22-character base-62 ids, Spotify style."""
    while True:
        chars = np.ascontiguousarray(ALPHABET[rng.integers(0, len(ALPHABET), size=(n, 22))])
        ids = chars.view("<U22").ravel().tolist()
        if len(set(ids)) == n:
            return ids


def _pick(rng: np.random.Generator, words: list[str], n: int) -> np.ndarray:
    return np.array(words)[rng.integers(0, len(words), size=n)]


def _awkward_names(rng: np.random.Generator, names: np.ndarray, html: float, emoji: float) -> list[str]:
    """Names with a share of HTML fragments and emoji, as real catalogs have."""
    out = names.astype(object)
    draw = rng.random(len(names))
    html_at = np.flatnonzero(draw < html)
    emoji_at = np.flatnonzero((draw >= html) & (draw < html + emoji))
    out[html_at] = out[html_at] + _pick(rng, HTML_SUFFIXES, len(html_at)).astype(object)
    out[emoji_at] = out[emoji_at] + _pick(rng, EMOJI_SUFFIXES, len(emoji_at)).astype(object)
    return [str(s) for s in out]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: well-spread 64-bit hashes of `x`, vectorised."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class Catalog:
    """Artists, albums and tracks with week-by-week popularity, streams and charts."""

    def __init__(self, n_tracks: int = 20_000, seed: int = 7) -> None:
        self.n_tracks, self.seed = n_tracks, seed
        seq = np.random.SeedSequence(seed)
        self._rng_artists, self._rng_albums, self._rng_tracks, self._rng_dyn = (
            np.random.default_rng(s) for s in seq.spawn(4)
        )
        self._build_artists(max(50, n_tracks // 8))
        self._build_albums(n_tracks)
        self._build_tracks(n_tracks)
        self._build_dynamics()
        self.track_index = {tid: i for i, tid in enumerate(self.track_ids)}
        self.album_index = {aid: i for i, aid in enumerate(self.album_ids)}
        self.artist_index = {aid: i for i, aid in enumerate(self.artist_ids)}
        self._week_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._top_cache: dict[str, dict[int, np.ndarray]] = {}  # region -> week -> chart
        self._derived_cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()

    # ---- generation -------------------------------------------------------------------------------
    def _build_artists(self, n: int) -> None:
        rng = self._rng_artists
        self.artist_ids = _ids(rng, n)
        solo = np.char.add(np.char.add(_pick(rng, FIRST, n), " "), _pick(rng, LAST, n))
        band = np.char.add(
            "The ", np.char.add(np.char.add(_pick(rng, WORDS_A, n), " "), _pick(rng, BANDS, n))
        )
        names = np.where(rng.random(n) < 0.7, solo, band)
        self.artist_names = _awkward_names(rng, names, html=0.01, emoji=0.02)
        self.artist_followers_base = np.round(10 ** rng.uniform(2.5, 7.3, n)).astype(np.int64)
        genre_count = rng.choice([0, 1, 2, 3], size=n, p=[0.2, 0.4, 0.3, 0.1])
        self.artist_genres = [sorted(set(_pick(rng, GENRES, k).tolist())) for k in genre_count]
        # A few artists make most of the music (Zipf-like weights).
        weights = 1.0 / np.arange(1, n + 1) ** 0.8
        self._artist_weights = rng.permutation(weights / weights.sum())

    def _build_albums(self, n_tracks: int) -> None:
        rng = self._rng_albums
        m = n_tracks  # an upper bound; trimmed below
        kind = rng.choice(["single", "album", "compilation"], size=m, p=[0.55, 0.4, 0.05])
        sizes = np.where(kind == "single", rng.integers(1, 3, m), rng.integers(6, 16, m))
        ends = np.cumsum(sizes)
        count = int(np.searchsorted(ends, n_tracks)) + 1
        sizes = sizes[:count].copy()
        sizes[-1] -= int(ends[count - 1]) - n_tracks
        self.n_albums = count
        self.album_sizes = sizes
        self.album_type = kind[:count].tolist()
        self.album_ids = _ids(rng, count)
        names = np.char.add(np.char.add(_pick(rng, WORDS_A, count), " "), _pick(rng, WORDS_B, count))
        self.album_names = _awkward_names(rng, names, html=0.01, emoji=0.02)
        self.album_artist = rng.choice(len(self.artist_ids), size=count, p=self._artist_weights)
        # Releases on Fridays, more of them in recent years.
        self.album_release_week = np.floor(CATALOG_WEEKS * rng.power(1.6, count)).astype(np.int64)
        self.album_label = _pick(rng, LABELS, count).tolist()
        precision_draw = rng.random(count)
        self.album_precision = np.where(
            precision_draw < 0.03, "year", np.where(precision_draw < 0.06, "month", "day")
        ).tolist()
        self.album_zero_date = (precision_draw >= 0.995).tolist()  # Spotify's "0000" release dates
        self.album_hype = rng.beta(2.0, 4.0, count)

    def _build_tracks(self, n: int) -> None:
        rng = self._rng_tracks
        self.track_ids = _ids(rng, n)
        self.track_album = np.repeat(np.arange(self.n_albums), self.album_sizes)
        starts = np.cumsum(self.album_sizes) - self.album_sizes
        self.track_number = np.arange(n) - starts[self.track_album] + 1
        names = np.char.add(np.char.add(_pick(rng, WORDS_A, n), " "), _pick(rng, WORDS_B, n))
        self.track_names = _awkward_names(rng, names, html=0.01, emoji=0.03)
        self.track_duration = rng.integers(95_000, 330_000, n)
        self.track_explicit = rng.random(n) < 0.3
        self.track_has_isrc = rng.random(n) >= 0.01  # some records lack external_ids
        self.track_has_duration = rng.random(n) >= 0.002
        primary = self.album_artist[self.track_album]
        featured = rng.choice(len(self.artist_ids), size=n, p=self._artist_weights)
        has_feature = (rng.random(n) < 0.15) & (featured != primary)
        self.track_artists = [
            [int(p), int(f)] if h else [int(p)]
            for p, f, h in zip(primary.tolist(), featured.tolist(), has_feature.tolist(), strict=True)
        ]
        self._pair_track = np.array([t for t, arts in enumerate(self.track_artists) for _ in arts])
        self._pair_artist = np.array([a for arts in self.track_artists for a in arts])
        release_year = np.array([week_date(w).year for w in self.album_release_week])[self.track_album]
        registrant = np.ascontiguousarray(ALPHABET[rng.integers(10, 36, size=(n, 3))]).view("<U3").ravel()
        self.track_isrc = [
            f"{c}{r}{y % 100:02d}{s:05d}"
            for c, r, y, s in zip(
                _pick(rng, ISRC_COUNTRIES, n).tolist(),
                registrant.tolist(),
                release_year.tolist(),
                rng.integers(0, 100_000, n).tolist(),
                strict=True,
            )
        ]

    def _build_dynamics(self) -> None:
        rng, n = self._rng_dyn, self.n_tracks
        self.release_week = self.album_release_week[self.track_album]
        hype = self.album_hype[self.track_album]
        self.peak = np.clip(22 + 76 * (0.7 * hype + 0.3 * rng.beta(2.0, 5.0, n)) ** 0.8, 0, 100)
        self.floor_share = rng.uniform(0.3, 0.75, n)
        self.rise_weeks = rng.uniform(0.5, 4.0, n)
        self.half_life_weeks = np.exp(rng.normal(np.log(20.0), 0.9, n)).clip(2.0, 400.0)
        has_comeback = rng.random(n) < 0.1
        self.comeback_week = np.where(has_comeback, self.release_week + rng.uniform(20, 300, n), np.inf)
        self.comeback_height = rng.uniform(10, 45, n) * has_comeback
        self.comeback_width = rng.uniform(2.0, 10.0, n)
        self.seasonal_height = rng.uniform(15, 40, n) * (rng.random(n) < 0.01)
        self.region_seed = int(rng.integers(0, 2**31))
        self._track_numbers = np.arange(n)

    # ---- dynamics ---------------------------------------------------------------------------------
    def _noise(self, weeks: np.ndarray, tracks: np.ndarray, salt: int = 0) -> np.ndarray:
        """Noise of mean 0 and variance 1 per (week, track), a pure function of seed, week, track and salt.

        The sum of four 16-bit uniforms from one hash (Irwin-Hall): close to normal, cheap to vectorise.
        """
        key = np.uint64((self.seed * 1_000_003 + salt) % 2**61)
        grid = (np.asarray(weeks, dtype=np.uint64)[:, None] << np.uint64(32)) + tracks.astype(np.uint64)
        hashed = _mix(grid ^ key)
        mask = np.uint64(0xFFFF)
        total = np.zeros(hashed.shape, dtype=np.float32)
        for i in range(4):
            total += ((hashed >> np.uint64(16 * i)) & mask).astype(np.float32)
        return (total / np.float32(65536.0) - np.float32(2.0)) * np.float32(3.0**0.5)

    def popularity_matrix(self, weeks: np.ndarray, tracks: np.ndarray | None = None) -> np.ndarray:
        """Continuous popularity (0-100) at each week index (weeks x tracks; all tracks by default)."""
        pick = slice(None) if tracks is None else tracks
        w = np.asarray(weeks, dtype=float)[:, None]
        age = w - self.release_week[pick]
        released = age >= 0
        age = np.maximum(age, 0.0)
        peak = self.peak[pick]
        floor = peak * self.floor_share[pick]
        rise = 1.0 - np.exp(-(age + 1.0) / self.rise_weeks[pick])
        decay = np.exp(-np.log(2.0) * age / self.half_life_weeks[pick])
        pop = rise * (floor + (peak - floor) * decay)
        comeback_height = self.comeback_height[pick]
        if comeback_height.any():
            distance = (w - self.comeback_week[pick]) / self.comeback_width[pick]
            pop += comeback_height * np.exp(-0.5 * distance**2)
        week_of_year = np.mod(w, 52.0)  # EPOCH is the first week of January
        to_christmas = np.minimum(np.abs(week_of_year - 51.0), 52.0 - np.abs(week_of_year - 51.0))
        pop += self.seasonal_height[pick] * np.exp(-0.5 * (to_christmas / 1.2) ** 2) * (age > 0)
        pop += self._noise(weeks, self._track_numbers[pick]) * 1.2
        return np.where(released, np.clip(pop, 0.0, 100.0), 0.0)

    def _popularity_continuous(self, week: int) -> np.ndarray:
        cached = self._week_cache.get(week)
        if cached is None:
            cached = self.popularity_matrix(np.array([week]))[0].astype(np.float64)
            self._week_cache[week] = cached
            if len(self._week_cache) > 16:
                self._week_cache.popitem(last=False)
        return cached

    def released(self, track: int, week: dt.date) -> bool:
        """Whether track number `track` is out by `week` (Spotify does not know it before)."""
        return bool(self.release_week[track] <= week_index(week))

    def track_popularity(self, week: dt.date) -> np.ndarray:
        """Integer popularity of every track in `week` (0 before release)."""
        return self._derived("track", week_index(week))

    def album_popularity(self, week: dt.date) -> np.ndarray:
        """An album's popularity: its most popular track's."""
        return self._derived("album", week_index(week))

    def artist_popularity(self, week: dt.date) -> np.ndarray:
        """An artist's popularity: their most popular track's."""
        return self._derived("artist", week_index(week))

    def _derived(self, kind: str, week: int) -> np.ndarray:
        key = (kind, week)
        cached = self._derived_cache.get(key)
        if cached is not None:
            return cached
        tracks = np.rint(self._popularity_continuous(week)).astype(np.int64)
        if kind == "track":
            out = tracks
        elif kind == "album":
            out = np.zeros(self.n_albums, dtype=np.int64)
            np.maximum.at(out, self.track_album, tracks)
        else:
            out = np.zeros(len(self.artist_ids), dtype=np.int64)
            np.maximum.at(out, self._pair_artist, tracks[self._pair_track])
        self._derived_cache[key] = out
        if len(self._derived_cache) > 48:
            self._derived_cache.popitem(last=False)
        return out

    def artist_followers(self, artist: int, week: dt.date) -> int:
        """Followers grow slowly with time."""
        growth = 1.0 + 0.002 * max(0, week_index(week))
        return int(self.artist_followers_base[artist] * growth)

    @cached_property
    def _region_streams_scale(self) -> dict[str, float]:
        return dict(REGION_SCALE)

    def _region_taste(self, region: str) -> np.ndarray:
        if region == "global":
            return np.zeros(self.n_tracks)
        salt = zlib.crc32(region.encode())
        return np.random.default_rng([self.region_seed, salt]).normal(0.0, 0.35, self.n_tracks)

    def _log_streams(self, weeks: np.ndarray, region: str, tracks: np.ndarray | None = None) -> np.ndarray:
        """log10 weekly streams (weeks x tracks); -inf before release."""
        pick = slice(None) if tracks is None else tracks
        pop = self.popularity_matrix(weeks, tracks)
        scale = self._region_streams_scale.get(region, OTHER_REGION_SCALE)
        salt = zlib.crc32(region.encode())
        jitter = self._noise(weeks, self._track_numbers[pick], salt) * 0.04
        log_streams = 3.3 + 0.047 * pop + self._region_taste(region)[pick] + jitter + np.log10(scale)
        return np.where(pop > 0, log_streams, -np.inf)

    def streams_matrix(self, weeks: np.ndarray, region: str = "global") -> np.ndarray:
        """Weekly streams of every track at each week index (weeks x tracks), zero before release."""
        log_streams = self._log_streams(weeks, region)
        return np.where(np.isfinite(log_streams), np.rint(10**log_streams), 0).astype(np.int64)

    # ---- charts -----------------------------------------------------------------------------------

    # ---- charts -----------------------------------------------------------------------------------
    def _tops(self, weeks: list[int], region: str) -> list[np.ndarray]:
        """Track indices of each week's Top-200, in rank order (cached per region and week)."""
        cached = self._top_cache.setdefault(region, {})
        missing = [k for k in weeks if k not in cached]
        for first in range(0, len(missing), HISTORY_CHUNK_WEEKS):
            chunk = np.array(missing[first : first + HISTORY_CHUNK_WEEKS])
            candidates = np.flatnonzero(self.release_week <= chunk.max())  # nothing else can chart yet
            for week, row in zip(chunk.tolist(), self._log_streams(chunk, region, candidates), strict=True):
                size = min(CHART_SIZE, len(row) - 1)
                best = np.argpartition(-row, size)[: size + 1] if size > 0 else np.arange(len(row))
                best = best[np.isfinite(row[best])]
                order = np.lexsort((candidates[best], -row[best]))[:CHART_SIZE]
                cached[week] = candidates[best[order]]
        return [cached[k] for k in weeks]

    def chart_rows(self, week: dt.date, region: str = "global") -> list[ChartRow]:
        """The weekly Top-200 of `region` for the ISO week containing `week`."""
        region = region.lower()
        current = week_index(week)
        if current < 0:
            return []
        (top,) = self._tops([current], region)
        if len(top) == 0:
            return []
        # Earlier weeks matter only from the first release among this week's songs.
        history = self._tops(list(range(int(self.release_week[top].min()), current)), region)
        weeks_on_chart = np.ones(len(top), dtype=np.int64)
        peak = np.arange(1, len(top) + 1)
        previous_rank = np.full(len(top), -1)
        for past in history:
            ranks = np.zeros(self.n_tracks, dtype=np.int64)
            ranks[past] = np.arange(1, len(past) + 1)
            mine = ranks[top]
            weeks_on_chart += mine > 0
            peak = np.where(mine > 0, np.minimum(peak, mine), peak)
        if history and int(self.release_week[top].min()) < current:
            ranks = np.zeros(self.n_tracks, dtype=np.int64)
            ranks[history[-1]] = np.arange(1, len(history[-1]) + 1)
            previous_rank = np.where(ranks[top] > 0, ranks[top], -1)
        streams = self.streams_matrix(np.array([current]), region)[0]
        return [
            ChartRow(
                rank=r + 1,
                track_id=self.track_ids[t],
                artist_names=", ".join(self.artist_names[a] for a in self.track_artists[t]),
                track_name=self.track_names[t],
                source=self.album_label[self.track_album[t]],
                peak_rank=int(peak[r]),
                previous_rank=int(previous_rank[r]),
                weeks_on_chart=int(weeks_on_chart[r]),
                streams=int(streams[t]),
            )
            for r, t in enumerate(top.tolist())
        ]

    def chart_csv(self, week: dt.date, region: str = "global") -> str:
        """The chart as charts.spotify.com serves it: BOM, CRLF, new header, streams quoted."""
        buffer = io.StringIO()
        buffer.write("\ufeff")
        buffer.write(",".join(CHART_HEADER) + "\r\n")
        writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_NONNUMERIC)
        for row in self.chart_rows(week, region):
            writer.writerow(
                [
                    row.rank, row.uri, row.artist_names, row.track_name, row.source,
                    row.peak_rank, row.previous_rank, row.weeks_on_chart, str(row.streams),
                ]
            )  # fmt: skip
        return buffer.getvalue()

    def trending_track_ids(self, week: dt.date, size: int = TRENDING_SIZE) -> list[str]:
        """The week's global top `size` (the trending playlist's contents)."""
        return [row.track_id for row in self.chart_rows(week)[:size]]

    # ---- lookups ----------------------------------------------------------------------------------
    def release_date(self, album: int) -> tuple[str, str]:
        """The album's release date text and precision, as the API shows them."""
        precision = self.album_precision[album]
        if self.album_zero_date[album]:
            return "0000", "year"
        day = week_date(int(self.album_release_week[album])) + dt.timedelta(days=4)
        if precision == "year":
            return f"{day.year:04d}", precision
        if precision == "month":
            return f"{day.year:04d}-{day.month:02d}", precision
        return day.isoformat(), precision

    def album_tracks(self, album: int) -> range:
        """Track numbers of an album, in order."""
        start = int(np.cumsum(self.album_sizes)[album] - self.album_sizes[album])
        return range(start, start + int(self.album_sizes[album]))

    def artist_albums(self, artist: int) -> list[int]:
        """Albums whose primary artist is `artist`, by release."""
        albums = np.flatnonzero(self.album_artist == artist)
        return albums[np.argsort(self.album_release_week[albums], kind="stable")].tolist()

    def search(self, query: str, week: dt.date) -> list[int]:
        """Released tracks whose name or primary artist contains every word of `query`, most popular first."""
        words = [w for w in query.lower().split() if ":" not in w]
        names = self._search_text
        hits = np.ones(self.n_tracks, dtype=bool)
        for word in words:
            hits &= np.char.find(names, word) >= 0
        hits &= self.release_week <= week_index(week)
        found = np.flatnonzero(hits)
        pop = self._popularity_continuous(week_index(week))[found]
        return found[np.argsort(-pop, kind="stable")].tolist()

    @cached_property
    def _search_text(self) -> np.ndarray:
        primary = [self.artist_names[a[0]] for a in self.track_artists]
        return np.char.lower(np.array([f"{t} {p}" for t, p in zip(self.track_names, primary, strict=True)]))
