"""The `postgres` sink kind against a real PostgreSQL 15: items are upserted on their idempotency
key (a redelivered batch adds no row), a batch whose connection dies mid-transaction leaves none of
its rows and its retry leaves each exactly once, a restarted server fails the send in flight
(retryable) and the next send works, and a wrong password or database is a clear, final error."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from stream.adapters.redis.server import find_free_port
from stream.errors import ConfigError
from stream.sinks.destination import DeliveryError, ItemKind, SinkItem, item_key
from stream.sinks.postgres import PostgresDestination
from stream.sinks.registry import build_destination
from stream.sinks.settings import SinkSettings
from tests.servers import PostgresServer
from tests.waiting import until

WAIT_S = 30.0


def items(kind: ItemKind, source: str, seqs: range) -> list[SinkItem]:
    out = []
    for seq in seqs:
        body: dict[str, Any] = {"source": source, "model": "mobilenet", "seq": seq, "label": f"l{seq % 3}"}
        if kind == "results":
            body |= {"kind": "result", "score": 0.5, "smoothed_label": "l0", "result_ms": 1.7e12 + seq}
        elif kind == "events":
            body |= {"kind": "label_change", "previous": "l9"}
        else:
            body = {"id": f"{source}/mobilenet/{seq}", "source": source, "model": "mobilenet", "label": "l1"}
        out.append(SinkItem(kind, item_key(kind, body), source, body))
    return out


@pytest.fixture
async def postgres(postgres_server: PostgresServer) -> AsyncIterator[PostgresServer]:
    """The session's server, running again after the test even if the test stopped it."""
    yield postgres_server
    if postgres_server.process is None:
        postgres_server.start()


@pytest.fixture
async def sink(postgres: PostgresServer) -> AsyncIterator[PostgresDestination]:
    """A destination writing to tables of its own (a fresh prefix per test)."""
    prefix = f"t{secrets.token_hex(4)}_"
    sink = SinkSettings(
        name=f"pg-{prefix[:-1]}",
        kind="postgres",
        dsn=postgres.dsn,
        secret=postgres.password,
        table_prefix=prefix,
    )
    destination = build_destination(sink)  # as `framestream run` builds it, through its entry point
    assert isinstance(destination, PostgresDestination)
    yield destination
    await destination.close()


def rows(
    server: PostgresServer, sink: PostgresDestination, kind: ItemKind, columns: str = "key"
) -> list[tuple]:
    with server.connect() as conn:
        query = f'SELECT {columns} FROM "{sink.table(kind)}" ORDER BY key'
        return [tuple(r) for r in conn.execute(query).fetchall()]  # type: ignore[call-overload]


async def test_items_are_upserted_once_per_key(postgres: PostgresServer, sink: PostgresDestination) -> None:
    batch = [
        *items("results", "cam/1", range(30)),
        *items("events", "cam/1", range(3)),
        *items("segments", "cam/1", range(2)),
    ]
    await sink.start()
    await sink.send(batch)
    await sink.send(batch)  # redelivered whole, as after a crash before the ack

    got = rows(postgres, sink, "results", "key, source, model, seq, label, score, smoothed_label, body")
    assert len(got) == 30 and len({r[0] for r in got}) == 30
    first = next(r for r in got if r[0] == "cam/1/mobilenet/7")
    assert first[1:7] == ("cam/1", "mobilenet", 7, "l1", 0.5, "l0")
    assert first[7] == dict(batch[7].body)  # the full JSON body, as jsonb
    assert rows(postgres, sink, "events", "key, previous, label") == [
        (f"cam/1/mobilenet/{i}", "l9", f"l{i}") for i in range(3)
    ]
    assert rows(postgres, sink, "segments", "key, label") == [
        (f"cam/1/mobilenet/{i}", "l1") for i in range(2)
    ]


async def test_a_changed_body_updates_its_row(postgres: PostgresServer, sink: PostgresDestination) -> None:
    [item] = items("results", "cam", range(1))
    await sink.send([item])
    await sink.send([SinkItem("results", item.key, "cam", {**item.body, "label": "relabelled"})])
    assert rows(postgres, sink, "results", "key, label") == [(item.key, "relabelled")]


async def _blocked_mid_transaction(
    postgres: PostgresServer, sink: PostgresDestination, batch: list[SinkItem]
):
    """Start `sink.send(batch)` with another session holding an uncommitted row for the key of the
    batch's last item: the send's transaction writes the items before it, then waits for that row
    lock. Returns the send task and the blocking connection."""
    await sink.start()
    blocker = postgres.connect()
    blocker.execute("BEGIN")
    last = batch[-1]
    blocker.execute(
        f'INSERT INTO "{sink.table(last.kind)}" (key, source, body) VALUES (%s, %s, %s::jsonb)',  # type: ignore[arg-type]
        [last.key, last.source, '{"seq": -1}'],
    )
    send = asyncio.create_task(sink.send(batch))
    with postgres.connect() as watcher:

        def waiting() -> bool:
            found = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = %s AND wait_event_type = 'Lock'",
                [f"framestream sink {sink.name}"],
            ).fetchone()
            return bool(found and found[0])

        await until(waiting, timeout_s=WAIT_S, what="the send waiting on the blocked row")
    return send, blocker


@pytest.mark.parametrize("death", ["backend terminated", "server crashed"])
async def test_a_connection_dying_mid_transaction_leaves_none_of_the_batch(
    postgres: PostgresServer, sink: PostgresDestination, death: str
) -> None:
    batch = [*items("results", "cam", range(40)), *items("events", "cam", range(5))]
    send, blocker = await _blocked_mid_transaction(postgres, sink, batch)
    if death == "server crashed":
        postgres.crash()
        blocker.close()
        postgres.start()
    else:
        with postgres.connect() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                [f"framestream sink {sink.name}"],
            )
        blocker.execute("ROLLBACK")
        blocker.close()
    with pytest.raises(DeliveryError) as died:
        await send
    assert died.value.retryable, died.value
    # the rows written before the death (every result, four events) were rolled back
    assert rows(postgres, sink, "results") == [] and rows(postgres, sink, "events") == []

    await sink.send(batch)  # the delivery loop's retry, on a new connection
    for kind in ("results", "events"):
        got = rows(postgres, sink, kind, "key, seq")
        assert sorted(got) == sorted((i.key, i.body["seq"]) for i in batch if i.kind == kind)


async def test_a_send_cancelled_mid_transaction_leaves_the_next_send_working(
    postgres: PostgresServer, sink: PostgresDestination
) -> None:
    batch = [*items("results", "cam", range(20)), *items("events", "cam", range(3))]
    send, blocker = await _blocked_mid_transaction(postgres, sink, batch)
    send.cancel()  # the delivery loop stopping while a batch is in flight
    with pytest.raises(asyncio.CancelledError):
        await send
    blocker.execute("ROLLBACK")
    blocker.close()
    await sink.send(batch)  # the loop's next run: same destination, same items
    assert len(rows(postgres, sink, "results")) == 20 and len(rows(postgres, sink, "events")) == 3


async def test_server_restart_fails_the_send_then_sending_again_works(
    postgres: PostgresServer, sink: PostgresDestination
) -> None:
    await sink.send(items("results", "cam", range(0, 10)))
    postgres.stop()
    with pytest.raises(DeliveryError) as outage:
        await sink.send(items("results", "cam", range(10, 20)))
    assert outage.value.retryable, outage.value
    postgres.start()
    await sink.send(items("results", "cam", range(10, 20)))
    assert len(rows(postgres, sink, "results")) == 20


async def test_a_row_the_table_refuses_is_a_final_error(
    postgres: PostgresServer, sink: PostgresDestination
) -> None:
    bad = SinkItem("results", "cam/mobilenet/x", "cam", {"source": "cam", "model": "mobilenet", "seq": "x"})
    with pytest.raises(DeliveryError, match="bigint") as refused:
        await sink.send([*items("results", "cam", range(3)), bad])
    assert not refused.value.retryable
    assert rows(postgres, sink, "results") == []
    await sink.send(items("results", "cam", range(3)))  # the connection is still good
    assert len(rows(postgres, sink, "results")) == 3


async def test_wrong_password_database_or_port_are_clear_delivery_errors(postgres: PostgresServer) -> None:
    base = postgres.dsn.rsplit("/", 1)[0]
    for dsn, password, message, retryable in [
        (postgres.dsn, "not-the-password", "password authentication failed", False),
        (f"{base}/no_such_db", postgres.password, 'database "no_such_db" does not exist', False),
        (
            f"{base.rsplit(':', 1)[0]}:notaport/postgres",
            postgres.password,
            'invalid integer value "notaport"',
            False,
        ),
        (postgres.dsn.replace(str(postgres.port), str(find_free_port())), postgres.password, "refused", True),
    ]:
        destination = PostgresDestination(name="bad", dsn=dsn, password=password, timeout_s=10)
        with pytest.raises(DeliveryError, match=message) as failed:
            await destination.start()
        assert failed.value.retryable is retryable, failed.value
        await destination.close()


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("mysql://u@127.0.0.1/db", "must start with postgresql://"),
        ("postgresql://u:hunter2@127.0.0.1/db", "secret, not in its dsn"),
        ("postgresql://u@127.0.0.1/db?colour=blue", "not a PostgreSQL URI"),
    ],
)
def test_bad_dsn_is_refused_when_built(dsn: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PostgresDestination(name="bad", dsn=dsn)
