"""What a Spotify client did: counters a run reports (requests, retries, 429s, odd records)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from shared.spotify.parse import Problems


@dataclass
class SpotifyStats(Problems):
    """What a client did: requests per endpoint, retries, waits and awkward records met."""

    requests: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    token_requests: int = 0
    token_renewals_after_401: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    not_found: int = 0
    local_tracks: int = 0
    skipped: int = 0  # invalid ids not sent, unavailable playlist entries
    budget_refused: int = 0  # requests not sent: the client's hourly cap was reached
    rate_limit_wait_seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        """The stats as plain JSON-able values."""
        out = asdict(self)
        out["by_endpoint"] = dict(self.by_endpoint)
        return out

    def counts(self) -> dict[str, int]:
        """The whole-number counters (requests, retries, 429s, odd records...), by name."""
        return {k: v for k, v in asdict(self).items() if isinstance(v, int) and not isinstance(v, bool)}

    def counts_since(self, before: dict[str, int]) -> dict[str, int]:
        """What the counters grew by since `before` (a long-lived client serves many runs), non-zero only."""
        now = self.counts()
        return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}
