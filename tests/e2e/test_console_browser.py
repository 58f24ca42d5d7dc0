"""The web console in a real browser (Debian's chromium, headless, driven by Playwright) against a
real `framestream run` on local Ray: the running source shows up with its smoothed label updating,
a thumbnail and a band of segments whose open one grows, the frames/s and p99 charts fill, a
source added through the form plays, removing it through the page stops it; a dead letter shows
up in the dead-letters panel and its retry button re-drives it; a sink shows its last error,
retries and dead letters while its destination fails, then what it delivered."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stream.adapters.media.video import write_demo_clip

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
]  # fmt: skip
MODEL = "mobilenet-v1-0.25-128"  # the synthetic stand-in: fast, on every machine; labels mean nothing
WAIT_MS = 120_000
ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "console"
"""Where the screenshot goes (out/ is git-ignored and outlives pytest's rotating temp dirs)."""


@dataclass
class Run:
    """A `framestream run` in the background and what its output said so far."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    console_url: str | None = None
    token: str | None = None
    """The admin token `framestream run` generated and printed in its console link."""
    redis_port: int | None = None

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if m := re.search(r"redis-server \(private\) at 127\.0\.0\.1:(\d+)", line):
                self.redis_port = int(m[1])
            if m := re.search(r"console: (http://127\.0\.0\.1:\d+/)\?token=(\S+)", line):
                self.console_url, self.token = m[1], m[2]
            if "Serve application running" in line and self.console_url:
                self.ready.set()
        self.ready.set()  # ended: the test sees why

    def tail(self) -> str:
        return "".join(self.lines[-60:])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: apt-get install chromium (make setup installs it as root)")
    pytest.importorskip(
        "playwright.sync_api", reason="playwright is in the test extras: pip install -e .[test]"
    )
    tmp = tmp_path_factory.mktemp("console-run")
    clip = write_demo_clip(tmp / "street.mp4", frames=150, size=(320, 240))
    env = {**os.environ, "CI": "true", "PYTHONUNBUFFERED": "1", "COLUMNS": "200",
           "FRAMESTREAM_MODELS__CACHE_DIR": str(tmp / "cache"),
           "FRAMESTREAM_MODELS__REPOSITORY": str(tmp / "repository")}  # fmt: skip
    env = {k: v for k, v in env.items() if not k.startswith("FRAMESTREAM_REDIS")}
    cmd = [sys.executable, "-m", "stream.cli", "run", "--model", MODEL, "--source", str(clip),
           "--loop", "--timeout", "900"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    running = Run(proc)
    reader = threading.Thread(target=running.read, daemon=True)
    reader.start()
    try:
        assert running.ready.wait(400), f"the run did not start within 400 s:\n{running.tail()}"
        assert proc.poll() is None and running.console_url, f"the run ended:\n{running.tail()}"
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: stop the sources, drain, shut Ray down
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        reader.join(timeout=10)


def _frames(page, source: str) -> float:
    text = page.locator(f'tr[data-source="{source}"] td[data-field="frames"]').text_content()
    return float(text) if text and text.strip().isdigit() else -1.0


_FRAMES_ABOVE = """([source, n]) => {
  const td = document.querySelector(`tr[data-source="${source}"] td[data-field="frames"]`);
  return td !== null && Number(td.textContent) > n;
}"""
_LABEL_SEQ_ABOVE = """([source, n]) => {
  const td = document.querySelector(`tr[data-source="${source}"] td[data-field="label"]`);
  return td !== null && td.textContent !== "\u2013" && Number(td.dataset.seq) > n;
}"""
_THUMBNAIL_SHOWN = """(source) => {
  const img = document.querySelector(`tr[data-source="${source}"] img.thumb`);
  return img !== null && img.complete && img.naturalWidth > 0 && !img.classList.contains("none");
}"""
_OPEN_SEGMENT_AFTER = """([source, n]) => {
  const rect = document.querySelector(`.band-row[data-source="${source}"] rect.segment[data-open="true"]`);
  return rect !== null && Number(rect.dataset.lastSeq) > n && Number(rect.getAttribute("width")) > 0;
}"""
_CHART_POINTS = """([chart, n]) => Number(document.querySelector(`#${chart} polyline`).dataset.points) >= n"""
_STAGE_RUNS = """(stage) => {
  const row = document.querySelector(`tr[data-stage="${stage}"]`);
  if (row === null) return false;
  const cell = (f) => row.querySelector(`td[data-field="${f}"]`).textContent;
  return Number(cell("replicas")) >= 1 && Number(cell("fps")) > 0;
}"""


@pytest.mark.timeout(900)  # starting Ray and the application takes minutes on a busy 2-core machine
def test_the_console_shows_the_run_adds_a_source_and_removes_it(run: Run, tmp_path: Path) -> None:
    import redis
    from playwright.sync_api import expect, sync_playwright

    added = tmp_path / "yard.mp4"
    write_demo_clip(added, frames=120, size=(320, 240))
    assert run.redis_port is not None
    store = redis.Redis(port=run.redis_port)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / "console.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(WAIT_MS)
            requests: list[tuple[str, str, str | None]] = []
            page.on("request", lambda r: requests.append((r.method, r.url, r.headers.get("authorization"))))
            page.goto(f"{run.console_url}?token={run.token}")  # the printed link, as a person clicks it
            expect(page.locator("#connection")).to_have_text("live")

            # the run's own source: playing, with a smoothed label that keeps being updated
            page.wait_for_function(_LABEL_SEQ_ABOVE, arg=["street", -1])
            seq = int(
                page.locator('tr[data-source="street"] td[data-field="label"]').get_attribute("data-seq")
            )
            page.wait_for_function(_LABEL_SEQ_ABOVE, arg=["street", seq])
            page.wait_for_function(_THUMBNAIL_SHOWN, arg="street")
            bearer = {"Authorization": f"Bearer {run.token}"}
            shown = page.request.get(f"{run.console_url}v1/sources/street/thumbnail", headers=bearer)
            assert shown.status == 200 and shown.headers["content-type"] == "image/jpeg"
            anonymous = page.request.get(f"{run.console_url}v1/sources/street/thumbnail")
            assert anonymous.status == 401, anonymous.status
            missing = page.request.get(f"{run.console_url}v1/sources/nowhere/thumbnail", headers=bearer)
            assert missing.status == 404 and "nowhere" in missing.json()["error"]
            page.wait_for_function(_STAGE_RUNS, arg="infer")
            expect(page.locator('#timeline li[data-source="street"]').first).to_be_visible()

            # its band of segments: the open one grows as frames come, coloured by its label
            page.wait_for_function(_OPEN_SEGMENT_AFTER, arg=["street", -1])
            band = page.locator('.band-row[data-source="street"] rect.segment[data-open="true"]')
            last = int(band.get_attribute("data-last-seq") or -1)
            page.wait_for_function(_OPEN_SEGMENT_AFTER, arg=["street", last])
            label = band.get_attribute("data-label")
            assert label and band.get_attribute("fill"), label
            assert label in page.locator("#segment-legend").text_content()
            page.wait_for_function(_CHART_POINTS, arg=["fps-chart", 2])
            page.wait_for_function(_CHART_POINTS, arg=["p99-chart", 2])
            assert page.locator("#p99-now").text_content().endswith(" ms")

            # a source added through the form starts playing
            page.fill('#add-source input[name="uri"]', str(added))
            page.fill('#add-source input[name="id"]', "yard")
            page.check('#add-source input[name="loop"]')
            page.click('#add-source button[type="submit"]')
            page.wait_for_function(_FRAMES_ABOVE, arg=["yard", 0])
            page.wait_for_function(_FRAMES_ABOVE, arg=["yard", _frames(page, "yard")])
            page.wait_for_function(_THUMBNAIL_SHOWN, arg="yard")
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"console screenshot: {screenshot}")

            # removing it through the page stops it: its row goes, ingest ends it (end-of-stream)
            page.click('tr[data-source="yard"] button.remove')
            expect(page.locator('tr[data-source="yard"]')).to_have_count(0)
            page.wait_for_function(
                "() => document.querySelector('#message').textContent.includes('yard removed')"
            )
            expect(page.locator('tr[data-source="street"]')).to_have_count(1)
        finally:
            browser.close()
    with contextlib.closing(store):
        _wait_until_done(store, "yard")
    feeds = [url for method, url, _ in requests if "v1/console/events" in url]
    assert feeds and all(f"token={run.token}" in url for url in feeds), feeds
    segment_reads = [(url, auth) for method, url, auth in requests if "v1/sources/street/segments" in url]
    assert segment_reads and all(auth == f"Bearer {run.token}" for _, auth in segment_reads), segment_reads
    deletes = [(url, auth) for method, url, auth in requests if method == "DELETE"]
    assert deletes == [(f"{run.console_url}v1/sources/yard", f"Bearer {run.token}")], deletes


_MODEL_SERVES = """(model) => {
  const row = document.querySelector(`#models tr[data-model="${model}"]`);
  if (row === null) return false;
  const cell = (f) => row.querySelector(`td[data-field="${f}"]`).textContent;
  return cell("active") === "1" && Number(cell("fps")) > 0;
}"""


@pytest.mark.timeout(900)
def test_the_console_lists_the_served_model_and_says_why_a_change_is_refused(run: Run) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{run.console_url}?token={run.token}")
            # the model the run serves: its one version active, its classes, results flowing
            page.wait_for_function(_MODEL_SERVES, arg=MODEL)
            row = page.locator(f'#models tr[data-model="{MODEL}"]')
            expect(row.locator('td[data-field="versions"]')).to_have_text("1")
            expect(row.locator('td[data-field="shadow"]')).to_have_text("\u2013")
            expect(row.locator('td[data-field="classes"]')).to_have_text("1000")
            # a built-in model has no other version: the page says so, and nothing changes
            row.locator("button.rollback").click()
            expect(page.locator("#message")).to_contain_text("is a built-in model")
            expect(page.locator("#message")).to_have_attribute("data-kind", "error")
            expect(row.locator('td[data-field="active"]')).to_have_text("1")
        finally:
            browser.close()


GARBAGE = b"\x80\x04garbage that is no framestream message" * 3
_DEAD_LETTER_ROWS = """() => [...document.querySelectorAll('#dead-letters tbody tr')].map((row) => {
  const cell = (f) => row.querySelector(`td[data-field="${f}"]`).textContent;
  return {id: row.dataset.id, stage: cell("stage"), reason: cell("reason"), source: cell("source")};
})"""
_DEAD_LETTER_SHOWN = """(n) => document.querySelectorAll('#dead-letters tbody tr').length >= n"""


@pytest.mark.timeout(900)
def test_the_console_lists_a_dead_letter_shows_it_and_retries_it(run: Run) -> None:
    import redis
    from playwright.sync_api import expect, sync_playwright

    from stream.core.keys import FIELD, PipelineKeys

    assert run.redis_port is not None
    store = redis.Redis(port=run.redis_port)
    with sync_playwright() as pw, contextlib.closing(store):
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(WAIT_MS)
            posts: list[tuple[str, str | None]] = []
            page.on(
                "request",
                lambda r: r.method == "POST" and posts.append((r.url, r.headers.get("authorization"))),
            )
            page.goto(f"{run.console_url}?token={run.token}")
            expect(page.locator("#connection")).to_have_text("live")
            page.wait_for_selector("#dead-letters[data-total]", state="attached")  # the first listing
            before = {row["id"] for row in page.evaluate(_DEAD_LETTER_ROWS)}

            # bytes that are no frame, on the run's frames stream: preprocess dead-letters them
            store.xadd(PipelineKeys().frames, {FIELD: GARBAGE})
            page.wait_for_function(_DEAD_LETTER_SHOWN, arg=len(before) + 1)
            (letter,) = [row for row in page.evaluate(_DEAD_LETTER_ROWS) if row["id"] not in before]
            assert letter["stage"] == "preprocess" and letter["reason"].startswith("undecodable"), letter
            expect(page.locator("#no-dead-letters")).to_be_hidden()
            row = page.locator(f'#dead-letters tr[data-id="{letter["id"]}"]')

            row.locator("button.show").click()  # its detail: the payload could not be decoded
            detail = page.locator("#dead-letter-detail")
            expect(detail).to_be_visible()
            expect(detail).to_contain_text(f'"bytes": {len(GARBAGE)}')
            expect(detail).to_contain_text('"undecodable"')

            # retried: gone from the panel; the garbage is dead-lettered again, with its reason
            row.locator("button.retry").click()
            expect(page.locator("#message")).to_contain_text(f"dead letter {letter['id']} retried")
            expect(row).to_have_count(0)
            expect(detail).to_be_hidden()
            page.wait_for_function(_DEAD_LETTER_SHOWN, arg=len(before) + 1)
            again = [r for r in page.evaluate(_DEAD_LETTER_ROWS) if r["id"] not in before]
            assert len(again) == 1 and again[0]["id"] != letter["id"], again
            assert again[0]["reason"].startswith("undecodable"), again
        finally:
            browser.close()
    retry_url = f"{run.console_url}v1/dead-letters/{letter['id'].replace(':', '%3A')}/retry"
    assert posts == [(retry_url, f"Bearer {run.token}")], posts


def _wait_until_done(store, source: str, timeout_s: float = 60.0) -> None:
    """Until ingest has marked `source` done (it published the end-of-stream of a removed source)."""
    import json
    import time

    from stream.core.keys import PipelineKeys

    key = PipelineKeys().for_source(source).source_state
    deadline = time.monotonic() + timeout_s
    while True:
        raw = store.hget(key, source)
        if raw and json.loads(raw).get("done"):
            return
        assert time.monotonic() < deadline, (
            f"{source} still playing {timeout_s:.0f} s after its removal: {raw}"
        )
        time.sleep(0.1)


_SINK_CELL = """([sink, field]) => {
  const td = document.querySelector(`#sinks tr[data-sink="${sink}"] td[data-field="${field}"]`);
  return td === null ? null : td.textContent;
}"""
_SINK_NUMBER_AT_LEAST = """([sink, field, n]) => {
  const td = document.querySelector(`#sinks tr[data-sink="${sink}"] td[data-field="${field}"]`);
  return td !== null && Number(td.textContent) >= n;
}"""


@pytest.mark.timeout(900)
def test_the_console_shows_a_sinks_errors_retries_dead_letters_and_deliveries(run: Run) -> None:
    """A sink added to the run's registry, delivered by a `framestream stage sinks` process of its
    own, to a webhook on 127.0.0.1 that first answers 500, then 200."""
    import asyncio

    import redis
    import redis.asyncio as aioredis
    from playwright.sync_api import expect, sync_playwright

    from stream.core.keys import PipelineKeys
    from stream.settings import SinkSettings
    from stream.sinks.registered import add_sink
    from tests.faults.webhook_receiver import WebhookReceiver

    assert run.redis_port is not None
    secret = "console-sink-secret-0123456789"
    receiver = WebhookReceiver(secret=secret, mode="error").up()
    sink = SinkSettings(name="console-hook", kind="webhook", url=receiver.url, secret=secret,
                        max_attempts=2, backoff_initial_s=0.05, backoff_max_s=0.2)  # fmt: skip

    async def register() -> None:
        client = aioredis.Redis(port=run.redis_port)
        try:
            assert await add_sink(client, PipelineKeys(), sink)
        finally:
            await client.aclose()

    asyncio.run(register())
    env = {**os.environ, "FRAMESTREAM_REDIS__URL": f"redis://127.0.0.1:{run.redis_port}/0"}
    delivery = subprocess.Popen([sys.executable, "-m", "stream.cli", "stage", "sinks"], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
    store = redis.Redis(port=run.redis_port)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.set_default_timeout(WAIT_MS)
                page.goto(f"{run.console_url}?token={run.token}")
                expect(page.locator("#connection")).to_have_text("live")
                row = page.locator(f'#sinks tr[data-sink="{sink.name}"]')
                expect(row).to_have_count(1)
                expect(page.locator("#no-sinks")).to_be_hidden()
                expect(row.locator('td[data-field="kind"]')).to_have_text("webhook")
                # the looping clip's results reach it and fail: retried, then dead letters
                expect(row.locator('td[data-field="last_error"]')).to_contain_text("HTTP 500")
                page.wait_for_function(_SINK_NUMBER_AT_LEAST, arg=[sink.name, "retries", 1])
                page.wait_for_function(_SINK_NUMBER_AT_LEAST, arg=[sink.name, "dead_letters", 1])
                assert page.evaluate(_SINK_CELL, [sink.name, "delivered"]) == "0"
                receiver.mode = "ok"
                page.wait_for_function(_SINK_NUMBER_AT_LEAST, arg=[sink.name, "delivered", 1])
                assert receiver.bad_signatures == 0 and receiver.items
                shown = int(page.evaluate(_SINK_CELL, [sink.name, "delivered"]))
                assert shown <= len(receiver.items)  # delivered = confirmed by the receiver
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "console-sinks.png"), full_page=True)
            finally:
                browser.close()
    finally:
        delivery.send_signal(signal.SIGINT)
        try:
            delivery.wait(timeout=60)
        except subprocess.TimeoutExpired:
            delivery.kill()
            delivery.wait(timeout=30)
        store.hdel(PipelineKeys().sink_registry, sink.name)  # the other tests' run goes on without it
        store.close()
        receiver.down()
