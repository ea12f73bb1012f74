"""The emulator's mutable state: simulated clock, tokens, injected faults, rate window and counters."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from services.emulator.catalog import Catalog
from services.emulator.config import EmulatorConfig
from shared.weeks import add_weeks, week_of

RATE_WINDOW_SECONDS = 30.0
MAX_LOCKOUT_SECONDS = 7200.0  # what users report once a client keeps retrying through 429s

FaultKind = Literal["rate_limited", "quota_exceeded", "server_error", "timeout", "expire_tokens"]


class FaultPlan(BaseModel):
    """Faults to inject into the next API requests (the body of `POST /_emulator/faults`).

    Each kind applies to the next `count` requests once `after` requests have passed; at most one fault
    applies to a request, in the order quota, rate limit, server error, timeout.
    """

    after: int = Field(default=0, ge=0)
    rate_limited: int = Field(default=0, ge=0)
    retry_after: float = Field(default=1.0, ge=0)
    quota_exceeded: int = Field(default=0, ge=0)
    quota_retry_after: float = Field(default=3600.0, ge=0)
    server_errors: int = Field(default=0, ge=0)
    server_error_status: int = Field(default=503, ge=500, le=599)
    timeouts: int = Field(default=0, ge=0)
    timeout_seconds: float = Field(default=30.0, ge=0)
    expire_tokens: bool = False
    latency_ms: float | None = Field(default=None, ge=0)
    clear: bool = False  # drop pending faults and lift any rate-limit penalty first


@dataclass
class PendingFault:
    kind: FaultKind
    remaining: int
    after: int
    value: float = 0.0  # Retry-After, status code or hang seconds


@dataclass
class Decision:
    """What the gate decided for one API request."""

    kind: FaultKind | Literal["penalty", "window"] | None = None
    value: float = 0.0


@dataclass
class RequestCounters:
    """Requests served, per endpoint and by outcome."""

    by_endpoint: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    token_requests: int = 0
    rejected_during_penalty: int = 0  # requests sent although Retry-After had not passed
    served: Counter[str] = field(default_factory=Counter)  # times each track/album/artist id was served

    @property
    def api_requests(self) -> int:
        return sum(self.by_endpoint.values())

    def served_twice(self) -> int:
        """How many ids were served more than once (a resumed run should refetch none)."""
        return sum(1 for n in self.served.values() if n > 1)

    def as_dict(self) -> dict[str, object]:
        return {
            "api_requests": self.api_requests,
            "token_requests": self.token_requests,
            "by_endpoint": dict(self.by_endpoint),
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "rejected_during_penalty": self.rejected_during_penalty,
            "objects_served": sum(self.served.values()),
            "objects_served_twice_or_more": self.served_twice(),
        }


class EmulatorState:
    """Everything the emulator remembers between requests (kept on `app.state.emulator`)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.catalog = Catalog(config.n_tracks, config.seed)
        self.latency_ms = config.latency_ms
        self.week: dt.date = config.start_week
        self.counters = RequestCounters()
        self.tokens: dict[str, float] = {}
        self.faults: list[PendingFault] = []
        self.penalty_until = 0.0
        self._violations = 0  # requests received during the current penalty
        self._window: deque[float] = deque()

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def extended(self) -> bool:
        return self.config.mode == "extended"

    # ---- clock ----------------------------------------------------------------------------------------
    def set_week(self, week: dt.date) -> dt.date:
        """Move the simulated clock to the ISO week containing `week`."""
        self.week = week_of(week)
        return self.week

    def advance(self, weeks: int = 1) -> dt.date:
        """Move the simulated clock `weeks` ahead."""
        return self.set_week(add_weeks(self.week, weeks))

    # ---- tokens -----------------------------------------------------------------------------------
    def issue_token(self) -> str:
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.config.token_ttl_seconds
        self.counters.token_requests += 1
        return token

    def token_valid(self, token: str) -> bool:
        expiry = self.tokens.get(token)
        return expiry is not None and time.monotonic() < expiry

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (clients must ask for a new one)."""
        self.tokens.clear()

    # ---- faults -----------------------------------------------------------------------------------
    def add_faults(self, plan: FaultPlan) -> None:
        """Queue the faults of `plan`."""
        if plan.clear:
            self.clear_faults()
        if plan.latency_ms is not None:
            self.latency_ms = plan.latency_ms
        queued: list[tuple[FaultKind, int, float]] = [
            ("quota_exceeded", plan.quota_exceeded, plan.quota_retry_after),
            ("rate_limited", plan.rate_limited, plan.retry_after),
            ("server_error", plan.server_errors, float(plan.server_error_status)),
            ("timeout", plan.timeouts, plan.timeout_seconds),
        ]
        if plan.expire_tokens:
            if plan.after == 0:
                self.expire_tokens()
            else:
                queued.insert(0, ("expire_tokens", 1, 0.0))
        self.faults.extend(PendingFault(k, n, plan.after, v) for k, n, v in queued if n > 0)

    def clear_faults(self) -> None:
        """Drop pending faults and lift any penalty (as if the Retry-After had passed)."""
        self.faults.clear()
        self.penalty_until = 0.0
        self._violations = 0
        self._window.clear()

    def decide(self) -> Decision:
        """Count down pending faults and pick the one (if any) that hits this request."""
        now = time.monotonic()
        if now < self.penalty_until:
            self.counters.rejected_during_penalty += 1
            self._violations += 1
            limit = self.config.escalate_after_violations
            if limit is not None and self._violations % limit == 0:
                # A client that keeps hammering through Retry-After gets locked out longer (up to 2 h).
                remaining = self.penalty_until - now
                self.penalty_until = now + min(MAX_LOCKOUT_SECONDS, max(2 * remaining, 60.0))
            return Decision("penalty", self.penalty_until - now)
        self._violations = 0
        chosen: PendingFault | None = None
        for fault in self.faults:
            if fault.after > 0:
                fault.after -= 1
            elif chosen is None:
                chosen = fault
        if chosen is not None:
            chosen.remaining -= 1
            self.faults = [f for f in self.faults if f.remaining > 0]
            if chosen.kind in ("rate_limited", "quota_exceeded"):
                self.penalty_until = now + chosen.value
            return Decision(chosen.kind, chosen.value)
        return self._rolling_window(now)

    def _rolling_window(self, now: float) -> Decision:
        limit = self.config.rate_limit_per_30s
        if limit is None:
            return Decision()
        while self._window and self._window[0] <= now - RATE_WINDOW_SECONDS:
            self._window.popleft()
        if len(self._window) >= limit:
            wait = self._window[0] + RATE_WINDOW_SECONDS - now
            self.penalty_until = now + wait
            return Decision("window", wait)
        self._window.append(now)
        return Decision()

    def reset(self) -> None:
        """Back to the start: clock, counters, tokens, faults, latency."""
        self.week = self.config.start_week
        self.latency_ms = self.config.latency_ms
        self.counters = RequestCounters()
        self.tokens.clear()
        self.clear_faults()
