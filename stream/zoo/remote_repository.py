"""A model repository published as one archive at a URL, fetched by each replica at start.

``models.repository: https://models.example.com/repo-2026-12-07.tar.gz#sha256=<64 hex digits>``:
the archive holds the repository's folders at its top level (``NAME/VERSION/model.yml`` ...; make
it with ``tar -C REPOSITORY -czf repo.tar.gz .``). The sha256 is required: a replica never serves
a model it cannot verify. The archive is downloaded, checked, unpacked in a temp folder and
renamed into ``<cache>/repositories/<sha256>/`` whole, so replicas on one host share it and an
interrupted fetch leaves nothing behind. Such a repository is read-only, and fixed for a replica's
life: publishing new versions means a new archive (a new sha256) and a restart. Swapping versions
live needs a repository on a volume.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from stream.errors import ModelError
from stream.zoo.descriptors import ModelFile
from stream.zoo.store import DEFAULT_CACHE_DIR, atomic_dir

__all__ = ["fetch_repository", "is_repository_url"]

_SHA = re.compile(r"sha256=([0-9a-f]{64})")


def is_repository_url(location: object) -> bool:
    """Whether a `models.repository` value names an archive at a URL rather than a folder."""
    return isinstance(location, str) and location.startswith(("https://", "http://"))


def fetch_repository(url: str, cache_dir: Path | None = None, *, timeout_s: float = 60.0) -> Path:
    """The folder of the repository archive at `url` (``...#sha256=HEX``), fetched if not cached."""
    from stream.zoo.fetch import download, unpack  # OpenVINO and httpx: only when a URL is used

    parts = urlsplit(url)
    found = _SHA.fullmatch(parts.fragment)
    if found is None:
        raise ModelError(
            f"models.repository {url.split('#')[0]}: add the archive's sha256 as "
            "'#sha256=<64 lowercase hex digits>' (a repository from a URL is always verified)"
        )
    sha = found.group(1)
    final = (cache_dir or DEFAULT_CACHE_DIR) / "repositories" / sha
    if final.is_dir():
        return final
    name = Path(parts.path).name or "repository"
    what = f"model repository {parts.scheme}://{parts.netloc}{parts.path}"
    with atomic_dir(final) as tmp:
        archive = tmp.parent / f".{tmp.name}-{name}"
        try:
            download(
                what, ModelFile(name=name, url=url.split("#")[0], sha256=sha), archive, timeout_s=timeout_s
            )
            unpack(what, archive, tmp)
        finally:
            archive.unlink(missing_ok=True)
    return final
