"""Search through a running ``l2v-search serve`` (``POST /search/batch``), for ``query --server``.

Only the standard library: a query sent to a server imports no torch, FAISS or Arrow. The hits
come back as :class:`~llm2vec_search.search.Hit`-shaped objects with the same fields, so the
CLI prints them exactly as it prints hits found in process.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from .errors import UsageError

BATCH = 256  # the server's limit on queries per request (server.MAX_BATCH_QUERIES)
TIMEOUT_S = 600.0


class ServerUnreachable(UsageError):
    """The server did not answer (connection refused, reset, timed out)."""


@dataclasses.dataclass(frozen=True)
class RemoteHit:
    """A hit as the server returns it (the fields of :meth:`Hit.to_dict`)."""

    id: str
    score: float
    title: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def search(url: str, index: str, queries: Sequence[str], k: int, *, instruction: str | None = None,
           mode: str | None = None) -> tuple[str, list[list[RemoteHit]]]:
    """``(mode used, hits per query)`` from the server at ``url``; its errors become UsageError."""
    mode_used, hits = mode, []
    for start in range(0, len(queries), BATCH):
        body = {"queries": list(queries[start : start + BATCH]), "k": k, "instruction": instruction,
                "index": index, "mode": mode}
        reply = _post(url.rstrip("/") + "/search/batch", body)
        mode_used = reply["mode"]
        hits += [[RemoteHit(h["id"], h["score"], h["title"], h["text"]) for h in row] for row in reply["results"]]
    return mode_used, hits


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise UsageError(f"server {url}: {_error_text(e)}") from None
    except (OSError, ValueError) as e:  # URLError, refused, reset, timeout, a reply that is not JSON
        raise ServerUnreachable(f"cannot reach the server at {url}: {getattr(e, 'reason', e)}") from None


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        reply = json.loads(e.read())
    except ValueError:
        return f"HTTP {e.code}"
    details = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in reply.get("details", []))
    return f"{reply.get('error', f'HTTP {e.code}')}" + (f" ({details})" if details else "")


def indexes(url: str) -> list[str]:
    """The names of the indexes the server at ``url`` serves."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/indexes", timeout=TIMEOUT_S) as resp:
            return [i["name"] for i in json.loads(resp.read())["indexes"]]
    except urllib.error.HTTPError as e:
        raise UsageError(f"server {url}: {_error_text(e)}") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ServerUnreachable(f"cannot reach the server at {url}: {getattr(e, 'reason', e)}") from None
