"""The one rule that names a source (pure): the same URI gets the same id whichever way it came in
(``framestream run --source``, either runner, ``POST /v1/sources`` without an id, the load tester).

- a file or folder path: its name without the extension (``clips/traffic.mp4`` -> ``traffic``);
- a URL: host and path, without the scheme, credentials, port or query
  (``rtsp://user:pw@cam-7:554/stream?x=1`` -> ``cam-7-stream``): a password never ends up in an id;
- ``webcam:N`` -> ``webcam-N``; ``replay:FILE`` -> the file's name without extension;
- characters outside ``[A-Za-z0-9_.-]`` become ``-``, at most 100 of them; ``source`` when nothing
  is left. Within one run a name already taken gets ``-2``, ``-3``, ... .
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from stream.core.sources.uri import parse_source

__all__ = ["ID_CHARS", "ID_PATTERN", "source_id", "source_ids"]

ID_CHARS = r"^[A-Za-z0-9_.\-]{1,128}$"
"""The characters and length of an id, as a regex without look-ahead (for JSON schemas)."""
ID_PATTERN = re.compile(r"^(?!\.+$)" + ID_CHARS[1:])
"""What a source id may be (ids given explicitly are checked against it): dots alone (``.``,
``..``) are not an id, as they read as paths wherever an id ends up in one."""

_MAX = 100


def _stem(path: str) -> str:
    name = PurePosixPath(path.rstrip("/")).name
    return name.rsplit(".", 1)[0] if "." in name.strip(".") else name


def source_id(uri: str, taken: set[str] | None = None) -> str:
    """The id of `uri` (see the module docstring), unique among `taken`, which it updates."""
    parsed = parse_source(uri)
    if parsed.rest.startswith("//"):
        parts = urlsplit(uri)
        base = "-".join(p for p in ((parts.hostname or ""), parts.path.strip("/")) if p)
    elif parsed.webcam and parsed.rest != uri:
        base = f"webcam-{parsed.rest}"
    else:
        base = _stem(parsed.rest)
    base = re.sub(r"[^A-Za-z0-9_.\-]+", "-", base).strip("-.")[:_MAX] or "source"
    if taken is None:
        return base
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def source_ids(uris: Iterable[str]) -> list[str]:
    """Ids for the sources of one run, in order, unique among themselves."""
    taken: set[str] = set()
    return [source_id(uri, taken) for uri in uris]
