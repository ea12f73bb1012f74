"""MQTT abuse refused: a private Mosquitto started with the project's mosquitto/ config and a password file
built by mosquitto/make-passwd.sh. Anonymous and wrong passwords are refused; each service user publishes
only its own topics and reads only what it needs; the dashboard user is read-only (and the dashboard,
accordingly, publishes nothing: no status, no last will)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path

import aiomqtt
import httpx
import pytest
import yaml

from shared.config import Settings
from shared.db import session_scope
from shared.events import DbUpdated, ModelUpdated, Topics, envelope
from shared.mqtt import make_client, publish_model
from shared.outbox import add_event, flush_outbox
from shared.weeks import current_week
from tests.dashboard_support import dashboard_settings, prediction_event, running_dashboard, songs
from tests.faults_support import OBSERVER, ROOT, PrivateBroker
from tests.servers import free_port

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto"), reason="needs the mosquitto binary")

T = Topics("songpop/v1")
EVERY_TOPIC = {
    T.db_updated,
    T.model_updated,
    T.predictions_latest,
    T.prediction_for("4uLU6hMCjMI75M1A2tKUQC"),
    T.alert("moved"),
    T.status("ingestor"),
    T.status("predictor"),
    T.status("trainer"),
    T.status("dashboard"),
    "songpop/v1/elsewhere",
    "other/topic",
}
MAY_PUBLISH = {
    "ingestor": {T.db_updated, T.status("ingestor")},
    "predictor": {
        T.predictions_latest,
        T.prediction_for("4uLU6hMCjMI75M1A2tKUQC"),
        T.alert("moved"),
        T.status("predictor"),
    },
    "trainer": {T.model_updated, T.status("trainer")},
    "dashboard": set(),
    "healthcheck": set(),
}
MAY_READ = {
    "ingestor": set(),
    "predictor": {T.db_updated, T.model_updated},
    "trainer": set(),
    "dashboard": {
        t
        for t in EVERY_TOPIC
        if t.startswith(
            ("songpop/v1/events/", "songpop/v1/predictions/", "songpop/v1/status/", "songpop/v1/alerts/")
        )
    },
    "healthcheck": set(),
}


@pytest.fixture
def broker(tmp_path: Path):
    with PrivateBroker(tmp_path / "mosquitto") as running:
        yield running


def client(broker: PrivateBroker, user: str | None, password: str | None = None, **kw) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        username=user,
        password=password if password is not None else broker.passwords.get(user or ""),
        identifier=f"{user}-{uuid.uuid4().hex[:8]}",
        **kw,
    )


async def settle(c: aiomqtt.Client) -> None:
    """A QoS 1 round trip: everything the broker sent this client before its PUBACK has arrived."""
    await c.publish(f"sync/{uuid.uuid4().hex}", b"", qos=1)


async def drain(c: aiomqtt.Client) -> list[aiomqtt.Message]:
    """The messages already received (call after `settle`), without the sync ones."""
    received = [await anext(c.messages) for _ in range(len(c.messages))]
    return [m for m in received if not str(m.topic).startswith("sync/")]


async def published_through(broker: PrivateBroker, user: str, topics: Iterable[str]) -> set[str]:
    """Which of `topics` reach an all-seeing observer when `user` publishes one message on each."""
    async with client(broker, OBSERVER) as observer:
        await observer.subscribe("#", qos=1)
        async with client(broker, user) as publisher:
            for topic in topics:
                await publisher.publish(topic, b"{}", qos=1)
        await settle(observer)
        return {str(m.topic) for m in await drain(observer)}


async def read_by(broker: PrivateBroker, user: str, topics: Iterable[str]) -> set[str]:
    """Which of `topics` reach `user` subscribed to everything, when the observer publishes on each."""
    async with client(broker, user) as reader, client(broker, OBSERVER) as observer:
        await reader.subscribe("#", qos=1)
        await reader.subscribe(T.root + "/#", qos=1)
        await reader.subscribe("$share/songpop-predictors/songpop/v1/events/#", qos=1)
        for topic in topics:
            await observer.publish(topic, b"{}", qos=1)
        await settle(reader)
        return {str(m.topic) for m in await drain(reader)}


@pytest.mark.parametrize("password", [None, "", "wrong-password"])
async def test_clients_without_valid_credentials_are_refused(broker, password) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with client(broker, None if password is None else "predictor", password):
            pass
    async with client(broker, "predictor"):  # the right password still works
        pass


async def test_anonymous_client_named_like_a_service_is_refused(broker) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="songpop-predictor-host"):
            pass


@pytest.mark.parametrize("user", sorted(MAY_PUBLISH))
async def test_each_user_publishes_only_its_own_topics(broker, user) -> None:
    assert await published_through(broker, user, sorted(EVERY_TOPIC)) == MAY_PUBLISH[user]


@pytest.mark.parametrize("user", sorted(MAY_READ))
async def test_each_user_reads_only_what_it_needs(broker, user) -> None:
    assert await read_by(broker, user, sorted(EVERY_TOPIC)) == MAY_READ[user]


async def test_predictor_replicas_split_events_on_the_shared_subscription(broker) -> None:
    share = "$share/songpop-predictors/" + T.db_updated
    async with client(broker, "predictor") as one, client(broker, "predictor") as two:
        await one.subscribe(share, qos=1)
        await two.subscribe(share, qos=1)
        async with client(broker, "ingestor") as ingestor:
            for i in range(10):
                await ingestor.publish(T.db_updated, str(i).encode(), qos=1)
        await settle(one)
        await settle(two)
        got_one = [m.payload for m in await drain(one)]
        got_two = [m.payload for m in await drain(two)]
    assert sorted(got_one + got_two) == sorted(str(i).encode() for i in range(10))  # each once, none lost
    assert got_one and got_two


async def test_dashboard_reads_live_updates_and_publishes_nothing(
    broker, settings, sessions, monkeypatch
) -> None:
    """The running dashboard, connected as its read-only user: live updates arrive; it never publishes
    and sets no last will (which the ACL would silently drop)."""
    made: dict[int, dict] = {}
    published: list[str] = []
    real_init, real_publish = aiomqtt.Client.__init__, aiomqtt.Client.publish

    def spy_init(self, *args, **kwargs):
        made[id(self)] = kwargs
        real_init(self, *args, **kwargs)

    async def spy_publish(self, topic, *args, **kwargs):
        if made.get(id(self), {}).get("username") == "dashboard":
            published.append(str(topic))
        return await real_publish(self, topic, *args, **kwargs)

    monkeypatch.setattr(aiomqtt.Client, "__init__", spy_init)
    monkeypatch.setattr(aiomqtt.Client, "publish", spy_publish)
    dash = dashboard_settings(settings, mqtt_url=broker.url("dashboard"), mqtt_topic_root=T.root)
    predictor = dash.model_copy(update={"mqtt_url": broker.url("predictor")})
    async with running_dashboard(dash) as running:
        async with httpx.AsyncClient(base_url=running.url) as http:
            assert (await http.get("/readyz")).status_code == 200
        async with make_client(predictor, "predictor", announce=False) as pub:
            await publish_model(pub, T.predictions_latest, prediction_event(songs(2), shift=3.0))
        feed = running.app.state.feed
        async with asyncio.timeout(10):
            while feed.last_received_at is None:  # noqa: ASYNC110 - the feed exposes no event for this
                await asyncio.sleep(0.05)
    dashboard_clients = [k for k in made.values() if k.get("username") == "dashboard"]
    assert dashboard_clients, "the dashboard never connected"
    assert all(k.get("will") is None for k in dashboard_clients)
    assert published == []


async def test_each_service_publishes_only_its_own_outbox_events(broker, settings, sessions) -> None:
    """The outbox is shared by every service, but the ACL lets each publish only its own topics: a
    service flushing the outbox must leave the others' events pending, not "publish" them into a
    silent ACL denial and mark them done."""
    as_user = {
        user: Settings(
            **{**settings.model_dump(), "mqtt_url": broker.url(user), "mqtt_topic_root": T.root},
            _env_file=None,
        )
        for user in ("ingestor", "trainer")
    }
    db_event = envelope(
        "ingestor", DbUpdated(run_id=1, kind="update", week=current_week(), tracks=1, snapshots=1)
    )
    model_event = envelope(
        "trainer", ModelUpdated(version="v1", signal="popularity", horizon_weeks=26, kind="gbm")
    )
    async with session_scope(sessions) as session:
        add_event(session, topic=T.db_updated, event=db_event)
        add_event(session, topic=T.model_updated, event=model_event)
    async with client(broker, OBSERVER) as observer:
        await observer.subscribe("#", qos=1)
        assert await flush_outbox(settings=as_user["ingestor"], sessions=sessions, service="ingestor") == 1
        assert await flush_outbox(settings=as_user["trainer"], sessions=sessions, service="trainer") == 1
        await settle(observer)
        received = {json.loads(m.payload)["event_id"] for m in await drain(observer)}
    assert received == {db_event.event_id, model_event.event_id}


@pytest.mark.skipif(not shutil.which("mosquitto_sub"), reason="needs mosquitto_sub")
def test_compose_healthcheck_command_works_against_the_project_config(broker) -> None:
    """The broker healthcheck in docker-compose.yml, run as written (host and port adapted)."""
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["mosquitto"]
    command = spec["healthcheck"]["test"][1].replace("$$", "$")
    command = command.replace("-h 127.0.0.1", f"-h 127.0.0.1 -p {broker.port}")

    def run(password: str) -> int:
        env = {"PATH": "/usr/bin:/bin", "MQTT_HEALTHCHECK_PASSWORD": password}
        return subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=20).returncode

    assert run(broker.passwords["healthcheck"]) == 0
    assert run("wrong-password") != 0


def make_certificates(folder: Path) -> None:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "1", "-subj", "/CN=songpop test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "1", "-extfile", "san.ext")  # fmt: skip


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl to make test certificates")
async def test_the_documented_tls_listener_serves_mqtts(tmp_path: Path) -> None:
    """mosquitto/tls.conf.example, enabled as the docs say (copied into conf.d, certificates in place)."""
    certs, tls_port = tmp_path / "certs", free_port()
    make_certificates(certs)
    broker = PrivateBroker(tmp_path / "mosquitto")
    listener = (ROOT / "mosquitto" / "tls.conf.example").read_text()
    listener = listener.replace("/mosquitto/certs", str(certs))
    listener = listener.replace("listener 8883", f"listener {tls_port}")
    (broker.workdir / "conf.d" / "tls.conf").write_text(listener)
    with broker:
        tls = aiomqtt.TLSParameters(ca_certs=str(certs / "ca.crt"))
        secure = aiomqtt.Client("127.0.0.1", tls_port, username="ingestor",
                                password=broker.passwords["ingestor"], tls_params=tls)  # fmt: skip
        async with secure:
            await secure.publish(T.db_updated, b"{}", qos=1)  # acknowledged over TLS
        plain = aiomqtt.Client("127.0.0.1", tls_port, username="ingestor",
                               password=broker.passwords["ingestor"], timeout=3)  # fmt: skip
        with pytest.raises(aiomqtt.MqttError):
            async with plain:
                pass
