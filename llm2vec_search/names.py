"""Index names and the index home: what ``query`` needs to find an index or the server serving it.

Kept free of numpy and pyarrow (and of the rest of :mod:`llm2vec_search.store`) so that a query
answered by a running server imports nothing heavy. The store re-exports these names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UsageError

DEFAULT_ENCODER = "llm2vec-smollm2-135m"  # the embedded default (models.py resolves it)
KIND = "llm2vec-search.index"
FORMAT = 2  # 1: one folder per index, before generations (not readable: rebuild)
CURRENT, MANIFEST = "CURRENT", "manifest.json"
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,200}")
GENERATION_RE = re.compile(r"gen-(\d{6,})")


def check_name(name: str) -> str:
    """``name`` if it is a valid index name (``[A-Za-z0-9_.-]``, not ``.`` or ``..``), else a UsageError."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise UsageError(f"invalid index name {name!r}: use letters, digits, '_', '.' and '-' "
                         "(at most 200, not '.' or '..')")
    return name


def safe_name(text: str) -> str:
    """A valid index name made from any text (a corpus file or dataset folder name)."""
    name = re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")[:200]
    return name if name not in ("", ".", "..") else "index"


def index_home(index_dir: str | Path | None = None) -> Path:
    """``--index-dir``, else ``$L2V_SEARCH_INDEX_DIR``, else ``./indexes``."""
    return Path(index_dir or os.environ.get("L2V_SEARCH_INDEX_DIR") or "indexes")


def is_published(folder: Path) -> bool:
    """Whether ``folder`` holds a published index: ``CURRENT`` names a generation with a manifest."""
    try:
        gen = (folder / CURRENT).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return False
    return bool(GENERATION_RE.fullmatch(gen)) and (folder / gen / MANIFEST).is_file()


def published_names(index_dir: str | Path | None = None) -> list[str]:
    """The names of the published indexes in the index home, sorted."""
    home = index_home(index_dir)
    if not home.is_dir():
        return []
    return [d.name for d in sorted(home.iterdir())
            if d.is_dir() and NAME_RE.fullmatch(d.name) and d.name not in (".", "..") and is_published(d)]


def resolve_index_name(name: str | None, index_dir: str | Path | None = None) -> str:
    """``name`` (checked), or the only published index in the index home (an error naming them otherwise)."""
    if name is not None:
        return check_name(name)
    home = index_home(index_dir)
    found = published_names(home)
    if len(found) != 1:
        raise UsageError(f"{len(found)} indexes in {home} ({', '.join(found) or 'none'}): choose one with --index")
    return found[0]
