"""Postprocess state survives its replicas: scaled 1 -> 3 -> 1 with one replica SIGKILLed, every
source's smoothed labels (and scores) seq by seq, its results, its end-of-stream counters and its
segments (ids, labels, seqs, frames) are those of a run without faults. Stage processes as the
processes runner starts them, a clip whose content changes (so smoothing changes labels), P = 3 on
a real Redis Cluster.

Without the saved state (``postprocess.save_state: false``) the same faults change what users see:
the negative control."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.adapters.redis.server import LocalCluster
from tests.faults.checker import label_changes, sequence_differences
from tests.integration.postprocess_moves import SOURCES, V1, Played, make_clip, play_sync, scenario_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
async def setup(redis_cluster: LocalCluster, cluster_client, shared_dir: Path, tmp_path: Path):
    clip = make_clip(tmp_path / "scenes.mp4", shared_dir / "images")
    return redis_cluster.url, shared_dir / "models", clip


def _labels(played: Played) -> dict[str, dict[int, str]]:
    return {s: {seq: v[0] for seq, v in seqs.items()} for s, seqs in played.labels.items()}


def _segments(played: Played) -> dict[str, list[tuple]]:
    fields = ("id", "label", "first_seq", "last_seq", "frames", "closed_by", "open")
    return {s: [tuple(m[f] for f in fields) for m in metas] for s, metas in played.segments.items()}


def _scores(played: Played) -> dict[str, list[float]]:
    return {s: [m["score"] for m in metas] for s, metas in played.segments.items()}


def _counters(played: Played) -> dict[str, tuple]:
    return {
        s: tuple(e.get(k) for k in ("frames", "results", "skipped", "gaps", "late"))
        for s, e in played.eos.items()
    }


async def test_smoothed_labels_survive_scaling_and_a_kill_exactly(setup, tmp_path: Path) -> None:
    url, weights, clip = setup
    reference = await play_sync(url, scenario_settings(tmp_path, weights, "ref"), tmp_path / "ref", clip,
                                faults=False)  # fmt: skip
    moved = await play_sync(url, scenario_settings(tmp_path, weights, "moved"), tmp_path / "moved", clip,
                            faults=True)  # fmt: skip

    frames = 6 * 40
    for source in SOURCES:  # the reference: every frame once, and smoothing that changes labels
        assert sorted(reference.labels[source]) == list(range(frames)), source
        assert label_changes(_labels(reference)[source]) >= 2, _labels(reference)[source]
    assert set(moved.faults_at.values()) and max(moved.faults_at.values()) < 3 * frames, moved.faults_at
    assert len({tuple(sorted(o.items())) for o in moved.owners_seen}) >= 2, moved.owners_seen
    # a dead replica's partition: lease and membership expire after claim_idle_ms (1 s), the others
    # rebalance every claim_idle_ms / 4; 2 s more for a loaded machine and this test's polling
    assert moved.orphaned_s is not None and moved.orphaned_s < 1.25 + 2.0, moved.orphaned_s

    assert sequence_differences(_labels(reference), _labels(moved)) == {}
    assert sequence_differences(reference.labels, moved.labels) == {}  # scores too, bit for bit
    assert _counters(moved) == _counters(reference)
    for source in SOURCES:  # the reference's segments follow its smoothed labels, seq by seq
        labels = _labels(reference)[source]
        chain = _segments(reference)[source]
        assert len(chain) == label_changes(labels) + 1, (chain, label_changes(labels))
        for seg_id, label, first, last, n, _closed_by, is_open in chain:
            assert {labels[seq] for seq in range(first, last + 1)} == {label} and n == last - first + 1
            assert seg_id == f"{source}/{V1}/{first}" and not is_open
        assert [c[2] for c in chain] == [0, *(c[3] + 1 for c in chain[:-1])] and chain[-1][3] == frames - 1
        assert [c[5] for c in chain] == ["label_change"] * (len(chain) - 1) + ["eos"]
    assert _segments(moved) == _segments(reference)  # no segment lost, split, repeated or renamed
    assert _scores(moved) == _scores(reference)  # mean scores too, bit for bit
    print(f"faults at {moved.faults_at} results; owners {moved.owners_seen}; "
          f"label changes {[label_changes(_labels(reference)[s]) for s in SOURCES]}; "
          f"segments {[len(moved.segments[s]) for s in SOURCES]}; "
          f"duplicates removed {moved.duplicates}; "
          f"partition without owner {moved.orphaned_s:.2f} s")  # fmt: skip


async def test_negative_control_without_the_saved_state_the_checker_sees_a_difference(
    setup, tmp_path: Path
) -> None:
    url, weights, clip = setup
    reference = await play_sync(url, scenario_settings(tmp_path, weights, "ref"), tmp_path / "ref", clip,
                                faults=False)  # fmt: skip
    moved = await play_sync(
        url, scenario_settings(tmp_path, weights, "nostate", save_state=False), tmp_path / "nostate", clip,
        faults=True,
    )  # fmt: skip
    differences = sequence_differences(reference.labels, moved.labels)
    assert differences, "the same faults without the saved state should change what the sink sees"
    assert _counters(moved) != _counters(reference)
    labels_only = sequence_differences(_labels(reference), _labels(moved))
    print(f"without state: {sum(map(len, labels_only.values()))} seqs differ in the label")
    print(f"without state: {sum(map(len, differences.values()))} seqs differ: {differences}")
