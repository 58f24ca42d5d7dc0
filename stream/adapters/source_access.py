"""The file system and DNS for `stream.core.source_policy`: what ``POST /v1/sources`` may open.

`policy_from(settings.ingest.allowed_sources)` resolves the roots through their symlinks once;
`check_uri(uri, policy)` asks the real file system (``os.path.realpath``) and the system resolver
(``getaddrinfo``, every address of the host). Blocking: call it from a thread.
"""

from __future__ import annotations

import os
import socket

from stream.core.source_policy import SourcePolicy, SourceVerdict, check_source
from stream.settings import AllowedSources

__all__ = ["check_uri", "policy_from", "resolve_host"]


def policy_from(allowed: AllowedSources) -> SourcePolicy:
    """The pure policy for `allowed`, its roots resolved through symlinks (as paths will be)."""
    return SourcePolicy.build(
        allowed.schemes, [os.path.realpath(root) for root in allowed.roots], allowed.networks
    )


def resolve_host(host: str) -> list[str]:
    """Every address `host` resolves to here (IPv4 and IPv6); OSError when it does not resolve."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_uri(uri: str, policy: SourcePolicy) -> SourceVerdict:
    """`check_source` with the real file system and resolver."""
    return check_source(uri, policy, real_path=os.path.realpath, resolve=resolve_host)
