"""The processes a benchmark started, read from /proc (Linux only): one walk for CPU and memory."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Proc", "descendants", "own"]

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Proc:
    pid: int
    cmd: str
    cpu_s: float
    """User + system CPU seconds, every thread."""
    rss_bytes: int

    @property
    def role(self) -> str:
        """What the process is: a stage (``framestream stage NAME``), a Serve replica's deployment,
        or the program's name."""
        if " stage " in self.cmd:
            return self.cmd.split(" stage ")[1].split()[0]
        replica = re.search(r"ServeReplica:[^ ]*?:(\w+)", self.cmd)
        if replica:
            return replica[1]
        program = self.cmd.split()[0].rsplit("/", 1)[-1] if self.cmd.strip() else "?"
        return program.split(".", 1)[0] if program.startswith("ray::") else program  # not the task


def descendants(root_pid: int) -> list[Proc]:
    """Every live descendant of `root_pid` (children, their children, ...)."""
    table: dict[int, tuple[int, Proc]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) * _TICK_S
        table[int(entry)] = (int(fields[1]), Proc(int(entry), cmd, cpu, int(fields[21]) * _PAGE))
    out: list[Proc] = []
    todo = [root_pid]
    while todo:
        parent = todo.pop()
        for ppid, proc in table.values():
            if ppid == parent:
                todo.append(proc.pid)
                out.append(proc)
    return out


def own(root_pid: int) -> Proc | None:
    """`root_pid` itself."""
    try:
        fields = Path(f"/proc/{root_pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmd = Path(f"/proc/{root_pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return Proc(root_pid, cmd, (int(fields[11]) + int(fields[12])) * _TICK_S, int(fields[21]) * _PAGE)
