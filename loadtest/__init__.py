"""framestream's load tester: record streams, replay them open-loop, report, sweep and bench.

Pure parts (`schedule`, `stats`) use only the stdlib and numpy; `replayfile` is the documented
file format (docs/replay-format.md); the rest does the I/O.
"""

from __future__ import annotations

__all__: list[str] = []
