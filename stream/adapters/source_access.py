"""The file system and DNS for `stream.core.sources.policy`: what ``POST /v1/sources`` may open.

`policy_from(settings.ingest.allowed_sources)` resolves the roots through their symlinks once;
`check_uri(uri, policy)` asks the real file system (``os.path.realpath``) and the system resolver
(``getaddrinfo``, every address of the host). `check_uri` blocks (DNS): call it from a thread,
or await `check_uri_async`.
"""

from __future__ import annotations

import asyncio
import os
import socket

from stream.core.sources.policy import SourcePolicy, SourceVerdict, check_source
from stream.settings import AllowedSources

__all__ = ["CHECK_TIMEOUT_S", "check_uri", "check_uri_async", "policy_from", "resolve_host"]

CHECK_TIMEOUT_S = 5.0
"""Longest a check may take (a host name that resolves slowly is refused after this)."""


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
    """`check_source` with the real file system and resolver. A path this host will not look
    into (no permission: a refused check is a refusal) is forbidden, and one it cannot take (a
    character no file name can hold) malformed, said without what the file system answered."""
    try:
        return check_source(uri, policy, real_path=os.path.realpath, resolve=resolve_host)
    except OSError as e:
        return SourceVerdict("forbidden", f"the URI cannot be checked here ({type(e).__name__})")
    except ValueError as e:
        return SourceVerdict("malformed", f"the URI cannot be checked here ({type(e).__name__})")


async def check_uri_async(
    uri: str, policy: SourcePolicy, timeout_s: float = CHECK_TIMEOUT_S
) -> SourceVerdict:
    """`check_uri` in a thread (DNS blocks), refused when it takes longer than `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.to_thread(check_uri, uri, policy)
    except TimeoutError:
        return SourceVerdict(
            "forbidden", f"the source could not be checked within {timeout_s:g} s (slow DNS?)"
        )
