"""The one factory for asyncio Redis clients: a plain server or a Redis Cluster.

`connect_settings` opens the client the settings' ``redis`` section names (with its password,
username and cluster choice): every command and runner that talks to the pipeline's Redis opens
it there. `connect` checks the server with PING (a wrong password fails here, clearly), then asks it
``INFO cluster``: on a node with ``cluster_enabled:1`` it returns redis-py's asyncio
`RedisCluster`, which finds every other node, routes each command to the node serving its key's
slot and follows MOVED/ASK redirections. ``redis.cluster`` forces the choice (true: cluster
client without asking, e.g. where INFO is not allowed; false: a plain client).

A cluster client is returned typed as `redis.asyncio.Redis`: it offers the same command methods
framestream uses (single-key commands, EVAL with keys, and MULTI/EXEC pipelines whose keys share
one slot, which redis-py 8.x sends as one MULTI/EXEC to that slot's node).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AuthenticationError, RedisClusterException, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from stream.errors import TransportError

if TYPE_CHECKING:
    from stream.settings import RedisSettings

__all__ = ["connect", "connect_settings", "is_cluster", "redact", "refresh_cluster_view"]


async def connect_settings(
    redis: RedisSettings, url: str | None = None, *, timeout_s: float = 5.0
) -> aioredis.Redis:
    """Open a client for the Redis `redis` (the settings' ``redis`` section) names, or for `url`
    in its place (a ``--redis`` option), with its password, username and ``cluster`` choice."""
    return await connect(
        url or redis.url,
        password=redis.password_value(),
        username=redis.username,
        cluster=redis.cluster,
        timeout_s=timeout_s,
    )


async def connect(
    url: str,
    *,
    password: str | None = None,
    username: str | None = None,
    timeout_s: float = 5.0,
    cluster: bool | None = None,
) -> aioredis.Redis:
    """Open a client for `url` (any node of a cluster will do) and check it with PING.

    `cluster`: None asks the server (``INFO cluster``), True/False force a cluster/plain client.
    """
    kwargs: dict[str, Any] = {"socket_connect_timeout": timeout_s, "health_check_interval": 30}
    if password is not None:
        kwargs["password"] = password
    if username is not None:
        kwargs["username"] = username
    if cluster is not True:
        client = aioredis.Redis.from_url(url, **kwargs)
        await _check(client, url)
        if cluster is False or not await _cluster_enabled(client):
            return client
        await client.aclose()
    try:
        node = RedisCluster.from_url(url, **kwargs)
    except (RedisClusterException, ValueError) as e:
        raise TransportError(f"cannot open a Redis Cluster client for {redact(url)}: {e}") from e
    try:
        await _check(cast(aioredis.Redis, node), url)
    except TransportError as e:
        if "cluster mode is not enabled" in str(e).lower():
            raise TransportError(
                f"Redis at {redact(url)} is not in cluster mode, but redis.cluster is true; "
                "unset FRAMESTREAM_REDIS__CLUSTER (framestream then asks the server) or name a cluster node"
            ) from e
        raise
    return cast(aioredis.Redis, node)


def is_cluster(client: Any) -> bool:
    """True for a client `connect` opened on a Redis Cluster."""
    return isinstance(client, RedisCluster)


async def refresh_cluster_view(client: Any) -> None:
    """On a cluster client, after an outage: load the current slot table and make a live master
    the node the client asks its own questions (nothing on a plain client).

    redis-py 8.1 asks its default node (the one the URL named) which keys an XREADGROUP touches
    (``COMMAND GETKEYS``) and keeps that node after it died and its replica took over: every
    XREADGROUP then failed to connect, for good. Measured with `LocalCluster` and ``kill -9``.
    """
    if not is_cluster(client):
        return
    await client.nodes_manager.initialize()
    primaries = client.get_primaries()
    if primaries:
        node = primaries[0]
        client.set_default_node(node)
        client.commands_parser.node = node


async def _cluster_enabled(client: aioredis.Redis) -> bool:
    try:
        info = await client.info("cluster")
    except ResponseError:  # INFO not allowed for this user: plain, unless redis.cluster says so
        return False
    return str(info.get("cluster_enabled", "0")) == "1"


async def _check(client: aioredis.Redis, url: str) -> None:
    try:
        await client.ping()
    except AuthenticationError as e:
        await client.aclose()
        raise TransportError(
            f"Redis at {redact(url)} refused the credentials: {e}; "
            "check FRAMESTREAM_REDIS__PASSWORD or the URL"
        ) from e
    except ResponseError as e:
        await client.aclose()
        if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
            raise TransportError(f"Redis at {redact(url)} needs a password: {e}") from e
        raise TransportError(f"Redis at {redact(url)} answered PING with an error: {e}") from e
    except (RedisConnectionError, RedisClusterException, OSError, TimeoutError) as e:
        await client.aclose()
        raise TransportError(f"cannot reach Redis at {redact(url)}: {e}") from e


def redact(url: str) -> str:
    """`url` without its credentials, for messages and logs."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("redis", url)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
