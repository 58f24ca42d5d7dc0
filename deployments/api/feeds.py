"""The live feeds of one ingress replica (``GET /v1/events``, ``GET /v1/console/events``): one
reader of the results and events streams, its entries fanned out in memory to every open feed.

A feed is a `Subscription`: a bounded queue (``api.feed_queue`` events) that the reader fills
and the feed's response drains. A client that falls that far behind is dropped with an ``error``
event saying so (an EventSource reconnects, with ``Last-Event-ID`` where the feed gives ids),
never allowed to hold the reader up or grow the replica's memory. At most ``api.max_feeds``
feeds are open at once (503 past it) and ``api.max_feeds_per_client`` for one token, or one
client address where no token is configured (429). A feed also ends after ``api.feed_max_s``:
the client reconnects, and what a proxy in between buffered for it is bounded by that time.

So the feeds hold one Redis connection per partition (the reader's blocking read of that
partition's streams), whatever the number of clients; the reader stops when the last feed closes.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from deployments.api.http_errors import ApiError
from stream.adapters.redis.entries import text
from stream.core.keys import PipelineKeys, is_stream_id
from stream.readers.queries import READ_COUNT, ResultQueries, event_kind
from stream.readers.results import decode_fields

__all__ = ["FeedHub", "Subscription", "event_text", "feed_response", "parse_last_event_id"]

log = logging.getLogger("framestream.ingress")

_BLOCK_MS = 1_000
_CATCH_UP_PAGE = 200
_CAUGHT_UP_PAUSE_S = 0.05


def parse_last_event_id(value: str | None, streams: list[str]) -> dict[str, str] | None:
    """The ids a ``Last-Event-ID`` names, one per stream of `streams` (ids as `ResultQueries.follow`
    gives them); None when there is none or it does not fit (the feed then starts at the end)."""
    parts = (value or "").split(",")
    if len(parts) != len(streams) or not all(is_stream_id(p) for p in parts):
        return None
    return dict(zip(streams, parts, strict=True))


@dataclass(eq=False)
class Subscription:
    """One open feed: which entries it wants, where it is, and what the reader left for it."""

    client: str
    parts: list[PipelineKeys]
    source: str | None
    kinds: set[str] | None
    queue: asyncio.Queue[tuple[str, dict[str, Any]]]
    ids: dict[str, str] = field(default_factory=dict)
    dropped: str | None = None
    """Why the feed was ended by the ingress (it fell behind, Redis went away), None while open."""

    @property
    def streams(self) -> list[str]:
        return [s for k in self.parts for s in (k.results, k.events)]

    def event_id(self) -> str:
        return ",".join(self.ids[s] for s in self.streams)

    def wants(self, meta: dict[str, Any]) -> bool:
        if self.source is not None and meta.get("source") != self.source:
            return False
        return self.kinds is None or event_kind(meta) in self.kinds

    def offer(self, stream: str, entry_id: str, meta: dict[str, Any] | None) -> bool:
        """Take one entry the reader read (False: the feed is full, and was dropped)."""
        if stream not in self.ids or self.dropped is not None:
            return True
        self.ids[stream] = entry_id
        if meta is None or not self.wants(meta):
            return True
        try:
            self.queue.put_nowait((self.event_id(), meta))
        except asyncio.QueueFull:
            self.dropped = (
                f"this client fell {self.queue.maxsize} events behind and was dropped; reconnect "
                "(with Last-Event-ID) to go on"
            )
            return False
        return True

    async def entries(
        self, disconnected: Callable[[], Awaitable[bool]], keep_alive_s: float, until_s: float
    ) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
        """(event id, meta) of every entry for this feed; (id, None) after `keep_alive_s` without
        one. Ends when the client goes away or at the loop time `until_s`; `dropped` then says why
        the ingress ended it (None: the client left, or the feed's time was up)."""
        loop = asyncio.get_running_loop()
        while self.dropped is None and not await disconnected() and loop.time() < until_s:
            if not self.queue.empty():
                yield self.queue.get_nowait()
                continue
            item: tuple[str, dict[str, Any] | None]
            try:
                async with asyncio.timeout(keep_alive_s):
                    item = await self.queue.get()
            except TimeoutError:
                item = self.event_id(), None
            yield item


class FeedHub:
    """The reader and the open feeds of one ingress replica (see the module docstring)."""

    def __init__(
        self, queries: ResultQueries, *, max_feeds: int, max_feeds_per_client: int, queue_size: int
    ) -> None:
        self.queries = queries
        self.max_feeds = max_feeds
        self.max_feeds_per_client = max_feeds_per_client
        self.queue_size = queue_size
        self.feeds: set[Subscription] = set()
        self.ids: dict[str, str] = {}
        self._per_client: Counter[str] = Counter()
        self._reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    @property
    def reading(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def subscribe(self, client: str, *, source: str | None, kinds: set[str] | None) -> Subscription:
        """A new feed from the streams' ends now; ApiError 503/429 past the caps."""
        if self._per_client[client] >= self.max_feeds_per_client:
            raise ApiError(
                429,
                f"this client has {self._per_client[client]} live feeds open, the most one may "
                "(api.max_feeds_per_client); close one first",
                {"Retry-After": "5"},
            )
        if len(self.feeds) >= self.max_feeds:
            raise ApiError(
                503,
                f"{len(self.feeds)} live feeds are open, the most this ingress serves (api.max_feeds); "
                "try again later",
                {"Retry-After": "5"},
            )
        keys = self.queries.keys
        parts = [keys.for_source(source)] if source is not None else keys.all_partitions
        # room for one read of each stream on top: the reader hands a read out all at once, so a
        # client that keeps up is never dropped for a burst, only for falling behind
        room = self.queue_size + 2 * len(parts) * READ_COUNT
        feed = Subscription(client, parts, source, kinds, asyncio.Queue(room))
        self._per_client[client] += 1
        self.feeds.add(feed)
        try:
            async with self._starting:
                if not self.reading:
                    self.ids = await self.queries.resolve_ends(keys.all_partitions)
                    self._reader = asyncio.create_task(self._read(), name="feed-reader")
        except BaseException:
            self.close(feed)
            raise
        feed.ids = {s: self.ids[s] for s in feed.streams}  # with no await since the reader's last hand-out
        return feed

    async def follow(
        self,
        client: str,
        last_event_id: str | None,
        *,
        source: str | None,
        kinds: set[str] | None,
        disconnected: Callable[[], Awaitable[bool]],
        max_s: float,
        keep_alive_s: float = 1.0,
    ) -> tuple[Subscription, AsyncIterator[str]]:
        """A new feed and its SSE text (``GET /v1/events``): after `last_event_id` when it names
        ids of the streams followed (what the client missed, as far as the streams still hold it),
        else from now; for `max_s` at most. ApiError 503/429 past the caps."""
        feed = await self.subscribe(client, source=source, kinds=kinds)
        since = parse_last_event_id(last_event_id, feed.streams)
        until_s = asyncio.get_running_loop().time() + max_s
        return feed, event_text(self, feed, since, disconnected, keep_alive_s=keep_alive_s, until_s=until_s)

    def close(self, feed: Subscription) -> None:
        if feed in self.feeds:
            self.feeds.discard(feed)
            self._per_client[feed.client] -= 1
            if self._per_client[feed.client] <= 0:
                del self._per_client[feed.client]

    async def catch_up(
        self, feed: Subscription, since: dict[str, str]
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """What `feed` wants of the entries after `since` up to where it starts (a reconnecting
        client's missed events, as far as the streams still hold them), with their event ids."""
        ids = dict(since)
        upto = dict(feed.ids)
        for stream in feed.streams:
            while True:
                page = await self.queries.client.xrange(stream, min=f"({ids[stream]}", max=upto[stream],
                                                        count=_CATCH_UP_PAGE)  # fmt: skip
                for raw_id, fields in page:
                    ids[stream] = text(raw_id)
                    meta = decode_fields(fields)
                    if meta is not None and feed.wants(meta):
                        yield ",".join(ids[s] for s in feed.streams), meta
                if len(page) < _CATCH_UP_PAGE:
                    break
            ids[stream] = upto[stream]

    async def _read(self) -> None:
        """One blocking read per partition (a partition's streams share a slot; partitions may be
        on different shards), each handing its entries out as they come."""
        await asyncio.gather(*(self._read_partition(k) for k in self.queries.keys.all_partitions))

    async def _read_partition(self, keys: PipelineKeys) -> None:
        while self.feeds:
            try:
                replies = await self.queries.read_after([keys], self.ids, _BLOCK_MS)
            except (RedisError, OSError) as e:
                for feed in list(self.feeds):
                    feed.dropped = f"redis unavailable: {e}"
                    self.close(feed)
                log.warning("live feeds: %s; every feed was ended", e)
                return
            for raw_stream, entries in replies:
                stream = text(raw_stream)
                for raw_id, fields in entries:
                    entry_id = text(raw_id)
                    self.ids[stream] = entry_id
                    meta = decode_fields(fields)
                    for feed in list(self.feeds):
                        if not feed.offer(stream, entry_id, meta):
                            log.warning("live feeds: dropped a client that fell behind (%s)", feed.client)
                            self.close(feed)
            await asyncio.sleep(0)  # the feeds drain what was handed out before the next read
            if replies and all(len(entries) < READ_COUNT for _, entries in replies):
                await asyncio.sleep(_CAUGHT_UP_PAUSE_S)  # caught up: read batches, not a trickle


def feed_response(hub: FeedHub, feed: Subscription, text: AsyncIterator[str]) -> Any:
    """The SSE response of `feed`, whose body is `text`; the feed is closed when the body ends,
    and also when a response that never started is dropped (its client left first)."""
    from fastapi.responses import StreamingResponse

    async def body() -> AsyncIterator[str]:
        try:
            async for chunk in text:
                yield chunk
        finally:
            hub.close(feed)

    stream = body()
    weakref.finalize(stream, hub.close, feed)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def event_text(
    hub: FeedHub,
    feed: Subscription,
    since: dict[str, str] | None,
    disconnected: Callable[[], Awaitable[bool]],
    *,
    keep_alive_s: float,
    until_s: float,
) -> AsyncIterator[str]:
    """``GET /v1/events``'s SSE text: what a reconnecting client missed (`since`), then the live
    entries, keep-alive comments while there are none, and an ``error`` event when dropped."""
    from stream.readers.queries import sse_event

    yield ": framestream events\n\n"
    try:
        if since is not None:
            async for event_id, meta in hub.catch_up(feed, since):
                yield sse_event(event_kind(meta), event_id, meta)
        async for event_id, found in feed.entries(disconnected, keep_alive_s, until_s):
            yield ": keep-alive\n\n" if found is None else sse_event(event_kind(found), event_id, found)
    except (RedisError, OSError) as e:
        feed.dropped = f"redis unavailable: {e}"
    if feed.dropped is not None:
        yield sse_event("error", "", {"error": feed.dropped})
