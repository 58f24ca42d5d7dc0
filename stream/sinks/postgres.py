"""The `postgres` sink kind: results, label-change events and segments as rows of three tables
(`{table_prefix}results`, `...events`, `...segments`), created on first use. Each `send` is one
transaction that upserts every item on its idempotency key, and returns after COMMIT: a batch lands
whole or not at all, and a redelivered item updates its row instead of adding one, so each key
(each frame's result) is in its table exactly once.

Each row keeps the item's full JSON body (`body jsonb`); the other columns are generated from it
by the server, so they can never disagree with the body.

The connection is opened on `start` (or the first `send`) and kept; a failure closes it, and the
next `send` connects again: no retries here, the delivery loop decides when to call again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from stream.errors import ConfigError
from stream.sinks.destination import ITEM_KINDS, DeliveryError, ItemKind, SinkItem
from stream.sinks.settings import SinkSettings

__all__ = ["COLUMNS", "DEFAULT_TABLE_PREFIX", "PostgresDestination", "build"]

DEFAULT_TABLE_PREFIX = "framestream_"

_COMMON = (
    "key text PRIMARY KEY",
    "source text NOT NULL",
    "model text GENERATED ALWAYS AS (body->>'model') STORED",
)
COLUMNS: Mapping[ItemKind, tuple[str, ...]] = {
    "results": (
        *_COMMON,
        "seq bigint GENERATED ALWAYS AS ((body->>'seq')::bigint) STORED",
        "label text GENERATED ALWAYS AS (body->>'label') STORED",
        "score double precision GENERATED ALWAYS AS ((body->>'score')::double precision) STORED",
        "smoothed_label text GENERATED ALWAYS AS (body->>'smoothed_label') STORED",
        "result_ms double precision GENERATED ALWAYS AS ((body->>'result_ms')::double precision) STORED",
    ),
    "events": (
        *_COMMON,
        "seq bigint GENERATED ALWAYS AS ((body->>'seq')::bigint) STORED",
        "previous text GENERATED ALWAYS AS (body->>'previous') STORED",
        "label text GENERATED ALWAYS AS (body->>'label') STORED",
        "result_ms double precision GENERATED ALWAYS AS ((body->>'result_ms')::double precision) STORED",
    ),
    "segments": (
        *_COMMON,
        "label text GENERATED ALWAYS AS (body->>'label') STORED",
    ),
}
"""Each table's columns before `body jsonb NOT NULL` and `delivered_at` (first delivery)."""

_TAIL = ("body jsonb NOT NULL", "delivered_at timestamptz NOT NULL DEFAULT now()")
_AUTH_FAILED = ("password authentication failed", "no password supplied", "no pg_hba.conf entry")
_GONE_FOR_GOOD = ("does not exist", "connection is bad: invalid")
"""Connection failures that a retry cannot change: wrong password or user, a database that is not
there, the server's pg_hba refusing us, a DSN option libpq rejects (`port=notaport`)."""


def _json(value: Any) -> str:
    # the same encoding as `framestream run --results` lines
    return json.dumps(value, separators=(",", ":"), default=str)


class PostgresDestination:
    """Upserts items into PostgreSQL, one transaction per `send`."""

    kind = "postgres"

    def __init__(
        self,
        *,
        name: str,
        dsn: str,
        password: str | None = None,
        table_prefix: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"sink {name!r}: dsn must start with postgresql://, got {dsn.split('://')[0]!r}"
            )
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as e:
            raise ConfigError(f"sink {name!r}: dsn is not a PostgreSQL URI: {e}") from e
        if "password" in params:
            raise ConfigError(
                f"sink {name!r}: put the PostgreSQL password in the sink's secret, not in its dsn"
            )
        if not timeout_s > 0:
            raise ConfigError(f"sink {name!r}: timeout_s must be > 0, got {timeout_s}")
        self.name = name
        self.dsn = dsn
        self.password = password
        self.table_prefix = DEFAULT_TABLE_PREFIX if table_prefix is None else table_prefix
        self.timeout_s = timeout_s
        self._where = (
            f"postgres sink {name!r} ({params.get('host', 'local socket')}:{params.get('port', 5432)})"
        )
        self._upserts = {kind: self._upsert(kind) for kind in ITEM_KINDS}
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def table(self, kind: ItemKind) -> str:
        """The name of the table that holds items of `kind`."""
        return f"{self.table_prefix}{kind}"

    def _upsert(self, kind: ItemKind) -> sql.Composed:
        return sql.SQL(
            "INSERT INTO {t} AS t (key, source, body) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET source = EXCLUDED.source, body = EXCLUDED.body "
            "WHERE t.body IS DISTINCT FROM EXCLUDED.body"
        ).format(t=sql.Identifier(self.table(kind)))

    def _creates(self) -> list[sql.Composed]:
        return [
            sql.SQL("CREATE TABLE IF NOT EXISTS {t} ({cols})").format(
                t=sql.Identifier(self.table(kind)),
                cols=sql.SQL(", ").join(sql.SQL(c) for c in (*COLUMNS[kind], *_TAIL)),
            )
            for kind in ITEM_KINDS
        ]

    async def start(self) -> None:
        """Connect and create the tables now, so that a wrong DSN or password shows at start-up."""
        await self._within(self._connection(), "connecting")

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        conn = self._conn
        # a send cancelled mid-transaction leaves its connection busy: only an idle one is reused
        if conn is not None and not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE:
            return conn
        await self._drop()
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn,
                password=self.password,
                autocommit=True,  # transactions are explicit: one per `send`
                connect_timeout=max(1, round(self.timeout_s)),
                application_name=f"framestream sink {self.name}"[:63],
            )
        except psycopg.OperationalError as e:
            message = str(e).strip()
            retryable = not any(s in message for s in (*_AUTH_FAILED, *_GONE_FOR_GOOD))
            raise DeliveryError(f"{self._where}: cannot connect: {message}", retryable=retryable) from e
        try:
            async with conn.transaction():
                # one creator at a time: concurrent CREATE TABLE IF NOT EXISTS can still collide
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self.table_prefix])
                for create in self._creates():
                    await conn.execute(create)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def send(self, items: Sequence[SinkItem]) -> None:
        """Upsert every item in one transaction; return after COMMIT."""
        if items:
            await self._within(self._write(items), "writing")

    async def _write(self, items: Sequence[SinkItem]) -> None:
        conn = await self._connection()
        rows: dict[ItemKind, list[tuple[str, str, Jsonb]]] = {}
        for item in items:
            rows.setdefault(item.kind, []).append((item.key, item.source, Jsonb(item.body, dumps=_json)))
        async with conn.transaction(), conn.cursor() as cur:
            for kind, kind_rows in rows.items():
                await cur.executemany(self._upserts[kind], kind_rows)

    async def _within(self, work: Any, doing: str) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await work
        except TimeoutError as e:
            # the COMMIT may have landed: the retry's upsert makes that harmless
            await self._drop()
            raise DeliveryError(f"{self._where}: {doing} took over {self.timeout_s:g} s") from e
        except DeliveryError:
            await self._drop()
            raise
        except (errors.DataError, errors.IntegrityError) as e:
            # the connection is fine; these rows can never be written as they are
            raise DeliveryError(f"{self._where}: rows refused: {str(e).strip()}", retryable=False) from e
        except psycopg.Error as e:
            await self._drop()
            raise DeliveryError(f"{self._where}: {doing} failed: {str(e).strip()}") from e

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout_s):
                    await conn.close()

    async def close(self) -> None:
        """Close the connection; never raises."""
        with contextlib.suppress(Exception):
            await self._drop()


def build(sink: SinkSettings) -> PostgresDestination:
    """The `postgres` entry point of `framestream.sinks`: a destination from a sink's settings."""
    return PostgresDestination(
        name=sink.name,
        dsn=sink.dsn or "",
        password=sink.secret_value(),
        table_prefix=sink.table_prefix,
        timeout_s=sink.timeout_s,
    )
