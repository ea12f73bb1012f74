"""The OpenAPI document is valid, its examples are valid, and every path it documents answers with a
body that matches the documented schema."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from services.predictor import schemas
from services.predictor.app import create_app
from services.predictor.service import predict_trending
from shared.mqtt import topics
from tests.predictor_support import (
    predictor_settings,
    running_emulator,
    seed_songs,
)
from tests.servers import serving


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[Any, str]]:
    async with running_emulator() as running:
        yield running


def schema_examples(doc: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for name, schema in doc["components"]["schemas"].items():
        for example in schema.get("examples", []):
            yield name, example


def check(doc: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """Validate `instance` against a schema of the document (its `$ref`s resolve inside the document)."""
    jsonschema.Draft202012Validator({**schema, "components": doc["components"]}).validate(instance)


def test_document_is_valid_openapi_and_its_examples_match_the_models() -> None:
    doc = create_app().openapi()
    validate(doc)
    examples = list(schema_examples(doc))
    assert {name for name, _ in examples} >= {"TrackForecast", "ForecastBatchRequest", "TrendingResponse"}
    for name, example in examples:
        check(doc, {"$ref": f"#/components/schemas/{name}"}, example)
        getattr(schemas, name).model_validate(example)


async def test_docs_are_served_and_every_documented_path_answers(settings, sessions, emulator) -> None:  # type: ignore[no-untyped-def]
    _, emulator_url = emulator
    ids = await seed_songs(sessions, n=3, charted=1)
    config = predictor_settings(settings, emulator_url)
    await predict_trending(
        sessions=sessions, settings=config, topics=topics(config), event_id=str(uuid.uuid4())
    )

    async with serving(create_app(config)) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
        doc = (await http.get("/openapi.json")).json()
        docs_page = await http.get("/docs")
        assert docs_page.status_code == 200 and "/openapi.json" in docs_page.text

        answered = []
        for path, operations in doc["paths"].items():
            for method, operation in operations.items():
                body = {"track_ids": ids} if method == "post" else None
                response = await http.request(method, path.replace("{track_id}", ids[0]), json=body)
                assert response.status_code == 200, (method, path, response.text)
                schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
                check(doc, schema, response.json())
                answered.append(path)
    assert set(answered) == {
        "/v1/tracks/{track_id}/forecast",
        "/v1/forecasts",
        "/v1/trending",
        "/v1/models",
        "/v1/status",
        "/healthz",
        "/readyz",
    }
