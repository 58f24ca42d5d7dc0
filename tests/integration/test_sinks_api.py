"""``GET/POST/DELETE /v1/sinks`` (the ingress's routes, in a FastAPI app of their own, on a real
redis-server): bad settings and refused addresses are 4xx, secrets never come back, and a sink
added here is delivered by the sinks process (a `SinkLoop`) until it is deleted."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from deployments.api import sinks as sink_routes
from deployments.api.auth import Access
from deployments.api.http_errors import install_error_handlers
from deployments.api.replica import serving_replica
from stream.adapters.redis.group_stats import group_infos
from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.settings import Settings
from stream.sinks.loop import SinkLoop
from tests.faults.webhook_receiver import WebhookReceiver
from tests.waiting import until

SECRET = "api-sink-secret-0123456789"


def _settings(pipeline: str, networks: list[str]) -> Settings:
    return Settings(
        streams={"pipeline": pipeline, "block_ms": 50},
        ingest={"allowed_sources": {"networks": networks}},
        sinks=[{"name": "from-file", "kind": "webhook", "url": "https://192.0.2.1/in", "secret": SECRET}],
    )


@pytest.fixture
async def api(
    redis_client: Any, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    networks = getattr(request, "param", [])
    settings = _settings(f"a{secrets.token_hex(3)}", networks)
    ingress = SimpleNamespace(
        client=redis_client, settings=settings, keys=PipelineKeys(settings.streams.pipeline)
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(sink_routes.router)
    app.dependency_overrides[serving_replica] = lambda: ingress
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        yield http, ingress


HOOK = {"name": "hook", "kind": "webhook", "url": "https://192.0.2.10/in", "secret": SECRET}
MQTT = {"kind": "mqtt", "secret": None}
PG = {"kind": "postgres", "url": None, "secret": None}


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"kind": "carrier-pigeon"}, 400, "unknown kind"),
        ({"url": "ftp://192.0.2.10/in"}, 400, "url must be http://"),
        ({"name": "Bad Name"}, 400, "must be 1-63 characters"),
        ({"secret": None, "secret_env": "FRAMESTREAM_TEST_NOT_SET_ANYWHERE"}, 400, "which is not set"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, 403, "cloud metadata address"),
        ({"url": "http://[fe80::1]/in"}, 403, "link-local address"),
        ({"url": "http://127.0.0.1:8080/in"}, 403, "loopback address"),
        ({"url": "http://localhost:8080/in"}, 403, "loopback address"),
        ({"name": "from-file"}, 409, "settings file"),
        # every kind's destination passes the same address policy
        ({**MQTT, "url": "mqtt://169.254.169.254:1883"}, 403, "cloud metadata address"),
        ({**MQTT, "url": "mqtts://[fe80::1]:8883"}, 403, "link-local address"),
        ({**MQTT, "url": "mqtt://127.0.0.1:1883"}, 403, "loopback address"),
        ({**MQTT, "url": "mqtt://user@localhost"}, 403, "loopback address"),
        ({**PG, "dsn": "postgresql://169.254.169.254/db"}, 403, "cloud metadata address"),
        ({**PG, "dsn": "postgresql://user@[fe80::1]:5432/db"}, 403, "link-local address"),
        ({**PG, "dsn": "postgres://127.0.0.1/db"}, 403, "loopback address"),
        # libpq takes the host from the query too, and a list of hosts: each one is checked
        ({**PG, "dsn": "postgresql://192.0.2.10/db?host=127.0.0.1"}, 403, "loopback address"),
        ({**PG, "dsn": "postgresql://192.0.2.10/db?hostaddr=169.254.169.254"}, 403, "cloud metadata"),
        ({**PG, "dsn": "postgresql://192.0.2.10,127.0.0.1:5433/db"}, 403, "loopback address"),
        ({**PG, "dsn": "postgresql:///db?host=%2Fvar%2Frun%2Fpostgresql"}, 403, "Unix socket"),
        ({**PG, "dsn": "postgresql:///db"}, 403, "Unix socket"),
        ({**PG, "dsn": "postgresql://192.0.2.10/db?service=other"}, 403, "service"),
        ({**PG, "dsn": "postgresql://192.0.2.10/db?host=::1"}, 403, "loopback address"),
        ({**PG, "dsn": "host=127.0.0.1 dbname=db"}, 400, "dsn must start with postgresql://"),
    ],
)
async def test_a_bad_or_refused_sink_is_a_4xx_with_the_reason(
    api: tuple[httpx.AsyncClient, Any], change: dict[str, Any], status: int, says: str
) -> None:
    http, ingress = api
    reply = await http.post("/v1/sinks", json={**HOOK, **change})
    assert reply.status_code == status, reply.text
    assert says in reply.json()["error"] and SECRET not in reply.text
    assert await ingress.client.hlen(ingress.keys.sink_registry) == 0  # nothing was added


@pytest.mark.parametrize(
    "change",
    [
        {**MQTT, "url": "mqtt://user@192.0.2.10:1883"},
        {**PG, "dsn": "postgresql://user@192.0.2.10:5432,192.0.2.11/db?host=192.0.2.12&sslmode=require"},
    ],
)
async def test_an_mqtt_or_postgres_sink_on_an_allowed_host_is_added(
    api: tuple[httpx.AsyncClient, Any], change: dict[str, Any]
) -> None:
    http, ingress = api
    reply = await http.post("/v1/sinks", json={**HOOK, **change})
    assert reply.status_code == 201, reply.text
    assert await ingress.client.hlen(ingress.keys.sink_registry) == 1


async def test_secrets_never_come_back_and_settings_sinks_stay(api: tuple[httpx.AsyncClient, Any]) -> None:
    http, _ = api
    added = await http.post("/v1/sinks", json=HOOK)
    assert added.status_code == 201 and SECRET not in added.text
    assert (await http.post("/v1/sinks", json=HOOK)).status_code == 409
    listed = await http.get("/v1/sinks")
    assert SECRET not in listed.text
    assert [(s["name"], s["origin"], s["backlog"]) for s in listed.json()["sinks"]] == [
        ("from-file", "settings", 0),
        ("hook", "api", 0),
    ]
    assert (await http.delete("/v1/sinks/from-file")).status_code == 409
    assert (await http.delete("/v1/sinks/hook")).status_code == 204
    assert (await http.delete("/v1/sinks/hook")).status_code == 404


def test_only_an_admin_token_may_even_read_the_sinks() -> None:
    access = Access(read_tokens=["r" * 20], admin_tokens=["a" * 20])
    refusal = access.check("GET", "/v1/sinks", "r" * 20)
    assert refusal is not None and refusal.status == 403
    assert access.check("GET", "/v1/sinks", "a" * 20) is None
    assert access.check("GET", "/v1/sources", "r" * 20) is None


@pytest.mark.parametrize("api", [["127.0.0.0/8"]], indirect=True)
async def test_a_sink_added_through_the_api_is_delivered_until_deleted(
    api: tuple[httpx.AsyncClient, Any], redis_client: Any
) -> None:
    http, ingress = api
    keys = ingress.keys
    hook = WebhookReceiver(secret=SECRET).up()
    loop = SinkLoop(ingress.settings.model_copy(update={"sinks": []}), redis_client, consumer="t")
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        reply = await http.post("/v1/sinks", json={**HOOK, "url": hook.url, "max_wait_ms": 10})
        assert reply.status_code == 201, reply.text
        await until(lambda: "hook" in loop.delivering, timeout_s=10, what="the loop delivering the new sink")

        async def published_and_delivered() -> bool:  # its group starts at the end: publish after
            meta = {"kind": "result", "source": "cam", "model": "m", "seq": 0, "score": 0.5}
            await redis_client.xadd(keys.results, {FIELD: encode_message(Message(meta=meta))})
            return bool(hook.keys())

        await until(published_and_delivered, timeout_s=10, every_s=0.5, what="a result at the webhook")
        assert (await http.delete("/v1/sinks/hook")).status_code == 204
        await until(lambda: "hook" not in loop.delivering, timeout_s=10, what="the loop letting go of it")

        async def group_gone() -> bool:  # it no longer holds back trimming
            return "sink:hook" not in {
                str(g["name"], "utf-8") for g in await group_infos(redis_client, keys.results)
            }

        await until(group_gone, timeout_s=10, what="the sink's group destroyed")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        hook.down()
