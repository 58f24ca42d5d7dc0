"""A wheel install, not editable and away from the source tree, still lists every model and serves
the web console: the descriptors and the console's files ship as package data
(`stream/zoo/models`, a symlink to `models/` in the checkout; `deployments/console/web`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from stream.zoo import list_specs

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


# Build products of earlier builds (build/, *.egg-info/SOURCES.txt) would feed stale file lists
# into the wheel, so the wheel is built from a clean copy of the tree.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "out", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


@pytest.mark.slow
def test_models_list_and_console_files_from_a_wheel_installed_in_a_fresh_venv(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(src), "-w", str(tmp_path / "dist")])
    (wheel,) = (tmp_path / "dist").glob("framestream-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)])
    # The dependencies come from this venv's site-packages, added as a plain path: its .pth files
    # (among them the editable hook that maps `stream` to the checkout) are not processed there.
    fresh_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                      .stdout.strip())  # fmt: skip
    (fresh_site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FRAMESTREAM_"))}
    away = tmp_path / "elsewhere"
    away.mkdir()
    where = _run([str(python), "-c", "import stream; print(stream.__file__)"], cwd=away, env=env).stdout
    assert where.startswith(str(fresh_site)), where
    proc = _run([str(venv / "bin" / "framestream"), "models", "list", "--json"], cwd=away, env=env)
    assert sorted(m["name"] for m in json.loads(proc.stdout)) == sorted(s.name for s in list_specs())
    console = (
        "import deployments, deployments.console.feed as c; print(deployments.__file__); "
        "print(all(c.static_file(n) for n in ('console.js', 'console.css')) "
        "and 'console.js' in c.index_html(''))"
    )
    where, served = _run([str(python), "-c", console], cwd=away, env=env).stdout.split()
    assert where.startswith(str(fresh_site)) and served == "True", (where, served)
