"""The AsyncAPI 3.1 document of songpop's MQTT interface, generated from the event models.

`python -m shared.asyncapi` rewrites `asyncapi.yaml` at the repository root; `--check` exits non-zero
when the committed file differs from what the models generate (the tests run the same comparison), so
the document cannot drift from the code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.events import (
    CHANNELS,
    QOS,
    SCHEMA_VERSION,
    Channel,
    DbUpdated,
    Envelope,
    Forecast,
    ForecastAlert,
    IngestKind,
    ModelUpdated,
    PredictionsLatest,
    ServiceStatus,
    Topics,
    TrackPrediction,
)
from shared.signals import Signal

DOCUMENT = Path(__file__).resolve().parent.parent / "asyncapi.yaml"
ROOT = Topics().root
ASYNCAPI_VERSION = "3.1.0"
MQTT_BINDING_VERSION = "0.2.0"
SCHEMA_REF = "#/components/schemas/{model}"
EXAMPLE_TIME = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)
EXAMPLE_WEEK = dt.date(2026, 11, 23)
EXAMPLE_TRACK = "4uLU6hMCjMI75M1A2tKUQC"

_PREDICTION = TrackPrediction(
    track_id=EXAMPLE_TRACK,
    name="Song",
    artists="Artist",
    week=EXAMPLE_WEEK,
    signal=Signal.POPULARITY,
    rank=12,
    current=71,
    forecasts=[
        Forecast(
            horizon_weeks=26,
            value=64.2,
            lower=55.0,
            upper=71.8,
            model_version="popularity-26w-3",
            method="model",
            skill=0.12,
        ),
        Forecast(
            horizon_weeks=52,
            value=58.9,
            lower=45.1,
            upper=69.0,
            model_version="popularity-52w-3",
            method="persistence",
            skill=0.0,
        ),
    ],
)
_STREAMS = TrackPrediction(
    track_id=EXAMPLE_TRACK,
    name="Song",
    artists="Artist",
    week=EXAMPLE_WEEK,
    signal=Signal.STREAMS,
    region="global",
    rank=12,
    current=9_412_000,
    forecasts=[
        Forecast(
            horizon_weeks=26,
            value=2_100_000,
            lower=650_000,
            upper=5_300_000,
            p_chart=0.41,
            model_version="streams-26w-3",
            method="shrunk 0.5 toward naive",
            skill=0.16,
        ),
    ],
)

_OFFLINE = ServiceStatus(service="predictor", state="offline")

# (channel key, example name, summary, data); every channel has at least one example.
EXAMPLES: tuple[tuple[str, str, str, BaseModel], ...] = (
    (
        "dbUpdated", "weeklyUpdate", "The weekly update wrote 200 trending songs",
        DbUpdated(run_id=42, kind=IngestKind.UPDATE, week=EXAMPLE_WEEK, tracks=200, snapshots=200,
                  chart_entries=200, access_mode="extended"),
    ),
    (
        "modelUpdated", "newPopularityModel", "A retrained 26-week popularity model is active",
        ModelUpdated(version="popularity-26w-3", signal=Signal.POPULARITY, horizon_weeks=26, kind="gbm",
                     metrics={"mae": 6.1, "coverage80": 0.81},
                     baselines={"persistence": {"mae": 8.4}, "naive": {"mae": 9.7}}),
    ),
    (
        "predictionsLatest", "thisWeek", "This week's predictions (one song shown)",
        PredictionsLatest(week=EXAMPLE_WEEK, count=2, predictions=[_PREDICTION, _STREAMS]),
    ),
    ("trackPrediction", "popularity", "A song's popularity forecast", _PREDICTION),
    ("trackPrediction", "streams", "A song known only from the charts", _STREAMS),
    ("serviceStatus", "online", "The predictor connected", _OFFLINE.model_copy(update={"state": "online"})),
    ("serviceStatus", "offline", "The predictor's last will", _OFFLINE),
    (
        "forecastAlert", "threshold", "A 26-week forecast crossed the threshold of 60",
        ForecastAlert(track_id=EXAMPLE_TRACK, name="Song", signal=Signal.POPULARITY, horizon_weeks=26,
                      reason="threshold", value=64.2, previous=57.5, threshold=60),
    ),
    (
        "forecastAlert", "moved", "A 26-week forecast moved by 12.4 since last week",
        ForecastAlert(track_id=EXAMPLE_TRACK, name="Song", signal=Signal.POPULARITY, horizon_weeks=26,
                      reason="moved", value=64.2, previous=51.8),
    ),
)  # fmt: skip


def envelope_model(channel: Channel) -> type[Envelope[Any]]:
    return Envelope[channel.data]  # type: ignore[name-defined]


def schema_name(channel: Channel) -> str:
    return f"{channel.data.__name__}Message"


def component_schemas() -> dict[str, Any]:
    """JSON schemas of every envelope (as published: serialization mode), one per payload model."""
    models = [(envelope_model(c), "serialization") for c in CHANNELS]
    keys, top = models_json_schema(models, ref_template=SCHEMA_REF)  # type: ignore[arg-type]
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    renamed: dict[str, Any] = {}
    for channel in CHANNELS:
        ref = keys[(envelope_model(channel), "serialization")]["$ref"]
        generated = ref.rsplit("/", 1)[-1]
        body = dict(schemas.pop(generated))
        body["title"] = schema_name(channel)
        body["description"] = f"{Envelope.__doc__} `data`: {channel.data.__doc__ or channel.data.__name__}"
        renamed[schema_name(channel)] = body
    return {**dict(sorted(schemas.items())), **renamed}


def example_payload(channel: Channel, name: str, data: BaseModel) -> dict[str, Any]:
    event = envelope_model(channel)(
        schema_version=SCHEMA_VERSION,
        event_id=f"00000000-0000-4000-8000-{sum(map(ord, channel.key + name)):012d}",
        occurred_at=EXAMPLE_TIME,
        producer=channel.producers[0],
        data=data,
    )
    return event.model_dump(mode="json")


def message(channel: Channel) -> dict[str, Any]:
    return {
        "name": channel.key,
        "title": channel.data.__name__,
        "summary": channel.summary,
        "contentType": "application/json",
        "payload": {"$ref": SCHEMA_REF.format(model=schema_name(channel))},
        "examples": [
            {"name": name, "summary": summary, "payload": example_payload(channel, name, data)}
            for key, name, summary, data in EXAMPLES
            if key == channel.key
        ],
        "bindings": {"mqtt": {"bindingVersion": MQTT_BINDING_VERSION}},
    }


def channel_object(channel: Channel) -> dict[str, Any]:
    body: dict[str, Any] = {
        "address": f"{ROOT}/{channel.address}",
        "title": channel.data.__name__,
        "description": f"{channel.summary} Published by: {', '.join(channel.producers)}.",
        "messages": {channel.key: {"$ref": f"#/components/messages/{channel.key}"}},
    }
    if channel.parameters:
        enums = dict(channel.enums)
        body["parameters"] = {
            name: {"description": text, **({"enum": list(enums[name])} if name in enums else {})}
            for name, text in channel.parameters
        }
    return body


# What the dashboard subscribes to (services/dashboard/live.py): the page's live data.
DASHBOARD_RECEIVES = ("predictionsLatest", "modelUpdated", "serviceStatus")


def operations() -> dict[str, Any]:
    """What songpop sends on every channel, and what the predictor and the dashboard receive."""
    ops: dict[str, Any] = {}
    for channel in CHANNELS:
        ops[f"send_{channel.key}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel.key}"},
            "summary": f"{' / '.join(channel.producers)} publish{'es' if len(channel.producers) == 1 else ''}"
            f" at QoS {QOS}{', retained' if channel.retained else ''}",
            "bindings": {
                "mqtt": {"qos": QOS, "retain": channel.retained, "bindingVersion": MQTT_BINDING_VERSION}
            },
            "messages": [{"$ref": f"#/channels/{channel.key}/messages/{channel.key}"}],
        }
    for key in ("dbUpdated", "modelUpdated"):
        ops[f"predictor_receives_{key}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": "the predictor subscribes through the shared subscription "
            f"`$share/songpop-predictors/{ROOT}/...`: replicas split the events, each handled once",
            "bindings": {"mqtt": {"qos": QOS, "bindingVersion": MQTT_BINDING_VERSION}},
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
        }
    for key in DASHBOARD_RECEIVES:
        ops[f"dashboard_receives_{key}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": "the dashboard subscribes (read-only account, clean session) and pushes what it "
            "receives to open pages over its websocket",
            "bindings": {"mqtt": {"qos": QOS, "bindingVersion": MQTT_BINDING_VERSION}},
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
        }
    return ops


def document() -> dict[str, Any]:
    """The whole AsyncAPI document as plain data."""
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "songpop MQTT interface",
            "version": str(SCHEMA_VERSION),
            "description": (
                "Events and forecasts of songpop. Every message is a JSON envelope "
                "`{schema_version, event_id, occurred_at, producer, data}` published at QoS 1; "
                "latest-state topics are retained. Tests and development deployments may put the topics "
                f"under another root than `{ROOT}` (setting `SONGPOP_MQTT_TOPIC_ROOT`). "
                "This file is generated by `python -m shared.asyncapi` from shared/events.py."
            ),
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "mosquitto": {
                "host": "localhost:1883",
                "protocol": "mqtt",
                "protocolVersion": "3.1.1",
                "description": "The compose stack's Mosquitto (an account per service, see docs/mqtt.md)",
                "security": [{"$ref": "#/components/securitySchemes/userPassword"}],
                "bindings": {
                    "mqtt": {
                        "cleanSession": False,
                        "lastWill": {
                            "topic": f"{ROOT}/status/{{service}}",
                            "qos": QOS,
                            "message": "offline status envelope (see serviceStatus)",
                            "retain": True,
                        },
                        "bindingVersion": MQTT_BINDING_VERSION,
                    }
                },
            }
        },
        "channels": {c.key: channel_object(c) for c in CHANNELS},
        "operations": operations(),
        "components": {
            "schemas": component_schemas(),
            "messages": {c.key: message(c) for c in CHANNELS},
            "securitySchemes": {
                "userPassword": {"type": "userPassword", "description": "one broker account per service"}
            },
        },
    }


def render() -> str:
    """The document as YAML text (stable key order, so regenerating is a no-op when nothing changed)."""
    header = "# Generated by `python -m shared.asyncapi` from shared/events.py: do not edit by hand.\n"
    body: str = yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=110)
    return header + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed file is out of date")
    parser.add_argument("--output", type=Path, default=DOCUMENT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            sys.stderr.write(f"{args.output} is out of date: run `python -m shared.asyncapi`\n")
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
