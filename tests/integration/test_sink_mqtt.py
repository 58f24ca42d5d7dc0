"""The `mqtt` sink kind against a real Mosquitto, read by a real QoS 1 subscriber: a batch arrives
in order, the last item per topic is retained, a broker restart fails the send in flight (retryable)
and the next send after it works, with nothing lost for a persistent subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from urllib.parse import unquote

import aiomqtt
import pytest

from stream.errors import ConfigError
from stream.sinks.destination import DeliveryError, SinkItem, item_key
from stream.sinks.mqtt import MqttDestination, escape_topic_level
from stream.sinks.registry import build_destination
from stream.sinks.settings import SinkSettings
from tests.servers import MosquittoServer, mosquitto_or_skip
from tests.waiting import poll, until

WAIT_S = 20.0


def results(source: str, seqs: range, model: str = "mobilenet") -> list[SinkItem]:
    out = []
    for seq in seqs:
        body = {"kind": "result", "source": source, "model": model, "seq": seq, "label": f"label-{seq}"}
        out.append(SinkItem("results", item_key("results", body), source, body))
    return out


class Subscriber:
    """A real MQTT client at QoS 1 that records every message it receives, in order."""

    def __init__(self, server: MosquittoServer, *, identifier: str | None = None, clean: bool = True) -> None:
        self.server = server
        self.identifier = identifier
        self.clean = clean
        self.got: list[aiomqtt.Message] = []
        self._recording: asyncio.Task[None] | None = None

    def payloads(self) -> list[dict]:
        return [json.loads(bytes(m.payload)) for m in self.got]

    @contextlib.asynccontextmanager
    async def listening(self, topic: str | None) -> AsyncIterator[Subscriber]:
        """Connected (and subscribed to `topic` unless None: a persistent session has its
        subscriptions already) while the block runs."""
        client = aiomqtt.Client(
            "127.0.0.1",
            self.server.port,
            username=self.server.username,
            password=self.server.password,
            identifier=self.identifier,
            clean_session=self.clean,
        )
        async with client:
            if topic is not None:
                await client.subscribe(topic, qos=1)

            async def record() -> None:
                async for message in client.messages:
                    self.got.append(message)

            task = self._recording = asyncio.create_task(record())
            try:
                yield self
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task

    async def wait_disconnected(self) -> None:
        """Until the client noticed its broker went away (its message iterator raised)."""
        await until(lambda: self._recording and self._recording.done(), timeout_s=WAIT_S, what="a disconnect")


def destination(server: MosquittoServer) -> MqttDestination:
    """Built as `framestream run` builds it: from a sink's settings, through its entry point."""
    sink = SinkSettings(name="mqtt-test", kind="mqtt", url=server.url, secret=server.password)
    built = build_destination(sink)
    assert isinstance(built, MqttDestination) and built.password == server.password
    return built


@pytest.fixture
async def mosquitto(mosquitto_server: MosquittoServer) -> AsyncIterator[MosquittoServer]:
    """The session's broker, running again after the test even if the test stopped it."""
    yield mosquitto_server
    if mosquitto_server.process is None:
        mosquitto_server.start()


async def test_batch_arrives_in_order_and_the_last_item_is_retained(mosquitto: MosquittoServer) -> None:
    run = secrets.token_hex(3)
    odd, plain = f"cam/+#1-{run}", f"yard-{run}"  # an odd id: MQTT separators and wildcards in it
    batch = [*results(odd, range(40)), *results(plain, range(5))]
    sink = destination(mosquitto)
    subscriber = Subscriber(mosquitto)
    async with subscriber.listening("framestream/#"):
        await sink.start()
        await sink.send(batch)
        await until(lambda: len(subscriber.got) >= len(batch) + 2, timeout_s=WAIT_S, what="every item")
    await sink.close()

    items = [m for m in subscriber.got if not m.retain and not str(m.topic).endswith("/last")]
    assert [p["key"] for p in map(lambda m: json.loads(bytes(m.payload)), items)] == [i.key for i in batch]
    odd_topic = f"framestream/{escape_topic_level(odd)}/mobilenet"
    assert odd_topic == f"framestream/cam%2F%2B%231-{run}/mobilenet"  # one level, no wildcard
    assert {str(m.topic) for m in items} == {odd_topic, f"framestream/{plain}/mobilenet"}
    assert unquote(odd_topic.split("/")[1]) == odd
    first = json.loads(bytes(items[0].payload))
    assert first == {**batch[0].body, "key": batch[0].key}
    assert all(m.qos == 1 for m in items)

    # a dashboard that connects later gets the current label of each source at once
    late = Subscriber(mosquitto)
    async with late.listening("framestream/+/+/last"):
        await until(
            lambda: (
                {str(m.topic) for m in late.got}
                >= {f"{odd_topic}/last", f"framestream/{plain}/mobilenet/last"}
            ),
            timeout_s=WAIT_S,
            what="the retained last items",
        )
    last = {str(m.topic): json.loads(bytes(m.payload)) for m in late.got if m.retain}
    assert last[f"{odd_topic}/last"]["label"] == "label-39"
    assert last[f"framestream/{plain}/mobilenet/last"]["seq"] == 4


async def test_broker_restart_fails_the_send_then_sending_again_works(mosquitto: MosquittoServer) -> None:
    run = secrets.token_hex(3)
    source = f"cam-{run}"
    before, during, after = (
        results(source, range(0, 20)),
        results(source, range(20, 25)),
        results(source, range(20, 60)),
    )
    subscriber = Subscriber(mosquitto, identifier=f"persistent-{run}", clean=False)
    sink = destination(mosquitto)
    async with subscriber.listening(f"framestream/{source}/+"):
        await sink.send(before)
        await until(lambda: len(subscriber.got) >= len(before), timeout_s=WAIT_S, what="the first batch")
        mosquitto.stop()  # the broker saves the persistent session (and its subscription) on the way out
        await subscriber.wait_disconnected()
    with pytest.raises(DeliveryError) as outage:
        await sink.send(during)
    assert outage.value.retryable, outage.value
    mosquitto.start()
    await sink.send(after)  # the same sink reconnects by itself on the next send
    await sink.close()

    # the subscriber comes back without subscribing again: the broker kept what it missed
    async with subscriber.listening(None):
        await until(
            lambda: len(subscriber.got) >= len(before) + len(after), timeout_s=WAIT_S, what="the queued items"
        )
    keys = list(dict.fromkeys(p["key"] for p in subscriber.payloads()))  # QoS 1 may repeat, never skip
    assert keys == [i.key for i in before + after]


async def test_send_waits_for_every_puback_and_fails_when_the_connection_drops(
    mosquitto: MosquittoServer,
) -> None:
    sink = destination(mosquitto)
    await sink.start()
    mosquitto.freeze()  # connected, but no PUBACK can come
    try:
        send = asyncio.create_task(sink.send(results("frozen", range(5))))
        assert not await poll(send.done, timeout_s=1.0), "send returned without a PUBACK"
    finally:
        mosquitto.kill()
    with pytest.raises(DeliveryError, match="connection lost before every PUBACK") as lost:
        await send  # at once, not after timeout_s: the dropped connection ends the wait
    assert lost.value.retryable
    await sink.close()


async def test_refused_and_unreachable_brokers_give_clear_errors(mosquitto: MosquittoServer) -> None:
    wrong = MqttDestination(name="wrong", url=mosquitto.url, password="not-the-password", timeout_s=10)
    with pytest.raises(DeliveryError, match="Not authorized") as refused:
        await wrong.start()
    assert not refused.value.retryable  # sending again cannot fix a password
    await wrong.close()

    idle = MosquittoServer()  # a port that nothing listens on until the end of this test
    try:
        down = MqttDestination(name="down", url=idle.url, password=idle.password, timeout_s=10)
        with pytest.raises(DeliveryError, match="Connection refused") as unreachable:
            await down.send(results("cam", range(1)))
        assert unreachable.value.retryable
        await down.close()
    finally:
        idle.close()


async def test_mqtts_verifies_the_brokers_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    with mosquitto_or_skip(tls=True) as broker:
        untrusted = MqttDestination(name="tls", url=broker.url, password=broker.password, timeout_s=10)
        with pytest.raises(DeliveryError, match="certificate verify failed"):
            await untrusted.start()  # signed by a CA the system does not trust
        await untrusted.close()

        monkeypatch.setenv("SSL_CERT_FILE", str(broker.ca_file))  # the way to trust a private CA
        trusted = MqttDestination(name="tls", url=broker.url, password=broker.password, timeout_s=10)
        await trusted.send(results("tls", range(3)))
        await trusted.close()

        monkeypatch.delenv("SSL_CERT_FILE")
        unchecked = MqttDestination(
            name="tls", url=broker.url, password=broker.password, timeout_s=10, verify_tls=False
        )
        await unchecked.send(results("tls", range(3)))
        await unchecked.close()


@pytest.mark.parametrize(
    ("url", "topic", "message"),
    [
        ("http://127.0.0.1:1883", None, "must start with mqtt://"),
        ("mqtt://user:pw@127.0.0.1:1883", None, "secret, not in its url"),
        ("mqtt://127.0.0.1:1883", "framestream/{camera}", "unknown placeholder"),
        ("mqtt://127.0.0.1:1883", "framestream/+/{source}", "no wildcards"),
        ("mqtt://127.0.0.1:1883", "$SYS/{source}", "not start with \\$"),
    ],
)
def test_bad_settings_are_refused_when_built(url: str, topic: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MqttDestination(name="bad", url=url, topic=topic)


def test_topic_template_placeholders() -> None:
    sink = MqttDestination(name="t", url="mqtts://u@127.0.0.1", topic="site/{kind}/{model}/{source}")
    assert sink.tls and sink.port == 8883 and sink.username == "u"
    item = SinkItem("events", "a/b/1", "a/b", {"source": "a/b", "model": "m#1", "seq": 1})
    from stream.sinks.mqtt import topic_for

    assert topic_for(sink.topic, item) == "site/events/m%231/a%2Fb"
