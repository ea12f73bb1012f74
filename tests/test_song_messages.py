"""The per-song messages of a batch held packed (`batch_messages.SongMessages`): read one by one, by index
or in order, they are the envelope and the song's data as one JSON object, byte for byte."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from services.predictor.batch_messages import SongMessages
from shared.events import Topics
from shared.outbox import Staged

TOPICS = Topics("test/songpop/v1")
ROW = Staged(42, str(uuid.UUID(int=7)), TOPICS.prediction_for("+"), "{}", True)
ENVELOPE = {"schema_version": 1, "produced_at": "2026-12-04T02:00:00Z", "producer": "predictor"}


def song(n: int) -> dict[str, Any]:
    return {"track_id": f"song{n:03d}", "name": f"Ça \"{n}\"\n", "current": n / 3 if n % 2 else None,
            "forecasts": [{"horizon_weeks": 26, "value": n * 1.1e-7}]}  # fmt: skip


def expected(data: dict[str, Any]) -> tuple[str, bytes, bool]:
    event_id = str(uuid.uuid5(uuid.UUID(ROW.event_id), data["track_id"]))
    payload = orjson.dumps({"version": ROW.id, **ENVELOPE, "event_id": event_id, "data": data})
    return TOPICS.prediction_for(data["track_id"]), payload, True


def test_packed_messages_are_the_messages_byte_for_byte() -> None:
    parts = [[song(n) for n in range(0, 3)], [], [song(n) for n in range(3, 8)]]
    messages = SongMessages(ROW, ENVELOPE, TOPICS)
    for part in parts:
        messages.extend(part)
    every = [expected(s) for part in parts for s in part]
    assert len(messages) == 8
    assert list(messages) == every
    assert [messages[i] for i in range(8)] == every and messages[-1] == every[-1]
    assert messages[2:5] == every[2:5]
    with pytest.raises(IndexError):
        messages[8]
