"""Which source URIs the HTTP API may register: a pure decision, the file system and DNS injected.

`check_source(uri, policy, real_path=..., resolve=...)` returns a `SourceVerdict`: allowed (with the
URI to store: file paths resolved through their symlinks), or refused as ``malformed`` (the URI
cannot be understood) or ``forbidden`` (it can, and the policy says no), with a reason a user can
act on. The caller supplies `real_path` (``os.path.realpath``) and `resolve` (host -> addresses), so
this module reads no disk and asks no DNS; ``stream.adapters.source_access`` wires the real ones.

The kinds follow `stream.adapters.media.video.open_source`: a bare path or ``file:PATH`` is kind ``file``,
``replay:PATH`` (and other path-carrying plug-in prefixes in `PATH_KINDS`) carries a path,
``SCHEME://host/...`` is a network source, ``webcam:N`` and ``/dev/videoN`` are kind ``webcam``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from stream.core.sources.uri import parse_source

__all__ = [
    "METADATA_NETWORKS",
    "PATH_KINDS",
    "SourcePolicy",
    "SourceVerdict",
    "check_source",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

PATH_KINDS = frozenset({"file", "replay"})
"""Kinds whose rest is a file path (checked against the roots)."""

_WEBCAM = re.compile(r"webcam:\d{1,3}|/dev/video\d{1,3}", re.IGNORECASE)
_GLOB_MAGIC = re.compile(r"[*?\[]")

METADATA_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, DigitalOcean (inside link-local anyway)
        "169.254.170.2/32",  # AWS ECS task metadata
        "fd00:ec2::254/128",  # AWS IMDS over IPv6
        "100.100.100.200/32",  # Alibaba Cloud
    )
)
"""Cloud instance-metadata endpoints: credentials live there, so no source may point at them."""


@dataclass(frozen=True)
class SourcePolicy:
    """`schemes`: allowed kinds; `roots`: folders (already resolved through symlinks) whose files may
    be played; `networks`: ranges allowed although loopback/link-local/unspecified/metadata."""

    schemes: frozenset[str]
    roots: tuple[str, ...]
    networks: tuple[Network, ...] = field(default_factory=tuple)

    @classmethod
    def build(
        cls, schemes: Iterable[str], roots: Iterable[str], networks: Iterable[str] = ()
    ) -> SourcePolicy:
        return cls(
            frozenset(s.lower() for s in schemes),
            tuple(str(r).rstrip("/") or "/" for r in roots),
            tuple(ipaddress.ip_network(n, strict=False) for n in networks),
        )


@dataclass(frozen=True)
class SourceVerdict:
    """`outcome` is ``allowed``, ``malformed`` (HTTP 400) or ``forbidden`` (HTTP 403); `uri` is what
    to register when allowed (a file path resolved through its symlinks)."""

    outcome: Literal["allowed", "malformed", "forbidden"]
    reason: str = ""
    uri: str = ""

    @property
    def allowed(self) -> bool:
        return self.outcome == "allowed"


def _malformed(reason: str) -> SourceVerdict:
    return SourceVerdict("malformed", reason)


def _forbidden(reason: str) -> SourceVerdict:
    return SourceVerdict("forbidden", reason)


def _address_problem(address: Address, allowed: Sequence[Network]) -> str | None:
    """Why a source must not reach `address` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in net for net in allowed):
        return None
    if any(address in net for net in METADATA_NETWORKS):
        return "a cloud metadata address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    return None


def _check_network(
    kind: str, uri: str, policy: SourcePolicy, resolve: Callable[[str], list[str]]
) -> SourceVerdict:
    try:
        parts = urlsplit(uri)
        host = parts.hostname
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number
    except ValueError as e:
        return _malformed(f"not a valid {kind} URL: {e}")
    if not host:
        return _malformed(f"a {kind} source needs a host: {kind}://HOST/...")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            found = resolve(host)
        except UnicodeError as e:  # a label IDNA cannot encode (empty, or over 63 characters)
            return _malformed(f"host {host!r} is not a valid host name: {e}")
        except OSError as e:
            return _forbidden(
                f"host {host!r} does not resolve here ({e}), so its addresses cannot be checked"
            )
        if not found:
            return _forbidden(f"host {host!r} resolves to no address, so it cannot be checked")
        try:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
        except ValueError as e:
            return _forbidden(f"host {host!r} resolved to something that is not an address: {e}")
    for address in addresses:
        problem = _address_problem(address, policy.networks)
        if problem is not None:
            via = "" if str(address) == host else f" (host {host!r} resolves to {address})"
            return _forbidden(
                f"{address} is {problem}{via}; sources may not reach it unless ingest.allowed_sources"
                ".networks includes it"
            )
    return SourceVerdict("allowed", uri=uri)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root if root.endswith("/") else root + "/")


def _check_path(
    kind: str, path: str, prefix: str, policy: SourcePolicy, real_path: Callable[[str], str]
) -> SourceVerdict:
    if kind == "file" and path.startswith("//"):  # file:///etc/x (a URL) names /etc/x
        path = "/" + path.lstrip("/")
    if "\x00" in path:
        return _malformed("the path contains a NUL character")
    if _GLOB_MAGIC.search(path):
        return _malformed(
            f"no wildcards in a {kind} path over the API (a glob may reach past its folder); "
            "pass the folder itself"
        )
    if not path.startswith("/"):
        return _malformed(
            f"a {kind} path must be absolute (the ingest replica's working directory is not yours): {path!r}"
        )
    resolved = real_path(path)
    for root in policy.roots:
        if _under(resolved, root):
            return SourceVerdict("allowed", uri=prefix + resolved)
    # the path as given, never what it resolves to: that would tell a client about this host
    roots = ", ".join(policy.roots) or "none"
    return _forbidden(
        f"{path} is outside the folders sources may be read from ({roots}), or resolves through a "
        "symlink to a place outside them; an operator can add the folder to ingest.allowed_sources.roots"
    )


def check_source(
    uri: str,
    policy: SourcePolicy,
    *,
    real_path: Callable[[str], str],
    resolve: Callable[[str], list[str]],
) -> SourceVerdict:
    """May the API register `uri`? See the module docstring; `resolve` may raise OSError."""
    if not uri or uri != uri.strip():
        return _malformed("the URI is empty or has leading/trailing whitespace")
    if any(ord(c) < 32 for c in uri):
        return _malformed("the URI contains control characters")
    parsed = parse_source(uri)
    kind, rest = parsed.kind, parsed.rest
    if kind not in policy.schemes:
        allowed = ", ".join(sorted(policy.schemes)) or "none"
        return _forbidden(f"source kind {kind!r} is not allowed here (allowed: {allowed})")
    if kind in PATH_KINDS:
        prefix = "" if kind == "file" else f"{kind}:"
        return _check_path(kind, rest, prefix, policy, real_path)
    if rest.startswith("//"):
        return _check_network(kind, uri, policy, resolve)
    if kind == "webcam":
        if _WEBCAM.fullmatch(uri) is None:
            return _malformed(f"a webcam is webcam:N or /dev/videoN, got {uri!r}")
        return SourceVerdict("allowed", uri=uri)
    return _forbidden(f"source kind {kind!r} carries neither a path nor a host, so it cannot be checked")
