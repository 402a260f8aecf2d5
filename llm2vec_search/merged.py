"""The merged-encoder cache: an encoder's base weights with its LoRA adapters merged, kept as
one safetensors directory so that loading it reads one set of weights and imports no peft.

    $L2V_SEARCH_HOME/merged/<hash of base + adapters>/
        config.json, model.safetensors   the merged model, fp32 (cast on load: the same bits)
        l2v_merged.json                  base and adapter paths; written last (a complete entry)

:func:`llm2vec_search.models.merged_dir` names the entry; a changed adapter changes the name.
One process fills an entry (under a lock, written under a name unique to it and renamed into
place); another filling it at the same time waits, then finds it filled. Entries of the same
base and adapter paths with other hashes (the files changed since) and the least recently used
beyond :data:`KEEP` are removed when a new one is written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from .manifest import atomic, locked, read_json, write_json_atomic

KEEP = 4  # merged encoders kept; the least recently used beyond these are removed
RECORD = "l2v_merged.json"


def load(entry: Path, cls, kw: dict[str, Any]):
    """The cached merged model (``cls.from_pretrained(entry, **kw)``), or None when the entry is
    missing or unreadable: the caller merges anew, which is always correct."""
    if not (entry / RECORD).is_file():
        return None
    try:
        model = cls.from_pretrained(entry, **kw)
    except Exception:  # pruned while we read it, or damaged
        return None
    with contextlib.suppress(OSError):
        os.utime(entry)  # recently used: pruned last
    return model


def save(model, entry: Path, base: Path, adapters: tuple[Path, ...]) -> None:
    """Publish ``model``'s merged weights at ``entry`` (in the dtype they are in: fp32), then prune.
    Best effort: a cache that cannot be written leaves loading as it was, with a warning."""
    record = {"base": str(base), "adapters": [str(a) for a in adapters],
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        with locked(entry.parent.parent / "locks" / f"merged-{entry.name}.lock"):
            if (entry / RECORD).is_file():
                return  # another process filled it while we merged
            with atomic(entry) as tmp:
                model.save_pretrained(tmp, safe_serialization=True)
                write_json_atomic(tmp / RECORD, record)  # last: marks a complete entry
        prune(entry, record)
    except OSError as e:
        warnings.warn(f"could not cache the merged encoder in {entry.parent}: {e}", stacklevel=2)


def prune(keep: Path, record: dict[str, Any]) -> None:
    """Remove the entries of ``record``'s base and adapter paths other than ``keep``, and the least
    recently used beyond :data:`KEEP`. An entry is renamed away before it is deleted, so a reader
    sees it whole or not at all (one already reading keeps its open files)."""
    entries = []
    for d in keep.parent.iterdir():
        if d == keep or d.name.startswith(".") or not (d / RECORD).is_file():
            continue
        try:
            old = read_json(d / RECORD)
            same = (old["base"], old["adapters"]) == (record["base"], record["adapters"])
            entries.append((d.stat().st_mtime, d, same))
        except (OSError, ValueError, KeyError):
            continue
    entries.sort(reverse=True)  # most recently used first
    for n, (_, d, same) in enumerate(entries, 1):
        if same or n >= KEEP:  # `keep` itself is one of the KEEP
            gone = d.parent / f".{d.name}.{os.getpid()}.removed"
            with contextlib.suppress(OSError):
                os.rename(d, gone)
                shutil.rmtree(gone, ignore_errors=True)
