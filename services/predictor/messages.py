"""The predictor's MQTT messages of one batch scoring, built from the scoring's columns.

A week of 100,000 songs makes 100,000 per-song messages: they are JSON strings made from plain dicts
(`ScoredBatch.message_data`) inside an envelope made once by the pydantic model (so it keeps every field
the schema gives it), and staged in the outbox with one bulk write. `tests/test_predictor_messages.py`
checks each payload parses, by the schema, into what the pydantic objects would have given.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

from shared.events import ForecastAlert, PredictionsLatest, Topics, envelope
from shared.models import utcnow
from shared.signals import Signal

CONSUMER = "predictor"


class EnvelopeTemplate:
    """The envelope fields of one producer's messages, made once; `wrap` gives each message's JSON."""

    def __init__(self, producer: str, sample: BaseModel) -> None:
        fields = json.loads(envelope(producer, sample).model_dump_json())
        self.fields = {k: v for k, v in fields.items() if k not in ("event_id", "data")}

    def wrap(self, data: Any) -> tuple[str, str]:
        """(event id, JSON payload) of a new message carrying `data` (JSON-ready)."""
        event_id = str(uuid.uuid4())
        return event_id, json.dumps(
            {**self.fields, "event_id": event_id, "data": data}, separators=(",", ":")
        )


def headline_data(data: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per song, the prediction shown first: the popularity index where known, else chart streams (the
    first streams prediction, as `service.headline` picks)."""
    best: dict[str, dict[str, Any]] = {}
    for p in data:
        if p["track_id"] not in best or p["signal"] == Signal.POPULARITY:
            best[p["track_id"]] = p
    return best


def outbox_rows(
    *,
    topics: Topics,
    data: Sequence[dict[str, Any]],
    alerts: Sequence[ForecastAlert],
    week: dt.date,
    latest_limit: int,
) -> list[dict[str, Any]]:
    """The outbox rows of a batch, in publishing order: the retained latest state (at most `latest_limit`
    predictions), each song's headline prediction (retained), the alerts."""
    template = EnvelopeTemplate(CONSUMER, PredictionsLatest(week=week, count=0, predictions=[]))
    now = utcnow()

    def row(topic: str, message: tuple[str, str], retain: bool) -> dict[str, Any]:
        event_id, payload = message
        return {"event_id": event_id, "topic": topic, "producer": CONSUMER, "payload": payload,
                "retain": retain, "created_at": now, "attempts": 0}  # fmt: skip

    shown = list(data[:latest_limit])
    latest = {"week": week.isoformat(), "count": len(shown), "predictions": shown}
    rows = [row(topics.predictions_latest, template.wrap(latest), True)]
    rows += [
        row(topics.prediction_for(track_id), template.wrap(prediction), True)
        for track_id, prediction in headline_data(data).items()
    ]
    alert_template = EnvelopeTemplate(CONSUMER, alerts[0]) if alerts else template
    rows += [
        row(topics.alert(a.reason), alert_template.wrap(a.model_dump(mode="json")), False) for a in alerts
    ]
    return rows
