"""The record a running ``l2v-search serve`` leaves in the index home, so ``query`` finds it.

    indexes/.serve/<pid>.json   {"url", "pid", "host", "indexes", "started"}

``serve`` writes it once it listens and removes it on a clean exit; a killed server leaves it
behind, so a reader checks that the process is alive (same host) and that ``GET /health``
answers before using it, and removes a record whose process is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .manifest import read_json, write_json_atomic

FOLDER = ".serve"
HEALTH_TIMEOUT_S = 2.0  # a loaded server may take a while to answer


@dataclass(frozen=True)
class ServerRecord:
    path: Path
    url: str
    pid: int
    host: str
    indexes: tuple[str, ...]

    def alive(self) -> bool:
        """Whether the process is running (checked where it ran) and the server answers /health."""
        if self.host == socket.gethostname() and not _pid_alive(self.pid):
            return False
        return healthy(self.url)


def write(index_home: Path, url: str, indexes: list[str]) -> Path:
    """Record this process as serving ``indexes`` of ``index_home`` at ``url``; returns the record's path."""
    path = Path(index_home) / FOLDER / f"{os.getpid()}.json"
    write_json_atomic(path, {"url": url, "pid": os.getpid(), "host": socket.gethostname(), "indexes": indexes,
                             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return path


def remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def records(index_home: Path) -> list[ServerRecord]:
    """The records in ``index_home``, newest first (unreadable ones skipped)."""
    found = []
    for p in sorted((Path(index_home) / FOLDER).glob("*.json"), key=_mtime, reverse=True):
        try:
            r = read_json(p)
            found.append(ServerRecord(p, str(r["url"]), int(r["pid"]), str(r.get("host", "")),
                                      tuple(r.get("indexes", ()))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def find(index_home: Path, index: str) -> tuple[str | None, list[str]]:
    """The URL of a live server of ``index`` in ``index_home`` (None if none), and a note for each
    stale record met on the way (those records are removed)."""
    notes = []
    for r in records(index_home):
        if index not in r.indexes:
            continue
        if r.alive():
            return r.url, notes
        notes.append(f"note: the server recorded in {r.path} ({r.url}, pid {r.pid}) does not answer; "
                     "searching in this process")
        if r.host == socket.gethostname() and not _pid_alive(r.pid):
            remove(r.path)  # its process is gone: the record is stale for good
    return None, notes


def healthy(url: str, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200 and json.loads(resp.read()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0
