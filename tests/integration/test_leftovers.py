"""The end-of-suite check (`tests.leftovers`) counts what this session started, and only that."""

from __future__ import annotations

import os
import subprocess

import psutil

from stream.watchdog import running, stop_processes
from tests.leftovers import MARK, leftover_processes


def _sleeper(env: dict[str, str]) -> psutil.Process:
    proc = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    return psutil.Process(proc.pid)


def test_a_process_the_suite_started_is_a_leftover_and_one_started_outside_is_not():
    mark = os.environ[MARK]  # set by the plugin at the start of this session
    ours = _sleeper(dict(os.environ))
    theirs = _sleeper({k: v for k, v in os.environ.items() if k != MARK})  # e.g. another user's server
    try:
        found = {p.pid for p in leftover_processes(mark, sampled=[])}
        assert ours.pid in found
        assert theirs.pid not in found
        assert os.getpid() not in found
        # a process sampled as pytest's descendant counts even without the mark
        assert theirs.pid in {p.pid for p in leftover_processes(mark, sampled=[theirs])}
    finally:
        stop_processes([ours, theirs], grace_s=2.0)
    assert not running(ours) and not running(theirs)
    # stopped, neither counts any more (the session's own servers may still run: not this test's)
    still = {p.pid for p in leftover_processes(mark, sampled=[ours, theirs])}
    assert not still & {ours.pid, theirs.pid}
