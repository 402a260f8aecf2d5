"""Manifests: the JSON record written beside every artifact (encoder, embeddings, index, eval run).

A manifest says what made an artifact, so a loader can refuse a mismatch with a message that
names what differs, and a result can be reproduced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

_VERSIONED = ("llm2vec-search", "torch", "transformers", "peft", "faiss-cpu", "faiss-gpu-cu12", "numpy",
              "pyarrow", "bm25s")


def library_versions(*extra: str) -> dict[str, str]:
    """Versions of the libraries that shape an artifact, and of ``extra`` ones (those installed)."""
    import platform  # here, not at the top: a query answered by a server never needs them
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in (*_VERSIONED, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(parts: Iterable[Any]) -> str:
    """A short stable hash of JSON-serialisable parts (configs, file hashes, ids)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _commit(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file or folder onto ``path``: the one step that makes a write visible."""
    if tmp.is_dir() and path.is_dir():
        shutil.rmtree(path)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``, unique to this process and call, renamed onto ``path``
    when the block succeeds and removed when it fails: readers see the old file or the new one,
    never a half-written one, and writers never share a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield tmp
        _commit(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if need be) for the block: one process at a
    time fills a cache entry, and the others wait, then find it filled. The kernel drops the lock
    of a process that dies, so a killed holder never blocks the next one."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to ``path`` atomically (:func:`atomic`)."""
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def as_dict(obj: Any) -> dict[str, Any]:
    """A frozen dataclass (or mapping) as a plain dict for a manifest."""
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"cannot record {type(obj).__name__} in a manifest")


def diff(expected: Mapping[str, Any], found: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """Human-readable differences between two manifests on ``keys``: ``key: a != b``."""
    return [f"{k}: {expected.get(k)!r} != {found.get(k)!r}" for k in keys if expected.get(k) != found.get(k)]


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text to ``path`` atomically (:func:`atomic`)."""
    with atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
