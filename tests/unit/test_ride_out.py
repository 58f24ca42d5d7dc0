"""`ride_out` / `RedisOutage`: the run loop of `framestream run` waits for Redis instead of ending the run.

Pure retry logic, with a scripted stand-in for the Redis call (the real outage is in
tests/faults/test_drive_redis_restart.py).
"""

from __future__ import annotations

import pytest
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream.adapters.redis.outage import RedisOutage, ride_out
from stream.errors import FramestreamError


class Scripted:
    """Raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def fast(max_outage_s: float = 30.0) -> RedisOutage:
    return RedisOutage(max_outage_s, first_wait_s=0.001, max_wait_s=0.004)


async def test_every_kind_of_outage_is_retried_until_redis_answers() -> None:
    call = Scripted(
        RedisConnectionError("Connection closed by server."),
        RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        BusyLoadingError("Redis is loading the dataset in memory"),
        RedisTimeoutError("Timeout reading from 127.0.0.1:6379"),
        RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed"),
    )
    outage = fast()
    assert await ride_out(call, outage) == "ok"
    assert call.calls == 6
    assert (outage.outages, outage.since) == (1, None)  # one outage, over


async def test_other_errors_are_not_swallowed() -> None:
    for error in (ResponseError("NOGROUP No such key"), RuntimeError("something else"), ValueError("bad")):
        call = Scripted(error)
        with pytest.raises(type(error)):
            await ride_out(call, fast())
        assert call.calls == 1


async def test_an_outage_longer_than_the_limit_ends_the_run_with_a_clear_error() -> None:
    outage = RedisOutage(0.05, first_wait_s=0.01, max_wait_s=0.01)
    call = Scripted(*[RedisConnectionError("Connection refused")] * 1000)
    with pytest.raises(FramestreamError, match=r"Redis unavailable for more than 0 s"):
        await ride_out(call, outage)
    assert 3 <= call.calls < 1000


async def test_waits_double_up_to_the_cap_and_start_again_after_a_recovery() -> None:
    outage = RedisOutage(30.0, first_wait_s=0.001, max_wait_s=0.004)
    error = RedisConnectionError("down")
    waits = []
    for _ in range(4):
        waits.append(outage._wait_s)
        await outage.wait(error)
    assert waits == [0.001, 0.002, 0.004, 0.004]
    assert outage.recovered() and not outage.recovered()
    assert outage._wait_s == 0.001
    await ride_out(Scripted(error), outage)
    assert outage.outages == 2
