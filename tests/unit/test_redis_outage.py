from redis.exceptions import BusyLoadingError, ConnectionError, ResponseError, TimeoutError

from stream.adapters.redis.outage import is_redis_outage


def test_outage_errors_are_told_apart_from_bugs():
    assert is_redis_outage(ConnectionError("Connection refused"))
    assert is_redis_outage(BusyLoadingError("Redis is loading the dataset in memory"))
    assert is_redis_outage(TimeoutError("Timeout reading from socket"))
    # uvloop (Ray Serve's loop) reports a write on a connection Redis closed this way
    closed = "unable to perform operation on <TCPTransport closed=True>; the handler is closed"
    assert is_redis_outage(RuntimeError(closed))
    assert not is_redis_outage(RuntimeError("some bug"))
    assert not is_redis_outage(ResponseError("WRONGTYPE Operation against a key"))
    assert not is_redis_outage(ValueError("bad frame"))
