"""Sink delivery per kind: items/s, CPU per delivered item of the sinks process, and the latency a
sink adds from a result (its ``result_ms``) to the destination's receipt.

    .venv/bin/python -m benchmarks.sinks [--items 5000] [--paced 1000] [--rate 200]
                                          [--kinds webhook,mqtt,postgres]

For each kind: a private redis-server, a local destination (webhook: an HTTP server in this
process; mqtt: a private Mosquitto, read by a QoS 1 subscriber in this process; postgres: a
private PostgreSQL 15) and one ``framestream stage sinks`` process delivering one sink to it, with
the sink's default batching (``max_items`` 100, ``max_wait_ms`` 200).

- *throughput*: `--items` results are written to the results stream at once (4 sources, one
  partition); items/s is their count over the time from the first write until the destination
  has the last, and CPU per item is the sinks process's CPU (user + system, /proc) over the same
  time, divided by the items.
- *latency*: `--paced` more results are written at `--rate` per second, each with ``result_ms``
  set as it is written; the latency of an item is its receipt time at the destination (webhook:
  when the request was read; mqtt: when the subscriber got the message; postgres: the row's
  insert time, ``clock_timestamp()`` in a column the benchmark adds to the sink's table) minus its
  ``result_ms``. It includes the batch wait (``max_wait_ms``): that is what a sink adds.

Needs mosquitto and PostgreSQL 15 (the Makefile's APT_PACKAGES); kinds whose server is missing
are skipped with the reason. Linux only (CPU from /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
import yaml

from benchmarks.procs import descendants
from stream.adapters.redis.server import RedisServer
from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.core.latency import LatencyHistogram

PIPELINE = "sinkbench"
SINK = "bench"
SOURCES = 4
SECRET_ENV = "FRAMESTREAM_BENCH_SINK_SECRET"
WAIT_S = 300.0


class Receipts:
    """Items the destination got: key -> (result_ms, receipt ms), the first arrival of each."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[str, tuple[float, float]] = {}

    def note(self, key: str, result_ms: Any, at_ms: float) -> None:
        with self.lock:
            if key not in self.items and isinstance(result_ms, int | float):
                self.items[key] = (float(result_ms), at_ms)

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for k in self.items if k.startswith(prefix))

    def latencies(self, prefix: str) -> list[float]:
        with self.lock:
            return [at - result for k, (result, at) in self.items.items() if k.startswith(prefix)]


def _now_ms() -> float:
    return time.time() * 1000.0


# --- destinations: each yields (sink settings, how many items of a prefix it has, latencies) ----


@contextmanager
def webhook() -> Iterator[tuple[dict[str, Any], Callable[[str], int], Callable[[str], list[float]]]]:
    receipts = Receipts()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            at = _now_ms()
            for entry in json.loads(body):
                receipts.note(entry["key"], entry["item"].get("result_ms"), at)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield {"kind": "webhook", "url": url}, receipts.count, receipts.latencies
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def mqtt() -> Iterator[tuple[dict[str, Any], Callable[[str], int], Callable[[str], list[float]]]]:
    import paho.mqtt.client as paho

    from tests.servers import MosquittoServer

    receipts = Receipts()
    with MosquittoServer() as broker:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="sink-bench-reader")
        client.username_pw_set(broker.username, broker.password)
        subscribed = threading.Event()

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            c.subscribe("framestream/#", qos=1)

        def on_subscribe(c: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
            subscribed.set()

        def on_message(c: Any, userdata: Any, message: Any) -> None:
            at = _now_ms()
            item = json.loads(message.payload)  # a topic's retained "last" copy repeats a key seen
            receipts.note(item["key"], item.get("result_ms"), at)

        client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        try:
            assert subscribed.wait(30), "the benchmark's MQTT subscriber did not subscribe"
            sink = {"kind": "mqtt", "url": broker.url, "secret_env": SECRET_ENV}
            os.environ[SECRET_ENV] = broker.password
            yield sink, receipts.count, receipts.latencies
        finally:
            client.loop_stop()
            client.disconnect()


@contextmanager
def postgres() -> Iterator[tuple[dict[str, Any], Callable[[str], int], Callable[[str], list[float]]]]:
    import psycopg

    from tests.servers import PostgresServer

    with PostgresServer() as server:
        conn = psycopg.connect(server.dsn, password=server.password, autocommit=True)
        table = "framestream_results"
        added = False

        def prepare() -> bool:
            """Add the receipt-time column once the sink created its table."""
            nonlocal added
            if not added and conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None:
                conn.execute(
                    f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS received_ms double precision "
                    "DEFAULT extract(epoch FROM clock_timestamp()) * 1000"
                )
                added = True
            return added

        def count(prefix: str) -> int:
            if not prepare():
                return 0
            row = conn.execute(f"SELECT count(*) FROM {table} WHERE key LIKE %s", (prefix + "%",)).fetchone()
            return int(row[0])

        def latencies(prefix: str) -> list[float]:
            rows = conn.execute(
                f"SELECT received_ms - result_ms FROM {table} WHERE key LIKE %s AND received_ms IS NOT NULL",
                (prefix + "%",),
            ).fetchall()
            return [float(r[0]) for r in rows]

        os.environ[SECRET_ENV] = server.password
        try:
            yield {"kind": "postgres", "dsn": server.dsn, "secret_env": SECRET_ENV}, count, latencies
        finally:
            conn.close()


DESTINATIONS = {"webhook": webhook, "mqtt": mqtt, "postgres": postgres}


# --- the run ------------------------------------------------------------------------------------


def _result(source: str, seq: int) -> dict[bytes | str, bytes]:
    meta = {"kind": "result", "source": source, "model": "m", "seq": seq, "label": "cat", "score": 0.9,
            "result_ms": _now_ms()}  # fmt: skip
    return {FIELD: encode_message(Message(meta=meta))}


def _publish(client: redis.Redis, keys: PipelineKeys, prefix: str, seqs: range) -> None:
    with client.pipeline(transaction=False) as pipe:
        for seq in seqs:
            for s in range(SOURCES):
                pipe.xadd(keys.results, _result(f"{prefix}{s}", seq))  # type: ignore[arg-type]
        pipe.execute()


def _wait(condition: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if proc.poll() is not None:
            raise RuntimeError(f"the sinks process ended ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {WAIT_S:.0f} s")
        time.sleep(0.02)


def _cpu_s(pid: int) -> float:
    return next(p.cpu_s for p in descendants(os.getpid()) if p.pid == pid)


def _group_exists(client: redis.Redis, stream: str, group: str) -> bool:
    try:
        return any(g["name"] in (group, group.encode()) for g in client.xinfo_groups(stream))
    except redis.ResponseError:
        return False


def measure(kind: str, items: int, paced: int, rate: float) -> dict[str, float]:
    keys = PipelineKeys(PIPELINE)
    with (
        RedisServer() as server,
        DESTINATIONS[kind]() as (sink, count, latencies),
        tempfile.TemporaryDirectory() as tmp,
    ):
        config = Path(tmp) / "settings.yaml"
        settings = {"streams": {"pipeline": PIPELINE}, "sinks": [{"name": SINK, **sink}]}
        config.write_text(yaml.safe_dump(settings))
        env = {**os.environ, "FRAMESTREAM_REDIS__URL": server.url}
        cmd = [sys.executable, "-m", "stream.cli", "stage", "sinks", "--config", str(config)]
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(server.url)
        try:
            _wait(lambda: _group_exists(client, keys.results, f"sink:{SINK}"), "sink group", proc)
            _publish(client, keys, "warm-", range(5))  # connects, creates the postgres table
            _wait(lambda: count("warm-") == 5 * SOURCES, "warm-up items", proc)
            count("warm-")
            n = (items // SOURCES) * SOURCES
            cpu, wall = _cpu_s(proc.pid), time.monotonic()
            _publish(client, keys, "bulk-", range(n // SOURCES))
            _wait(lambda: count("bulk-") >= n, f"{n} items", proc)
            wall, cpu = time.monotonic() - wall, _cpu_s(proc.pid) - cpu
            per = max(1, round(paced / SOURCES))
            for seq in range(per):
                _publish(client, keys, "paced-", range(seq, seq + 1))
                time.sleep(SOURCES / rate)
            _wait(lambda: count("paced-") >= per * SOURCES, f"{per * SOURCES} paced items", proc)
            histogram = LatencyHistogram()
            for ms in latencies("paced-"):
                histogram.record(max(0.0, ms))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            client.close()
    return {
        "items_per_s": n / wall,
        "cpu_ms_per_item": cpu * 1000.0 / n,
        "latency_p50_ms": histogram.percentile(50) or float("nan"),
        "latency_p99_ms": histogram.percentile(99) or float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=5000, help="results written at once (throughput)")
    parser.add_argument("--paced", type=int, default=1000, help="results written at --rate (latency)")
    parser.add_argument("--rate", type=float, default=200.0, help="results per second of the paced run")
    parser.add_argument("--kinds", default="webhook,mqtt,postgres")
    args = parser.parse_args()
    print(f"{'kind':<10} {'items/s':>9} {'CPU ms/item':>12} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in args.kinds.split(","):
        try:
            r = measure(kind, args.items, args.paced, args.rate)
        except FileNotFoundError as e:
            print(f"{kind:<10} skipped: {e}")
            continue
        print(f"{kind:<10} {r['items_per_s']:>9.0f} {r['cpu_ms_per_item']:>12.3f} "
              f"{r['latency_p50_ms']:>8.1f} {r['latency_p99_ms']:>8.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
