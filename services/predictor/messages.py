"""The predictor's outbox rows of one batch scoring, in the transaction that stores its predictions.

The retained messages (the latest state and every song's own message) are staged as two small rows that
describe them, built when published (`batch_messages`); the alerts as the messages themselves: JSON made
from plain dicts inside an envelope made once by the pydantic model (so it keeps every field the schema
gives it). `tests/test_predictor_messages.py` checks each payload parses, by the schema, into what the
pydantic objects would have given.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel

from shared.events import ForecastAlert, PredictionsLatest, Topics, envelope
from shared.models import utcnow

from . import batch_messages

CONSUMER = "predictor"


class EnvelopeTemplate:
    """The envelope fields of one producer's messages, made once; `wrap` gives each message's JSON."""

    def __init__(self, producer: str, sample: BaseModel) -> None:
        fields = orjson.loads(envelope(producer, sample).model_dump_json())
        # `version` is set when a retained message is published (its outbox row's id), in front of these
        self.fields = {k: v for k, v in fields.items() if k not in ("event_id", "data", "version")}

    def wrap(self, data: Any) -> tuple[str, str]:
        """(event id, JSON payload) of a new message carrying `data` (JSON-ready)."""
        event_id = str(uuid.uuid4())
        return event_id, orjson.dumps({**self.fields, "event_id": event_id, "data": data}).decode()


def batch_rows(
    *, topics: Topics, week: dt.date, demo: bool, latest_limit: int, songs: bool
) -> list[dict[str, Any]]:
    """The outbox rows of a batch's retained messages, in publishing order: the latest state (at most
    `latest_limit` predictions), then, when the batch has predictions (`songs`), every song's headline
    prediction (both `batch_messages` rows, built when published)."""
    template = EnvelopeTemplate(CONSUMER, PredictionsLatest(week=week, count=0, predictions=[]))
    rows = [
        batch_messages.latest_row(topics, event_id=str(uuid.uuid4()), envelope=template.fields, week=week,
                                  demo=demo, limit=latest_limit)
    ]  # fmt: skip
    if songs:
        rows.append(
            batch_messages.songs_row(topics, event_id=str(uuid.uuid4()), envelope=template.fields, week=week,
                                     demo=demo)
        )  # fmt: skip
    now = utcnow()
    return [{**row, "created_at": now} for row in rows]


def alert_rows(*, topics: Topics, alerts: Sequence[ForecastAlert]) -> list[dict[str, Any]]:
    """The outbox rows of a batch's alerts (the messages themselves)."""
    if not alerts:
        return []
    template, now = EnvelopeTemplate(CONSUMER, alerts[0]), utcnow()
    rows = []
    for a in alerts:
        event_id, payload = template.wrap(a.model_dump(mode="json"))
        rows.append({"event_id": event_id, "topic": topics.alert(a.reason), "producer": CONSUMER,
                     "payload": payload, "retain": False, "attempts": 0, "created_at": now})  # fmt: skip
    return rows
