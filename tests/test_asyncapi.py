"""asyncapi.yaml: generated from the event models (the committed file is up to date), a valid AsyncAPI 3.1
document (checked against the official JSON Schema, shipped in tests/data, and by the official parser
where it is installed), covering every topic, with
bindings that match how songpop publishes, and examples that the models accept."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services.dashboard.live import Hub, LiveFeed
from shared import asyncapi
from shared.events import ALERT_REASONS, CHANNELS, QOS, SERVICES, Topics, parse

SPEC_SCHEMA = Path(__file__).parent / "data" / "asyncapi-3.1.0.schema.json.gz"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return yaml.safe_load(asyncapi.DOCUMENT.read_text(encoding="utf-8"))


def test_committed_document_is_the_generated_one(tmp_path: Path) -> None:
    assert asyncapi.DOCUMENT.read_text(encoding="utf-8") == asyncapi.render(), (
        "asyncapi.yaml is out of date: run `python -m shared.asyncapi`"
    )
    check = [sys.executable, "-m", "shared.asyncapi", "--check"]
    assert subprocess.run(check, capture_output=True).returncode == 0
    stale = tmp_path / "asyncapi.yaml"
    stale.write_text(asyncapi.render().replace("qos: 1", "qos: 0"), encoding="utf-8")
    result = subprocess.run([*check, "--output", str(stale)], capture_output=True, text=True)
    assert result.returncode == 1 and "out of date" in result.stderr


def test_document_is_valid_asyncapi_3_1(doc: dict[str, Any]) -> None:
    schema = json.loads(gzip.decompress(SPEC_SCHEMA.read_bytes()))
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]
    assert errors == []
    broken = json.loads(json.dumps(doc))
    broken["operations"]["send_dbUpdated"]["bindings"]["mqtt"]["qos"] = 3
    assert not validator.is_valid(broken), "the official schema checks MQTT bindings too"


def test_every_topic_is_documented(doc: dict[str, Any]) -> None:
    t = Topics()
    topics = {
        t.db_updated,
        t.model_updated,
        t.predictions_latest,
        t.prediction_for("{track_id}"),
        t.status("{service}"),
        t.alert("{reason}"),
    }
    assert {channel["address"] for channel in doc["channels"].values()} == topics
    for key, channel in doc["channels"].items():
        for parameter in channel.get("parameters", {}):
            assert f"{{{parameter}}}" in channel["address"], key


def test_bindings_say_qos_1_and_retain_latest_state_only(doc: dict[str, Any]) -> None:
    sends = {op["channel"]["$ref"].rsplit("/", 1)[-1]: op for op in doc["operations"].values()
             if op["action"] == "send"}  # fmt: skip
    assert set(sends) == {c.key for c in CHANNELS}
    for channel in CHANNELS:
        binding = sends[channel.key]["bindings"]["mqtt"]
        assert binding["qos"] == QOS == 1
        assert binding["retain"] is channel.retained
    retained = {c.key for c in CHANNELS if c.retained}
    assert retained == {"dbUpdated", "modelUpdated", "predictionsLatest", "trackPrediction", "serviceStatus"}
    will = doc["servers"]["mosquitto"]["bindings"]["mqtt"]["lastWill"]
    assert will["retain"] is True and will["topic"].endswith("/status/{service}")


def test_every_example_matches_its_schema_and_model(doc: dict[str, Any]) -> None:
    components = doc["components"]
    by_key = {c.key: c for c in CHANNELS}
    checked = 0
    for key, message in components["messages"].items():
        assert message["examples"], f"{key} has no example"
        payload_schema = {**message["payload"], "components": components}
        validator = jsonschema.Draft202012Validator(payload_schema)
        for example in message["examples"]:
            validator.validate(example["payload"])
            event = parse(json.dumps(example["payload"]), by_key[key].data)
            assert event.model_dump(mode="json") == example["payload"]
            checked += 1
    assert checked >= len(CHANNELS)


def test_payload_schemas_reject_what_the_models_reject(doc: dict[str, Any]) -> None:
    components = doc["components"]
    message = components["messages"]["trackPrediction"]
    payload = json.loads(json.dumps(message["examples"][0]["payload"]))
    payload["data"]["signal"] = "likes"
    validator = jsonschema.Draft202012Validator({**message["payload"], "components": components})
    assert not validator.is_valid(payload)
    with pytest.raises(ValueError):
        parse(json.dumps(payload), by_key_data("trackPrediction"))


def by_key_data(key: str) -> Any:
    return next(c.data for c in CHANNELS if c.key == key)


def test_closed_parameters_list_their_values_as_enums(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.1.0"
    assert doc["channels"]["serviceStatus"]["parameters"]["service"]["enum"] == list(SERVICES)
    assert doc["channels"]["forecastAlert"]["parameters"]["reason"]["enum"] == list(ALERT_REASONS)
    assert "enum" not in doc["channels"]["trackPrediction"]["parameters"]["track_id"]


def test_the_dashboards_subscriptions_are_its_receive_operations(doc: dict[str, Any]) -> None:
    received = {
        doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
        for name, op in doc["operations"].items()
        if op["action"] == "receive" and name.startswith("dashboard_")
    }
    feed = LiveFeed(Hub(1), Topics())
    assert {topic.replace("+", "{service}") for topic in feed.subscriptions} == received


def official_parser() -> str | None:
    """The AsyncAPI CLI (npm @asyncapi/cli): on PATH, or where .ci/run installs it."""
    local = Path(__file__).resolve().parent.parent / ".ci" / "node" / "node_modules" / ".bin" / "asyncapi"
    return str(local) if local.exists() else shutil.which("asyncapi")


def test_the_official_parser_accepts_the_document() -> None:
    cli = official_parser()
    if cli is None:
        pytest.skip("the official AsyncAPI parser is not installed (.ci/run installs @asyncapi/cli from npm)")
    result = subprocess.run(
        [cli, "validate", str(asyncapi.DOCUMENT), "--fail-severity", "error"],
        capture_output=True, text=True, timeout=180, env={**os.environ, "ASYNCAPI_NO_TELEMETRY": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
