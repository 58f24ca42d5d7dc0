"""Run a MULTI/EXEC pipeline, then Redis ``WAIT`` on the very connection that ran it.

``WAIT numreplicas timeout`` counts the replicas that acknowledged *this connection's* last
write. Sent on any other connection it answers at once with every replica (a connection that
wrote nothing has nothing to wait for), a false guarantee. redis-py cannot send it right by
itself: a pipeline gives its connection back to the pool as soon as EXEC returns, and a Redis
Cluster client sends a key-less WAIT to every master on connections of their own, summing
the answers. So `execute_waiting` keeps the pipeline's connection until WAIT has answered:

- plain client: it takes a connection from the pool and runs the pipeline's transaction on
  it (with the connection's retry policy, as ``Pipeline.execute`` does);
- cluster client (redis-py >= 6: transactions on one slot): it runs the pipeline's
  transaction strategy, which holds the connection to the slot's master (after following a
  MOVED or a failover) until ``reset``.

Both use redis-py internals (8.x); `supported` says whether the installed redis-py has them,
and the cluster and replica tests fail if they change.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline

__all__ = ["execute_waiting", "supported"]


def supported(pipe: Any) -> bool:
    """True when `pipe` (a transactional pipeline) has the internals `execute_waiting` uses."""
    if isinstance(pipe, ClusterPipeline):
        strategy = getattr(pipe, "_execution_strategy", None)
        return strategy is not None and hasattr(strategy, "_transaction_connection")
    return isinstance(pipe, Pipeline) and hasattr(pipe, "_execute_transaction")


async def execute_waiting(pipe: Any, replicas: int, timeout_ms: int) -> tuple[list[Any], int]:
    """Execute the transactional pipeline `pipe`, then ``WAIT replicas timeout_ms`` on the
    connection that ran it. Returns (the pipeline's replies, replicas that acknowledged).

    Fewer than `replicas` acknowledgements after `timeout_ms` is an answer, not an error.
    """
    if replicas < 1 or timeout_ms < 1:
        raise ValueError(f"replicas and timeout_ms must be >= 1, got {replicas} and {timeout_ms}")
    if isinstance(pipe, ClusterPipeline):
        return await _cluster(pipe, replicas, timeout_ms)
    return await _plain(pipe, replicas, timeout_ms)


async def _wait(conn: Any, replicas: int, timeout_ms: int) -> int:
    try:
        await conn.send_command("WAIT", replicas, timeout_ms)
        return int(await conn.read_response())
    except BaseException:
        # a reply left unread (cancelled, timed out) must not reach the connection's next user
        await conn.disconnect()
        raise


async def _cluster(pipe: ClusterPipeline, replicas: int, timeout_ms: int) -> tuple[list[Any], int]:
    strategy: Any = pipe._execution_strategy
    try:
        replies = await strategy.execute(True, True)
        return replies, await _wait(strategy._transaction_connection, replicas, timeout_ms)
    finally:
        await pipe.reset()  # gives the connection back


async def _plain(pipe: Pipeline, replicas: int, timeout_ms: int) -> tuple[list[Any], int]:
    pool = pipe.connection_pool
    conn: Any = await pool.get_connection()
    stack = pipe.command_stack

    async def failed(_error: BaseException) -> None:
        await conn.disconnect()

    try:
        replies = await conn.retry.call_with_retry(
            lambda: pipe._execute_transaction(conn, stack, True), failed
        )
        return replies, await _wait(conn, replicas, timeout_ms)
    finally:
        pipe.command_stack = []
        await pool.release(conn)
