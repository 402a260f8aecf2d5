"""Answer the CLI's queries: through a running ``l2v-search serve`` when there is one, else here.

    query ─ --server URL ───────────────────────────────────── POST /search/batch ─┐
          ├ a live server recorded in the index home (serve_record) ──────────────┤─ Answer
          └ otherwise: SearchIndex.open ─ encoder ─ FAISS / BM25 (search.py) ─────┘

A server answers with the same code, encoder and index as this process would, so the hits and
their scores are the same (with the server otherwise idle, the query's forward pass runs alone as
it would here). What a server cannot be told (``--fusion``/``--alpha`` other than the default,
``--nprobe``, ``--ef-search``, ``--vectors``, ``--rescore-multiplier``) runs here; a recorded
server that does not answer is noted on stderr and the query runs here.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import UsageError
from .fusion import DEFAULT_FUSION, Fusion

MODES = ("dense", "bm25", "hybrid")
SERVER_MAX_K, SERVER_MAX_CHARS = 1000, 2000  # server.MAX_K, server.MAX_QUERY_CHARS


@dataclasses.dataclass(frozen=True)
class QueryConfig:
    index: str | None = None  # None: the only index in the index home
    index_dir: str | Path | None = None  # None: $L2V_SEARCH_INDEX_DIR or ./indexes
    k: int = 10
    instruction: str | None = None  # None: the encoder's query instruction
    mode: str | None = None  # None: the index's default (hybrid where it has BM25 and vectors)
    fusion: Fusion | None = None  # None: DEFAULT_FUSION
    nprobe: int | None = None
    ef_search: int | None = None
    vectors: str | None = None  # float | int8 | binary: refused unless it is the index's; None: no check
    rescore_multiplier: int | None = None  # int8/binary indexes; None: the one recorded in the index
    server: str | None = None  # a server's URL; None: a live server recorded in the index home, if any
    use_server: bool = True  # False: always search in this process
    dtype: str | None = None  # the query encoder's dtype; None: the index's (search.load_index_encoder)


@dataclasses.dataclass(frozen=True)
class Answer:
    index: str
    mode: str
    fusion: Fusion | None  # the fusion used (hybrid only)
    hits: list[list[Any]]  # per query, Hit (in process) or RemoteHit (server): id, score, title, text
    server: str | None = None  # the URL that answered; None: this process


def answer(queries: Sequence[str], cfg: QueryConfig, note: Callable[[str], None] | None = None) -> Answer:
    """Top-``cfg.k`` hits of each query; ``note`` receives one-line notes (default: stderr)."""
    note = note or (lambda line: print(line, file=sys.stderr, flush=True))
    if cfg.k <= 0:
        raise UsageError(f"-k must be positive, got {cfg.k}")
    if cfg.mode is not None and cfg.mode not in MODES:
        raise UsageError(f"unknown mode {cfg.mode!r}; valid: {', '.join(MODES)}")
    if any(not q.strip() for q in queries):
        raise UsageError("empty query")
    if cfg.use_server:
        url, name = _server(queries, cfg, note)
        if url is not None:
            from . import remote

            try:
                return _remote(url, name, queries, cfg)
            except remote.ServerUnreachable as e:
                if cfg.server is not None:
                    raise
                note(f"note: {e}; searching in this process")
    return _in_process(queries, cfg, note)


def _server(queries: Sequence[str], cfg: QueryConfig, note) -> tuple[str | None, str | None]:
    """The server to ask and the index name to send (``None, None``: search here)."""
    texts = [*queries, cfg.instruction or ""]
    portable = (cfg.fusion in (None, DEFAULT_FUSION) and cfg.nprobe is None and cfg.ef_search is None
                and cfg.vectors is None and cfg.dtype is None and cfg.rescore_multiplier is None
                and cfg.k <= SERVER_MAX_K
                and all(len(t) <= SERVER_MAX_CHARS for t in texts))
    if cfg.server is not None:
        if not portable:
            raise UsageError("--fusion/--alpha other than the default, --nprobe, --ef-search, --vectors, --dtype, "
                             "--rescore-multiplier, -k over "
                             f"{SERVER_MAX_K} and queries over {SERVER_MAX_CHARS} characters are not sent to a "
                             "server: drop --server to search in this process")
        return cfg.server, cfg.index or _only_served_index(cfg.server)
    if not portable:
        return None, None
    from . import serve_record
    from .names import index_home, resolve_index_name

    name = resolve_index_name(cfg.index, cfg.index_dir)
    url, notes = serve_record.find(index_home(cfg.index_dir), name)
    for line in notes:
        note(line)
    return url, name


def _only_served_index(url: str) -> str:
    """The server's one index (as in process: with several, ``--index`` must choose)."""
    from . import remote

    names = remote.indexes(url)
    if len(names) != 1:
        raise UsageError(f"{len(names)} indexes served at {url} ({', '.join(names) or 'none'}): "
                         "choose one with --index")
    return names[0]


def _remote(url: str, name: str, queries: Sequence[str], cfg: QueryConfig) -> Answer:
    from . import remote

    mode, hits = remote.search(url, name, queries, cfg.k, instruction=cfg.instruction, mode=cfg.mode)
    return Answer(name, mode, DEFAULT_FUSION if mode == "hybrid" else None, hits, url)


def _in_process(queries: Sequence[str], cfg: QueryConfig, note: Callable[[str], None] | None = None) -> Answer:
    from .search import SearchIndex

    # FAISS is read only for a dense side: a BM25 query imports neither faiss nor torch.
    idx = SearchIndex.open(cfg.index, cfg.index_dir, vectors=cfg.mode != "bm25")
    mode = idx.resolve_mode(cfg.mode)
    if mode != "bm25" and idx.dense:
        idx.load_encoder(note, **({"dtype": cfg.dtype} if cfg.dtype else {}))
    fusion = (cfg.fusion or DEFAULT_FUSION) if mode == "hybrid" else None
    hits = idx.search(list(queries), cfg.k, instruction=cfg.instruction, mode=mode, fusion=fusion,
                      nprobe=cfg.nprobe, ef_search=cfg.ef_search, vectors=cfg.vectors,
                      rescore_multiplier=cfg.rescore_multiplier)
    return Answer(idx.name, mode, fusion, hits)
