"""What a shadow's consumer group does to the rest of the pipeline's bookkeeping, on a real
redis-server: the tensors it has not read yet are never trimmed, but its lag never pauses sources
(ingest's backlog leaves it out); and one too far behind skips ahead."""

from __future__ import annotations

from stream.adapters.redis.streams import StreamTransport
from stream.core.codec import Message, encode_message
from stream.core.keys import FIELD, PipelineKeys
from stream.settings import Settings
from stream.stages.infer.shadow import MAX_BEHIND, ShadowInfer
from stream.stages.infer.stage import open_stage_engine
from stream.stages.ingest.pipeline_backlog import PipelineBacklog
from stream.zoo.repository import ModelRepository
from tests.model_versions import add_version

MODEL = "cat"


async def test_a_lagging_shadow_holds_its_tensors_from_trimming_but_not_the_sources(
    redis_client, tmp_path
) -> None:
    keys = PipelineKeys()
    transport = StreamTransport(redis_client, keys, stage="test")
    await redis_client.xgroup_create(keys.frames, f"preprocess:{MODEL}", id="$", mkstream=True)
    tensors = keys.tensors(MODEL)
    await redis_client.xgroup_create(tensors, f"infer:{MODEL}", id="$", mkstream=True)
    await redis_client.xgroup_create(tensors, f"shadow:{MODEL}", id="$", mkstream=True)
    ids = [
        await redis_client.xadd(tensors, {FIELD: encode_message(Message(meta={"seq": i}))}) for i in range(10)
    ]
    # infer read and acked all ten; the shadow read three and acked one
    await redis_client.xreadgroup(f"infer:{MODEL}", "i", {tensors: ">"}, count=10)
    await redis_client.xack(tensors, f"infer:{MODEL}", *ids)
    await redis_client.xreadgroup(f"shadow:{MODEL}", "s", {tensors: ">"}, count=3)
    await redis_client.xack(tensors, f"shadow:{MODEL}", ids[0])

    backlog = PipelineBacklog(redis_client, keys, transport, ModelRepository(tmp_path / "repository"))
    await backlog.slowest()  # learns which models read the frames
    assert await backlog.of_partition(keys) == 0  # the shadow's 9 entries pause nothing

    deleted = await transport.trim(tensors)
    assert deleted == 1  # only what every group, the shadow's included, has acked
    left = [entry_id for entry_id, _ in await redis_client.xrange(tensors)]
    assert left == ids[1:]


async def test_a_shadow_too_far_behind_skips_to_the_newest_tensor(redis_client, tmp_path) -> None:
    """A candidate slower than the pipeline compares a sample instead of keeping tensors from
    being trimmed: more than MAX_BEHIND unread, its group jumps to the end of the stream."""
    repo = ModelRepository(tmp_path / "repo")
    add_version(repo, MODEL, seed=1)
    settings = Settings(models={"repository": repo.root, "cache_dir": tmp_path / "cache"})
    engine = open_stage_engine(settings, MODEL, repo.spec(MODEL))
    keys = PipelineKeys()
    shadow = ShadowInfer(settings, redis_client, consumer="s", model=MODEL, engine=engine)
    try:
        await shadow.start()  # its group, at the end of the (empty) stream
        tensors = keys.tensors(MODEL)
        for i in range(MAX_BEHIND + 10):
            await redis_client.xadd(tensors, {FIELD: encode_message(Message(meta={"seq": i}))})
        await shadow.maintain()
        [group] = await redis_client.xinfo_groups(tensors)
        assert group["name"] == f"shadow:{MODEL}".encode() and group["lag"] == 0
        assert shadow.skipped == MAX_BEHIND + 10
    finally:
        engine.close()
