"""Hostile and clumsy clients against a live ingress (local Ray, a real redis-server, the real
Serve config, all four stages, tokens configured): each probe of issue 25, rerun, gets its
documented answer while the service stays healthy for everyone else.

While a probe runs, a watcher thread (its own loopback address, its own connections) asks
``/healthz`` every 0.2 s, pages the results of three sources that play throughout, and samples the
resident memory of the ingress replica and of Serve's HTTP proxy. Each probe then asserts that
``/healthz`` always answered within 1 s, that results kept coming at the rate they came before
the probes (within 20%, a ratio within this run), and that memory stayed within the bounds
docs/security.md states. Every client loop here is bounded in count and time, and talks to
127.0.0.0/8 only: each probe from its own loopback address, so the per-client rate limit of one
does not spill into another's.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from stream.adapters.redis.server import RedisServer, find_free_port
from stream.settings import Settings

ray = pytest.importorskip("ray")

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning"),
]

MODEL = "mobilenet-v1-0.25-128"  # the synthetic stand-in: fast, on every machine
READS = [f"read{i}-" + secrets.token_urlsafe(24) for i in range(4)]
ADMIN = "admin-" + secrets.token_urlsafe(24)
GOOD = ("good-0", "good-1", "good-2")
FPS = 5.0
"""Frames/s each good source plays at (its clip's rate, in real time): 15 results/s in all."""
LIMITS = {  # smaller than the defaults, so each cap is reached with few requests
    "FRAMESTREAM_API__MAX_FEEDS": "12",
    "FRAMESTREAM_API__MAX_FEEDS_PER_CLIENT": "4",
    "FRAMESTREAM_API__BODY_TIMEOUT_S": "3",
    "FRAMESTREAM_API__MAX_SOURCES": "10",
}
RATE_PER_S, BURST = 20.0, 40
INGRESS_RSS_BOUND = 1 << 30
"""docs/security.md: the ingress replica stays below 1 GiB resident under every probe."""
PROXY_RSS_BOUND = 1 << 30
"""docs/security.md: Serve's HTTP proxy stays below 1 GiB resident under every probe."""
REPLICAS = {"Ingest": 1, "Preprocess": 1, "Infer": 1, "Postprocess": 1}
WINDOW_S = 8.0
"""The shortest stretch the watcher measures (a probe and its aftermath): 40 results a source."""


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _client(base: str, address: str, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=base, transport=httpx.HTTPTransport(local_address=address), **kwargs)


def _aclient(base: str, address: str, **kwargs: Any) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=base, transport=transport, **kwargs)


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _proxy_pids() -> list[int]:
    from benchmarks.procs import descendants

    return [p.pid for p in descendants(os.getpid()) if p.cmd.startswith("ray::ProxyActor")]


@dataclass
class Watch:
    """What the watcher saw during one probe (see the module docstring)."""

    healthz_s: list[float] = field(default_factory=list)
    healthz_failures: list[str] = field(default_factory=list)
    first_seq: dict[str, int] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    frame_steps: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    """(time seen, frames) each time a source's published count changed: ingest publishes a
    real-time source 8 frames at a time, so its rate is measured from step to step."""
    started_s: float = 0.0
    ended_s: float = 0.0
    ingress_rss: int = 0
    proxy_rss: int = 0

    def rate(self, source: str) -> float:
        """Results/s of `source` over the window."""
        return (self.last_seq[source] - self.first_seq[source]) / max(1e-6, self.ended_s - self.started_s)

    def fps(self, source: str) -> float:
        """Frames/s `source` played (published by ingest) over the window, from its first step
        seen to its last."""
        steps = self.frame_steps[source][1:]  # the first sample is not a step: it was there before
        assert len(steps) >= 2, (source, self.frame_steps[source])
        (t0, f0), (t1, f1) = steps[0], steps[-1]
        return (f1 - f0) / (t1 - t0)


@dataclass
class Live:
    url: str
    media: Path
    ingress_pid: int
    baseline: dict[str, float] = field(default_factory=dict)
    """Frames/s each good source played before any probe."""

    def watch(self, min_s: float = WINDOW_S) -> _Watcher:
        return _Watcher(self, min_s)


class _Watcher:
    """The watcher thread as a context manager; `result` is its `Watch` once it has ended."""

    def __init__(self, live: Live, min_s: float) -> None:
        self.live = live
        self.min_s = min_s
        self.result = Watch()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def __enter__(self) -> Watch:
        self._entered_s = time.monotonic()
        self._thread.start()
        return self.result

    def __exit__(self, *exc: object) -> None:
        # a window long enough to measure the results' rate: it spans the probe and what follows
        self._stop.wait(max(0.0, self.min_s - (time.monotonic() - self._entered_s)))
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        w, live = self.result, self.live
        proxies = _proxy_pids()
        after = {s: -1 for s in GOOD}
        with (
            _client(live.url, "127.0.0.2", timeout=5) as health,
            _client(live.url, "127.0.0.3", timeout=5, headers=_bearer(READS[0])) as reader,
        ):
            next_page = 0.0
            w.started_s = time.monotonic()
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    status = health.get("/healthz").status_code
                    if status != 200:
                        w.healthz_failures.append(f"status {status}")
                except httpx.HTTPError as e:
                    w.healthz_failures.append(repr(e))
                w.healthz_s.append(time.monotonic() - started)
                self._note_frames(reader)
                if started >= next_page:
                    next_page = started + 0.5
                    for source in GOOD:
                        after[source] = self._page_results(reader, source, after[source])
                w.ingress_rss = max(w.ingress_rss, _rss(live.ingress_pid))
                w.proxy_rss = max(w.proxy_rss, sum(_rss(p) for p in proxies))
                self._stop.wait(0.2)
            w.ended_s = time.monotonic()

    def _note_frames(self, reader: httpx.Client) -> None:
        """Each good source's published frames, when they changed (every 0.2 s: step times to
        within that)."""
        listed = reader.get("/v1/sources")
        if listed.status_code != 200:
            return
        for item in listed.json()["sources"]:
            steps = self.result.frame_steps.setdefault(item["id"], [])
            if item["id"] in GOOD and (not steps or steps[-1][1] != item["frames"]):
                steps.append((time.monotonic(), item["frames"]))

    def _page_results(self, reader: httpx.Client, source: str, after: int) -> int:
        """Read `source`'s results after seq `after` (the first time, up to the newest: the
        window counts what comes during it); returns the new `after`."""
        w = self.result
        while True:
            page = reader.get(f"/v1/results/{source}", params={"after_seq": after, "limit": 1000})
            if page.status_code != 200:
                return after
            after = page.json()["next_after_seq"]
            if source in w.first_seq or len(page.json()["results"]) < 1000:
                break
        w.first_seq.setdefault(source, after)
        w.last_seq[source] = after
        return after


def _assert_healthy(live: Live, w: Watch) -> None:
    assert not w.healthz_failures, w.healthz_failures[:5]
    slowest = sorted(w.healthz_s)[-5:]
    print(f"/healthz: {len(w.healthz_s)} answers, slowest {[round(s, 2) for s in slowest]} s; results/s "
          f"{ {s: round(w.rate(s), 2) for s in GOOD} }, frames/s { {s: round(w.fps(s), 2) for s in GOOD} } "
          f"(before: { {s: round(r, 2) for s, r in live.baseline.items()} }); RSS ingress "
          f"{w.ingress_rss >> 20} MiB, proxy {w.proxy_rss >> 20} MiB")  # fmt: skip
    assert w.healthz_s and max(w.healthz_s) < 1.0, f"slowest /healthz {slowest} s"
    window_s = w.ended_s - w.started_s
    for source in GOOD:  # the sources play on at their rate, and their results keep coming
        ratio = w.fps(source) / live.baseline[source]
        assert 0.8 <= ratio <= 1.2, (source, round(w.fps(source), 2), live.baseline[source])
        assert w.last_seq[source] - w.first_seq[source] >= FPS * window_s / 2, (source, w)
    assert w.ingress_rss < INGRESS_RSS_BOUND, w.ingress_rss
    assert w.proxy_rss < PROXY_RSS_BOUND, w.proxy_rss


def _watched(live: Live, seconds: float) -> Watch:
    with live.watch(seconds) as w:
        pass
    return w


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from ray import serve

    from stream.adapters.media.video import write_video
    from stream.zoo.repository import load_spec
    from stream.zoo.store import locate_model
    from tests.faults.rayapp import FaultApp, start_local_ray

    cache = tmp_path_factory.mktemp("hostile-models")
    locate_model(load_spec(MODEL), weights_dir=None, cache_dir=cache, allow_synthetic=True)
    media = tmp_path_factory.mktemp("hostile-media")
    settings = Settings(
        models={"cache_dir": cache, "weights_dir": None},
        ingest={"allowed_sources": {"schemes": ["file"], "roots": [media]}},
    )
    server = RedisServer().start()
    variables = {
        "FRAMESTREAM_API__READ_TOKENS": ",".join(READS),
        "FRAMESTREAM_API__ADMIN_TOKENS": ADMIN,
        **LIMITS,
    }
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)  # the replicas inherit them, as with `framestream run`
    start_local_ray()
    try:
        app = FaultApp(
            settings, server.url, MODEL, REPLICAS, ingress={"rate_per_s": RATE_PER_S, "burst": BURST},
            name="hostile",
        )  # fmt: skip
        app.deploy(find_free_port())
        (ingress_pid,) = app.pids("Ingress")
        result = Live(f"http://127.0.0.1:{app.http_port}", media, ingress_pid)
        # a clip at FPS that lasts longer than the module: played in real time, at an even rate (a
        # loop's restart would publish its first frames at once)
        rng = np.random.default_rng(0)
        frames = (np.full((120, 160, 3), rng.integers(0, 255), np.uint8) for _ in range(int(FPS * 400)))
        clip = write_video(media / "long.mp4", frames, fps=int(FPS))
        with _client(result.url, "127.0.0.4", timeout=30, headers=_bearer(ADMIN)) as admin:
            for source in GOOD:
                spec = {"uri": str(clip), "id": source, "realtime": True}
                assert admin.post("/v1/sources", json=spec).status_code == 201
        calm = _watched(result, 2.0)  # results reach every good source first
        assert all(calm.last_seq.get(s, -1) > 0 for s in GOOD), calm
        calm = _watched(result, WINDOW_S)
        result.baseline = {s: calm.fps(s) for s in GOOD}
        assert all(rate > 0.5 * FPS for rate in result.baseline.values()), result.baseline
        yield result
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            server.close()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


# -- 1. one admin request must not stop every source ---------------------------------------------


def test_a_source_that_cannot_be_opened_fails_alone(live: Live) -> None:
    with live.watch() as w, _client(live.url, "127.0.0.5", timeout=30, headers=_bearer(ADMIN)) as admin:
        too_long = str(live.media / ("A" * 256))
        created = admin.post("/v1/sources", json={"uri": too_long, "id": "too-long"})
        assert created.status_code == 201, created.text  # under the allowed folder: ingest finds out

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            (item,) = [s for s in admin.get("/v1/sources").json()["sources"] if s["id"] == "too-long"]
            if item["status"] == "failed":
                break
            time.sleep(0.5)
        assert item["status"] == "failed" and "too long" in (item["reason"] or ""), item
        time.sleep(6)  # the good sources go on meanwhile: measured by the watcher
        assert admin.delete("/v1/sources/too-long").status_code == 204
    _assert_healthy(live, w)


def test_uri_size_id_shape_and_the_number_of_sources_are_capped(live: Live) -> None:
    with _client(live.url, "127.0.0.5", timeout=30, headers=_bearer(ADMIN)) as admin:
        huge = admin.post("/v1/sources", content=b'{"uri": "' + b"A" * 10_000_000 + b'"}',
                          headers={"Content-Type": "application/json"})  # fmt: skip
        assert huge.status_code == 413 and "limit" in huge.json()["error"]
        long_uri = admin.post("/v1/sources", json={"uri": "/" + "a" * 5000})
        assert long_uri.status_code == 413 and "api.max_uri_chars" not in long_uri.text
        assert "over the limit of 4096" in long_uri.json()["error"]
        for bad_id in (".", ".."):
            refused = admin.post("/v1/sources", json={"uri": str(live.media / "x.mp4"), "id": bad_id})
            assert refused.status_code == 400, refused.text
        added = []
        for i in range(10):
            response = admin.post(
                "/v1/sources", json={"uri": str(live.media / f"none-{i}.mp4"), "id": f"cap-{i}"}
            )
            if response.status_code == 429:
                assert "api.max_sources" in response.json()["error"]
                break
            assert response.status_code == 201, response.text
            added.append(f"cap-{i}")
        assert len(added) + len(GOOD) == 10  # the cap of this app
        for source in added:
            assert admin.delete(f"/v1/sources/{source}").status_code == 204


# -- 2. slow and large uploads ------------------------------------------------------------------


async def _trickle(port: int, address: str, head: bytes, seconds: float) -> bytes:
    """Send `head`, then one body byte every 0.25 s for at most `seconds`; the first line of the
    answer (b"" when none came)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
    try:
        writer.write(head)
        await writer.drain()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                return await asyncio.wait_for(reader.readline(), 0.25)
            except TimeoutError:
                writer.write(b"x")
                await writer.drain()
        return b""
    except (ConnectionError, OSError):
        return b"closed"
    finally:
        writer.close()


def _post_head(token: str | None, length: int, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /v1/sources HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()  # fmt: skip


def test_unauthenticated_slow_and_huge_uploads_are_refused_before_their_body(live: Live) -> None:
    port = int(live.url.rsplit(":", 1)[1])

    async def client(i: int, address: str, length: int, until_s: float) -> list[bytes]:
        """One hostile client: connect, trickle a body, and again as soon as it is answered."""
        await asyncio.sleep(i * 0.01)  # 260 connections opened within 2.6 s
        answers = []
        while time.monotonic() < until_s:
            answers.append(await _trickle(port, address, _post_head(None, length), 20))
            await asyncio.sleep(1.0)
        return answers

    async def probe() -> list[bytes]:
        until_s = time.monotonic() + WINDOW_S
        slow = [client(i, "127.0.0.6", 1_000_000, until_s) for i in range(260)]
        huge = [client(i, "127.0.0.7", 100_000_000, until_s) for i in range(5)]
        return [a for answers in await asyncio.gather(*slow, *huge) for a in answers]

    with live.watch() as w:
        answers = asyncio.run(probe())
    # each answered at once, before its body: 401 (no token) or 429 (past the rate limit, whose
    # bucket is checked first), never a timeout
    assert all(a.startswith((b"HTTP/1.1 401", b"HTTP/1.1 429")) for a in answers), {a[:40] for a in answers}
    _assert_healthy(live, w)


def test_an_admins_slow_upload_times_out_and_a_huge_one_is_refused_at_once(live: Live) -> None:
    port = int(live.url.rsplit(":", 1)[1])

    async def probe() -> list[bytes]:
        slow = [_trickle(port, "127.0.0.8", _post_head(ADMIN, 2000), 20) for _ in range(10)]
        huge = [_trickle(port, "127.0.0.9", _post_head(ADMIN, 100_000_000), 20) for _ in range(5)]
        headers = [_trickle(port, "127.0.0.10", _post_head(ADMIN, 2, f"X-Pad: {'p' * 1_000_000}\r\n"), 20)]
        return list(await asyncio.gather(*slow, *huge, *headers))

    with live.watch() as w:
        answers = asyncio.run(probe())
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers[:10]), answers[:10]
    assert all(a.startswith(b"HTTP/1.1 413") for a in answers[10:15]), answers[10:15]
    assert answers[15].startswith(b"HTTP/1.1 431"), answers[15]
    _assert_healthy(live, w)


# -- 3. decompression bomb ------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bomb(width: int, height: int) -> bytes:
    """A real PNG of `width` x `height` black pixels in about 1 MB (20000 x 20000: 1.2 GB decoded),
    made in milliseconds: deflate segments of zeros ended by a full flush are byte-aligned and
    independent, so one is repeated."""
    size, segment = height * (1 + 3 * width), 1 << 20

    def deflated(n: int) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(bytes(n)) + c.flush(zlib.Z_FULL_FLUSH)

    full, rest = divmod(size, segment)
    raw = (
        deflated(segment) * full
        + (deflated(rest) if rest else b"")
        + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    )
    idat = b"\x78\xda" + raw + struct.pack(">I", ((size % 65521) << 16) | 1)  # adler32 of zeros
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def test_the_png_bomb_is_a_real_png() -> None:
    import cv2
    import numpy as np

    small = cv2.imdecode(np.frombuffer(png_bomb(300, 200), np.uint8), cv2.IMREAD_COLOR)
    assert small is not None and small.shape == (200, 300, 3) and small.max() == 0


def test_a_decompression_bomb_is_refused_from_its_header(live: Live) -> None:
    bomb = png_bomb(20000, 20000)

    async def probe() -> list[httpx.Response]:
        async with _aclient(live.url, "127.0.0.11", timeout=60, headers=_bearer(ADMIN)) as http:
            post = [
                http.post("/v1/classify", content=bomb, headers={"Content-Type": "image/png"})
                for _ in range(2)
            ]
            return list(await asyncio.gather(*post))

    with live.watch() as w:
        answers = asyncio.run(probe())
        time.sleep(3)  # the watcher's memory samples span the probe and after
    for answer in answers:
        assert answer.status_code == 413, answer.text
        assert "20000x20000" in answer.json()["error"]
    _assert_healthy(live, w)


# -- 4. live feeds ------------------------------------------------------------------------------


async def _until_feeds_are_free(http: httpx.AsyncClient) -> None:
    """Until no feed of an earlier probe holds a place (a closed feed's place is freed when the
    ingress sees its client gone, within a keep-alive): the last token can open all four."""
    deadline = time.monotonic() + 30
    while True:
        responses = []
        for _ in range(4):
            request = http.build_request("GET", "/v1/events", params={"token": READS[3]})
            responses.append(await http.send(request, stream=True))
        codes = [r.status_code for r in responses]
        for response in responses:
            await response.aclose()
        if codes == [200] * 4:
            break
        assert time.monotonic() < deadline, f"feeds still held after 30 s: {codes}"
        await asyncio.sleep(0.5)
    await asyncio.sleep(0)


def test_live_feeds_are_capped_and_share_one_reader(live: Live) -> None:
    async def open_feed(http: httpx.AsyncClient, token: str) -> tuple[int, Any]:
        request = http.build_request("GET", "/v1/events", params={"kinds": "result", "token": token})
        response = await http.send(request, stream=True)
        return response.status_code, response

    async def probe() -> tuple[list[int], list[int], int]:
        async with _aclient(live.url, "127.0.0.12", timeout=30) as http:
            await _until_feeds_are_free(http)
            # four tokens, four feeds each allowed, twelve in all: the last four get 503
            opened = [await open_feed(http, token) for token in READS for _ in range(4)]
            extra = [await open_feed(http, READS[0]) for _ in range(3)]  # past the per-token cap
            statuses = [s for s, _ in opened]
            events = 0
            for status, response in opened:
                if status == 200:  # every open feed gets results
                    lines = response.aiter_lines()
                    while not (await asyncio.wait_for(anext(lines), 10)).startswith("event: result"):
                        pass
                    events += 1
            for _, response in opened + extra:
                await response.aclose()
            return statuses, [s for s, _ in extra], events

    with live.watch() as w:
        statuses, extra, events = asyncio.run(probe())
    assert sorted(statuses) == [200] * 12 + [503] * 4, statuses
    assert extra == [429, 429, 429], extra  # this token's own cap is named first
    assert events == 12
    _assert_healthy(live, w)


def test_clients_that_stop_reading_their_feeds_do_not_grow_the_ingress(live: Live) -> None:
    async def probe() -> None:
        async with _aclient(live.url, "127.0.0.13", timeout=30) as http:
            await _until_feeds_are_free(http)
            stalled = []
            for token in READS[:3]:
                for _ in range(4):
                    request = http.build_request("GET", "/v1/console/events", params={"token": token})
                    response = await http.send(request, stream=True)
                    assert response.status_code == 200
                    stalled.append(response)  # never read from
            await asyncio.sleep(15)
            for response in stalled:
                await response.aclose()

    with live.watch() as w:
        asyncio.run(probe())
    _assert_healthy(live, w)


# -- 5. the smaller ones --------------------------------------------------------------------------


def test_forwarded_for_from_an_untrusted_peer_does_not_escape_the_rate_limit(live: Live) -> None:
    async def burst() -> list[int]:  # sent at once: faster than the bucket refills, however busy the host
        async with _aclient(live.url, "127.0.0.14", timeout=30, headers=_bearer(READS[1])) as http:
            forwarded = [{"X-Forwarded-For": f"10.9.{i // 250}.{i % 250}"} for i in range(150)]
            replies = await asyncio.gather(*(http.get("/v1/sources", headers=h) for h in forwarded))
            return [r.status_code for r in replies]

    started = time.monotonic()
    codes = asyncio.run(burst())
    elapsed_s = time.monotonic() - started
    allowed = BURST + RATE_PER_S * elapsed_s + 1  # what one client's bucket holds in that time
    assert codes.count(200) <= allowed, (codes.count(200), allowed)
    assert set(codes) == {200, 429}, set(codes)


def test_no_redirect_carries_a_token_to_another_host_and_head_answers(live: Live) -> None:
    with _client(live.url, "127.0.0.15", timeout=30) as http:
        slash = http.get("/v1/sources/", params={"token": ADMIN}, headers={"Host": "evil.example"})
        assert slash.status_code in (401, 404) and "location" not in slash.headers
        head = http.head("/v1/sources", headers=_bearer(READS[1]))
        assert head.status_code == 200 and head.content == b""
        assert http.head("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("uri", "status"),
    [
        ("/proc/self/exe", 403),
        ("/proc/1/cwd/clip.mp4", 403),  # a link this host will not look into: a refused check
        ("/tmp/" + "A" * 300, 403),
    ],
)
def test_malformed_or_refused_uris_get_a_4xx_that_reveals_nothing(live: Live, uri: str, status: int) -> None:
    with _client(live.url, "127.0.0.15", timeout=30, headers=_bearer(ADMIN)) as http:
        response = http.post("/v1/sources", json={"uri": uri})
    assert response.status_code == status, response.text
    assert "python" not in response.text.lower() and "resolves to" not in response.text


def test_dead_letter_ids_past_64_bits_are_a_400(live: Live) -> None:
    with _client(live.url, "127.0.0.15", timeout=30, headers=_bearer(ADMIN)) as http:
        for ref in ("0:99999999999999999999999-0", "18446744073709551616-0", "0:1-18446744073709551616"):
            response = http.get(f"/v1/dead-letters/{ref}")
            assert response.status_code == 400, (ref, response.text)
