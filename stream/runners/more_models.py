"""A running pipeline serving one more model: the runner's side of ``POST /v1/models/{name}``.

While a run plays, `ModelWatcher` renews the runner's heartbeat (``keys.model_runner``, so the API
knows somebody acts on a request) and reconciles the requests (``keys.model_requests``,
`stream.adapters.redis.model_requests`) with what runs: a model asked for and not served is
started through the runner's `AddModel` (the processes runner starts its stage processes, the Ray
runner deploys one more Serve application), in a task of its own so the heartbeat goes on; once it
runs, the run loop follows it (`on_serving`) and the request says ``serving``; a model that cannot
start says ``failed`` with the reason, and the models served already go on untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from stream.adapters.redis.model_requests import (
    FAILED,
    HEARTBEAT_EVERY_S,
    SERVING,
    STARTING,
    clear_requests,
    mark_watched,
    model_requests,
    set_request_state,
    unwatch,
)
from stream.core.keys import PipelineKeys
from stream.waiting import cancel_and_wait
from stream.zoo.repository import valid_name

__all__ = ["AddModel", "ModelWatcher"]

log = logging.getLogger("framestream.run")

AddModel = Callable[[str], Awaitable[None]]
"""Start serving one more model beside the running ones; returns once its stages run (raises
`stream.errors.FramestreamError`, or any error, when they cannot)."""


class ModelWatcher:
    """The heartbeat and the reconciling loop of one run (`start`, then `close`)."""

    def __init__(
        self,
        client: Any,
        keys: PipelineKeys,
        runner: str,
        add: AddModel | None,
        served: list[str],
        on_serving: Callable[[str], None],
    ) -> None:
        self.client, self.keys, self.runner = client, keys, runner or "framestream run"
        self.add, self.served, self.on_serving = add, served, on_serving
        self._task: asyncio.Task[None] | None = None
        self._adding: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Forget requests an earlier run left (a run starts with the models it was given), then
        take the watch; nothing when the runner cannot add a model (`add` None): the API then
        refuses requests."""
        if self.add is None:
            return
        await clear_requests(self.client, self.keys)
        await mark_watched(self.client, self.keys, self.runner)
        self._task = asyncio.create_task(self._watch(), name="model-watcher")

    async def close(self) -> None:
        """Stop watching: the API refuses requests from now on; a model still starting is left to
        the runner's own stop."""
        if self._task is None:
            return
        await cancel_and_wait([self._task, *self._adding.values()])
        self._task = None
        with contextlib.suppress(Exception):  # Redis away at the end: the heartbeat expires alone
            await unwatch(self.client, self.keys)
            await clear_requests(self.client, self.keys)

    async def _watch(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception as e:  # Redis away for a while: the run loop rides it out, so do we
                log.info("model requests: %r; trying again", e)
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    async def reconcile(self) -> None:
        await mark_watched(self.client, self.keys, self.runner)
        for name, request in (await model_requests(self.client, self.keys)).items():
            if request.state != STARTING or name in self._adding:
                continue
            if name in self.served:  # served from the start, or the "serving" write was lost
                await set_request_state(self.client, self.keys, name, SERVING)
            elif not valid_name(name):  # the API checks names; Redis is not trusted further
                await set_request_state(self.client, self.keys, name, FAILED, "not a model name")
            else:
                self._adding[name] = asyncio.create_task(self._start(name), name=f"add-model-{name}")

    async def _start(self, name: str) -> None:
        assert self.add is not None
        try:
            log.info("starting model %s beside %s", name, ", ".join(self.served))
            await self.add(name)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("model %s could not start: %s", name, e)
            with contextlib.suppress(Exception):
                await set_request_state(self.client, self.keys, name, FAILED, str(e) or type(e).__name__)
        else:
            self.on_serving(name)
            with contextlib.suppress(Exception):  # lost: the next reconcile writes it again
                await set_request_state(self.client, self.keys, name, SERVING)
        finally:
            self._adding.pop(name, None)
