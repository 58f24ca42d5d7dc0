"""Key names: P = 1 keeps the names it always had; partitions get their own hash tags; a source's
partition is a stable, documented hash of its id."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream.adapters.redis.entries import hash_tag
from stream.core.keys import PipelineKeys, partition_of


def test_one_partition_keeps_the_key_names_of_before_partitions():
    keys = PipelineKeys("p")
    assert keys.all_partitions == [keys]
    assert (keys.frames, keys.tensors("m"), keys.scores("m"), keys.results, keys.dead) == (
        "fs:{p}:frames", "fs:{p}:tensors:m", "fs:{p}:scores:m", "fs:{p}:results", "fs:{p}:dead",
    )  # fmt: skip
    assert (keys.sources, keys.source_state, keys.counters, keys.source_lease("a")) == (
        "fs:{p}:sources", "fs:{p}:source_state", "fs:{p}:counters", "fs:{p}:lease:a",
    )  # fmt: skip
    assert keys.for_source("anything") == keys


def test_each_partition_has_its_own_hash_tag_and_pipeline_wide_keys_stay_on_the_first():
    keys = PipelineKeys("p", partitions=3)
    tags = [hash_tag(k.frames) for k in keys.all_partitions]
    assert tags == ["p", "p:1", "p:2"]
    for k in keys.all_partitions:  # what one forward touches shares one tag
        assert {hash_tag(s) for s in (k.frames, k.tensors("m"), k.scores("m"), k.results, k.events,
                                      k.segments, k.dead, k.source_state, k.counters,
                                      k.group_state("postprocess:m"))} == {k.tag}  # fmt: skip
        assert keys.of_key(k.segments) == k
        assert k.sources == keys.sources and k.stage_ready == keys.stage_ready
        assert keys.of_key(k.scores("m")) == k
    assert keys.results_streams == ["fs:{p}:results", "fs:{p:1}:results", "fs:{p:2}:results"]
    with pytest.raises(ValueError, match="not a key of pipeline"):
        keys.of_key("fs:{p:3}:frames")
    with pytest.raises(ValueError, match="partition index"):
        keys.partition(3)


def test_source_partition_is_crc32_of_its_id_the_same_in_every_process():
    assert partition_of("cam-1", 3) == 2_865_850_432 % 3 == 1  # zlib.crc32(b"cam-1") == 2865850432
    assert [partition_of(f"s{i}", 1) for i in range(10)] == [0] * 10
    other = subprocess.run(  # Python's str hash is salted per process; this must not be
        [sys.executable, "-c", "from stream.core.keys import partition_of; print(partition_of('cam-1', 3))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert int(other.stdout) == 1
    spread = {partition_of(f"camera-{i}", 8) for i in range(200)}
    assert spread == set(range(8))
