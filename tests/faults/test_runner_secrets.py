"""The processes runner keeps the Redis password off disk and off the stage command lines: the
stages get the URL and credentials through their environment (readable only by the same user),
not in the temporary settings file nor in argv (which every local user can read)."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr

from stream.adapters.redis.server import RedisServer
from stream.core.sources.ids import source_id
from stream.runners.processes import run_processes
from tests.faults.conftest import MODEL, fault_settings
from tests.faults.frames import write_frame_folder

pytestmark = [pytest.mark.faults, pytest.mark.slow]

FRAMES = 200


def _stage_processes() -> dict[int, list[str]]:
    """argv of this process's `framestream stage` children, by pid."""
    out: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and "stream.cli" in argv and "stage" in argv:
            out[int(entry.name)] = argv
    return out


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
async def test_no_redis_password_in_the_stage_config_file_or_command_line(
    model_cache: Path, tmp_path: Path
) -> None:
    password = f"pw-{secrets.token_hex(8)}"
    base = fault_settings(model_cache)
    settings = base.model_copy(
        update={
            "streams": base.streams.model_copy(update={"pipeline": "secret"}),
            "redis": base.redis.model_copy(update={"password": SecretStr(password)}),  # as if from --config
        }
    )
    folder = write_frame_folder(tmp_path / "clip", FRAMES)
    seen: dict[str, object] = {}

    def inspect(_collector: object) -> None:
        if seen:
            return
        stages = _stage_processes()
        if len(stages) < 4:
            return
        configs = {argv[argv.index("--config") + 1] for argv in stages.values()}
        seen["argv"] = list(stages.values())
        seen["configs"] = {path: Path(path).read_text() for path in configs}
        seen["environ"] = [(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")) for pid in stages]

    with RedisServer(password=password) as server:
        assert password in server.url  # redis://:<password>@127.0.0.1:<port>/0
        report = await asyncio.wait_for(
            run_processes(settings, redis_url=server.url, sources=[str(folder)], models=[MODEL],
                          timeout_s=90, on_progress=inspect),
            timeout=200,
        )  # fmt: skip
    [row] = report.rows
    # the stages logged in with what the environment gave them, and did the work
    assert (row.source, row.results, row.error) == (source_id(str(folder)), FRAMES, None)
    assert seen, "never saw the four stage processes while the run went on"
    [(path, text)] = seen["configs"].items()  # type: ignore[attr-defined]
    assert "pipeline: secret" in text, text  # it is the run's config
    assert password not in text, f"the Redis password is in {path}:\n{text}"
    for argv in seen["argv"]:  # type: ignore[attr-defined]
        assert not any(password in arg for arg in argv), argv
    for environ in seen["environ"]:  # type: ignore[attr-defined]
        assert f"FRAMESTREAM_REDIS__URL={server.url}".encode() in environ
        assert f"FRAMESTREAM_REDIS__PASSWORD={password}".encode() in environ
