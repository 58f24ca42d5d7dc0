"""What a user types on the head host: `framestream run --address HEAD --redis URL --source PATH`,
with a source every host can read (a folder outside the temp dir, `shared_folder`; the hosts
share this machine's disk). It deploys its own app (own streams, route `/`), plays every frame and exits 0.

This module runs last on purpose: the attached run deploys through Serve's declarative API, which
replaces every application on the cluster, so the suite's own app is gone afterwards (a known bug,
the second test)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys

import pytest

from tests.faults.frames import write_frame_folder
from tests.hosts.cluster import ROOT, shared_folder
from tests.hosts.conftest import ClusterStack

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

FRAMES = 300


@pytest.fixture(scope="module")
def attached_run(cluster_stack: ClusterStack) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    """The run's process and the suite app's replica counts afterwards."""
    cluster = cluster_stack.cluster
    assert cluster.redis is not None
    tag = secrets.token_hex(3)
    folder = write_frame_folder(shared_folder(f"frames-{tag}"), FRAMES)
    env = {
        **cluster.env(),
        "CI": "true",
        "FRAMESTREAM_STREAMS__PIPELINE": f"run{tag}",
        "FRAMESTREAM_MODELS__CACHE_DIR": str(cluster_stack.settings.models.cache_dir),
    }
    env.pop("FRAMESTREAM_MODELS__WEIGHTS_DIR", None)
    argv = [
        sys.executable, "-m", "stream.cli", "run",
        "--address", cluster.gcs_address,
        "--redis", cluster.redis.url,
        "--source", str(folder),
        "--model", cluster_stack.model,
        "--json",
    ]  # fmt: skip
    try:
        done = cluster.head.host.run(argv, env=env, cwd=ROOT, timeout_s=420)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return done, cluster_stack.app.running()


def test_framestream_run_attached_to_the_cluster_finishes(attached_run) -> None:
    done, _ = attached_run
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "opened by the ingest replica on whichever host" in " ".join(done.stderr.split())
    summary = json.loads(done.stdout)  # --json: the summary alone on stdout
    assert (summary["interrupted"], summary["results"]) == (False, FRAMES), summary


def test_an_attached_run_leaves_the_clusters_other_apps_running(
    attached_run, cluster_stack: ClusterStack
) -> None:
    """A config given to Serve is the whole set of applications: the run keeps the ones already
    running (`deployments.serve.config.deploy`), or it would remove the cluster's own."""
    _, after = attached_run
    assert after == cluster_stack.app.replicas, after
