"""`framestream models fetch`: download, verify (size + sha256), unpack, convert, cache as IR.

Everything happens in a temp directory beside the cache entry and is renamed into place only
when the IR is written and checked, so a failed or interrupted fetch leaves the cache as it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import openvino as ov

from stream.errors import ModelError
from stream.zoo.convert import check_convertible, convert_to_ir, find_model_file
from stream.zoo.descriptors import ModelFile, ModelSpec
from stream.zoo.store import atomic_dir, cached_ir, parse_labels

__all__ = ["Progress", "download", "fetch_model", "unpack"]

# progress(file_name, bytes_done, bytes_total or None)
Progress = Callable[[str, int, int | None], None]

_CHUNK = 1 << 20


def _no_progress(name: str, done: int, total: int | None) -> None:
    return None


def _check_entry(name: str, f: ModelFile) -> str:
    if not f.url:
        raise ModelError(f"{name}: descriptor gives no URL for {f.name}")
    if not f.sha256:
        raise ModelError(
            f"{name}: descriptor gives no sha256 for {f.name}; refusing an unverified download "
            "(put the file in --weights-dir instead, or add its sha256 to the descriptor)"
        )
    return f.url


def download(
    spec: ModelSpec | str,
    f: ModelFile,
    dest: Path,
    *,
    progress: Progress = _no_progress,
    timeout_s: float = 30.0,
) -> Path:
    """Stream `f` to `dest`, checking size and sha256 as it arrives. ModelError on any mismatch;
    errors name `spec` (a descriptor, or what the file is for)."""
    name = spec if isinstance(spec, str) else spec.name
    url = _check_entry(name, f)
    digest = hashlib.sha256()
    done = 0
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout) as r, dest.open("wb") as out:
            if r.status_code != 200:
                raise ModelError(f"{name}: {url} answered HTTP {r.status_code}")
            header = r.headers.get("content-length")
            total = f.size if f.size is not None else (int(header) if header else None)
            progress(f.name, 0, total)
            for chunk in r.iter_bytes(_CHUNK):
                done += len(chunk)
                if f.size is not None and done > f.size:
                    raise ModelError(f"{name}: {f.name} is larger than the expected {f.size} bytes")
                digest.update(chunk)
                out.write(chunk)
                progress(f.name, done, total)
    except httpx.ConnectError as e:
        raise ModelError(
            f"{name}: cannot connect to {httpx.URL(url).host} ({e}); are you offline? "
            "Fetch on a machine with internet and copy the cache, or use --weights-dir"
        ) from e
    except httpx.TimeoutException as e:
        raise ModelError(f"{name}: download of {url} timed out after {timeout_s:g} s") from e
    except httpx.HTTPError as e:
        raise ModelError(f"{name}: download of {url} failed: {e}") from e
    if f.size is not None and done != f.size:
        raise ModelError(f"{name}: {f.name} is truncated: got {done} of {f.size} bytes")
    if digest.hexdigest() != f.sha256:
        raise ModelError(
            f"{name}: sha256 mismatch for {f.name}: expected {f.sha256}, got {digest.hexdigest()} "
            "(corrupt download or changed upstream file); nothing was cached"
        )
    return dest


def unpack(spec: ModelSpec | str, archive: Path, dest: Path) -> None:
    """Extract a tar/tgz/zip archive into `dest`, refusing paths that escape it."""
    name = spec if isinstance(spec, str) else spec.name
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    target = (dest / member).resolve()
                    if not target.is_relative_to(dest.resolve()):
                        raise ModelError(f"{name}: {archive.name} has an unsafe path {member!r}")
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise ModelError(f"{name}: archive {archive.name} is corrupt or truncated ({e})") from e


def fetch_model(
    spec: ModelSpec,
    cache_dir: Path,
    *,
    force: bool = False,
    progress: Progress = _no_progress,
    timeout_s: float = 30.0,
) -> Path:
    """Make sure the converted IR of `spec` is in `cache_dir`; returns the path of its .xml."""
    final_xml = cached_ir(spec, cache_dir)
    if final_xml.is_file() and final_xml.with_suffix(".bin").is_file() and not force:
        return final_xml
    if not spec.files:
        raise ModelError(f"{spec.name}: descriptor lists no files to fetch")
    for f in spec.files:
        _check_entry(spec.name, f)
    if spec.labels is not None:
        _check_entry(spec.name, spec.labels)
    check_convertible(spec)

    with atomic_dir(final_xml.parent) as tmp:
        work = tmp / ".work"
        src = work / "src"
        src.mkdir(parents=True)
        for f in spec.files:
            path = download(spec, f, work / f.name, progress=progress, timeout_s=timeout_s)
            if f.is_archive:
                unpack(spec, path, src)
            else:
                shutil.move(str(path), src / f.name)
        convert_to_ir(spec, find_model_file(spec, src), tmp / final_xml.name)
        if spec.labels is not None:
            labels = download(
                spec, spec.labels, work / "labels.download", progress=progress, timeout_s=timeout_s
            )
            parse_labels(labels.read_text(encoding="utf-8"), spec.labels_count, spec.labels.name)
            shutil.move(str(labels), tmp / "labels.txt")
        shutil.rmtree(work)
        record = {
            "name": spec.name,
            "files": [{"name": f.name, "url": f.url, "sha256": f.sha256} for f in spec.files],
            "openvino": ov.get_version(),
        }
        (tmp / "source.json").write_text(json.dumps(record, indent=2))
    return final_xml
