"""`framestream run --address`: a run attached to a cluster refuses what the cluster's other hosts
could not serve (a private Redis on this machine's loopback, a source in this machine's temp dir),
before it starts anything."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from deployments.local.runner import check_attached
from stream.errors import ConfigError

CLUSTER = "198.18.77.10:6379"
"""A Ray address on the benchmark subnet: nothing is started or reached in these tests."""
REDIS = "redis://198.18.77.20:6379/0"


def test_address_without_redis_stops_with_a_clear_message_and_starts_no_redis() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run", "--address", CLUSTER, "--source", "rtsp://cam/1"],
        env={k: v for k, v in os.environ.items() if not k.startswith("FRAMESTREAM_REDIS")},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, out
    assert "--redis" in out and "127.0.0.1" in out, out
    assert "redis-server (private)" not in out and "deploying" not in out, out


def test_a_loopback_redis_with_a_remote_cluster_is_refused() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        check_attached(CLUSTER, "redis://127.0.0.1:6379/0", ["rtsp://cam/1"])


def test_the_demo_clip_and_temp_paths_are_refused_on_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="demo clip"):
        check_attached(CLUSTER, REDIS, [])
    clip = Path(tempfile.gettempdir()) / "somewhere" / "demo.mp4"
    for source in (str(clip), f"replay:{clip}", f"file:{clip}"):
        with pytest.raises(ConfigError, match="temp dir"):
            check_attached(CLUSTER, REDIS, [source])


def test_what_every_host_can_open_passes() -> None:
    check_attached(CLUSTER, REDIS, ["rtsp://cam/1", "https://example.invalid/a.mp4", "/srv/shared/clip.mp4"])
    check_attached(None, "auto", [])  # no cluster: the private Redis and the demo clip are fine


def test_the_cluster_suites_frames_pass_from_a_checkout_in_the_temp_dir() -> None:
    """`make test` from a clone under /tmp: the frames tests/hosts/test_run_attached.py plays
    must lie outside the temp dir, which an attached run rightly refuses."""
    from tests.hosts.cluster import shared_folder

    clone = Path(tempfile.gettempdir()) / "framestream-clone"
    with pytest.raises(ConfigError, match="temp dir"):  # inside such a checkout: refused
        check_attached(CLUSTER, REDIS, [str(clone / "out" / "cluster" / "frames-1")])
    for root in (clone, Path("/srv/framestream")):
        check_attached(CLUSTER, REDIS, [str(shared_folder("frames-1", root=root))])
    assert shared_folder("frames-1", root=Path("/srv/framestream")).is_relative_to("/srv/framestream")
