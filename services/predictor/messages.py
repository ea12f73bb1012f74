"""The predictor's MQTT messages of one batch scoring, built from the scoring's columns.

The messages are JSON made from plain dicts (`ScoredBatch.message_data`) inside an envelope made once by
the pydantic model (so it keeps every field the schema gives it). Staged in the outbox in the transaction
that stores the predictions: the retained latest state, one row for every song's own message (built when
it is published: `song_messages`), the alerts. `tests/test_predictor_messages.py` checks each payload
parses, by the schema, into what the pydantic objects would have given.
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

from . import song_messages

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


def outbox_rows(
    *,
    topics: Topics,
    data: Sequence[dict[str, Any]],
    alerts: Sequence[ForecastAlert],
    week: dt.date,
    latest_limit: int,
) -> list[dict[str, Any]]:
    """The outbox rows of a batch, in publishing order: the retained latest state (at most `latest_limit`
    predictions), every song's headline prediction (retained; one row, `song_messages.batch_row`), the
    alerts."""
    template = EnvelopeTemplate(CONSUMER, PredictionsLatest(week=week, count=0, predictions=[]))
    now = utcnow()

    def row(topic: str, message: tuple[str, str], retain: bool) -> dict[str, Any]:
        event_id, payload = message
        return {"event_id": event_id, "topic": topic, "producer": CONSUMER, "payload": payload,
                "retain": retain, "created_at": now, "attempts": 0}  # fmt: skip

    shown = list(data[:latest_limit])
    latest = {"week": week.isoformat(), "count": len(shown), "predictions": shown}
    rows = [row(topics.predictions_latest, template.wrap(latest), True)]
    if data:
        songs = song_messages.batch_row(
            topics, event_id=str(uuid.uuid4()), envelope=template.fields, week=week,
            demo=bool(data[0]["demo"]), songs=len({p["track_id"] for p in data}),
        )  # fmt: skip
        rows.append({**songs, "created_at": now})
    alert_template = EnvelopeTemplate(CONSUMER, alerts[0]) if alerts else template
    rows += [
        row(topics.alert(a.reason), alert_template.wrap(a.model_dump(mode="json")), False) for a in alerts
    ]
    return rows
