"""HTTP search API (FastAPI): micro-batched query encoding over one or more indexes.

(No ``from __future__ import annotations`` here: FastAPI reads the request models defined
inside ``create_app`` from their evaluated annotations.)

    request ─┐
    request ─┼─ MicroBatcher (window, max batch) ─ one encoder forward ─ FAISS per index ─ responses
    request ─┘

One encoder is loaded per distinct encoder fingerprint and shared by the indexes built with it.
Model and FAISS work run in a worker thread, never on the event loop. Requests name indexes,
never paths.

Generations: before a request, the service checks whether its index has published a newer
generation (an ``--append``, a ``remove``, a rebuild) and, if so, opens it and switches; requests
already running finish on the generation they started with, which stays on disk until they are
done (:mod:`llm2vec_search.store`).
"""


import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from .errors import L2VError, UsageError
from .protocols import TextEncoder
from .store import check_name

log = logging.getLogger(__name__)
MAX_QUERY_CHARS = 2000
MAX_K = 1000
MAX_BATCH_QUERIES = 256
MAX_BODY_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 32  # queries per encoder forward pass
    window_ms: float = 5.0  # how long the first query of a batch waits for company
    micro_batching: bool = True


class MicroBatcher:
    """Collects concurrent calls for up to ``window_ms`` (or ``max_batch`` items) and runs ``fn``
    once on all of them in a worker thread; each caller gets its own slice of the result."""

    def __init__(self, fn: Callable[[list], np.ndarray], max_batch: int, window_ms: float):
        self.fn, self.max_batch, self.window = fn, max_batch, window_ms / 1000
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    async def submit(self, items: list) -> np.ndarray:
        loop = asyncio.get_running_loop()
        # The queue and its worker task belong to one event loop: start them on first use, and
        # again when the loop changed (a server restarted in-process) or the worker stopped.
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.queue = asyncio.Queue()
            self.task = loop.create_task(self._run())
        future = loop.create_future()
        await self.queue.put((items, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self.queue.get()]
            size = len(pending[0][0])
            deadline = loop.time() + self.window
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                pending.append(nxt)
                size += len(nxt[0])
            items = [x for batch, _ in pending for x in batch]
            try:
                out = await asyncio.to_thread(self.fn, items)
            except Exception as e:  # hand the error to every waiting caller
                for _, fut in pending:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            offset = 0
            for batch, fut in pending:
                if not fut.done():
                    fut.set_result(out[offset : offset + len(batch)])
                offset += len(batch)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.queue = self.task = None


class SearchService:
    """Opened indexes, their shared encoders, and one micro-batcher per (encoder, instruction)."""

    def __init__(self, names: Sequence[str] | None, index_dir: str | Path | None, config: ServeConfig,
                 encoder_overrides: dict | None = None):
        from .store import list_indexes

        names = [check_name(n) for n in names or [m.name for m in list_indexes(index_dir)]]
        if not names:
            raise UsageError("no index to serve (build one with `l2v-search index`)")
        self.config, self.index_dir, self.overrides = config, index_dir, encoder_overrides or {}
        self.encoders: dict[str, TextEncoder] = {}
        self.indexes = {n: self._open(n) for n in names}
        self.reloading: dict[str, asyncio.Lock] = {}
        self.failed: dict[str, Path | None] = {}  # a generation that did not open, not tried again
        self.batchers: dict[tuple[str, str | None], MicroBatcher] = {}
        self.default = names[0]

    def _open(self, name: str):
        """Open the published generation of ``name``, sharing encoders by fingerprint."""
        from .search import SearchIndex

        idx = SearchIndex.open(name, self.index_dir)
        if idx.dense:
            fp = idx.encoder_fingerprint
            if fp not in self.encoders:
                self.encoders[fp] = idx.load_encoder(**self.overrides)
            idx._encoder = self.encoders[fp]
        return idx

    def index(self, name: str | None):
        name = name or self.default
        if name not in self.indexes:
            raise KeyError(name)
        return self.indexes[name]

    async def current(self, name: str | None):
        """The index for a request: switched to its newest generation first if one was published.
        A generation that fails to open is logged once and the one in use kept."""
        idx = self.index(name)
        if idx.is_current() or self.failed.get(idx.name) == idx.store.current():
            return idx
        lock = self.reloading.setdefault(idx.name, asyncio.Lock())
        async with lock:  # one reload at a time; the requests waiting here then see the new one
            idx = self.indexes[idx.name]
            if not idx.is_current() and self.failed.get(idx.name) != (newest := idx.store.current()):
                try:
                    self.indexes[idx.name] = idx = await asyncio.to_thread(self._open, idx.name)
                except L2VError as e:
                    self.failed[idx.name] = newest
                    log.warning("index %r: keeping the generation in use, the new one does not open: %s", idx.name, e)
        return idx

    def _embed(self, fp: str, instruction: str | None) -> Callable[[list[str]], np.ndarray]:
        encoder = self.encoders[fp]
        return lambda queries: encoder.encode_queries(queries, instruction)

    async def embed(self, idx, queries: list[str], instruction: str | None) -> np.ndarray:
        fp = idx.encoder_fingerprint
        if not self.config.micro_batching:
            return await asyncio.to_thread(self._embed(fp, instruction), queries)
        key = (fp, instruction)
        if key not in self.batchers:
            self.batchers[key] = MicroBatcher(self._embed(fp, instruction), self.config.max_batch,
                                              self.config.window_ms)
        return await self.batchers[key].submit(queries)

    async def search(self, index: str | None, queries: list[str], k: int, instruction: str | None,
                     mode: str | None):
        idx = await self.current(index)
        mode = idx.resolve_mode(mode)
        xq = None
        if mode != "bm25":
            if not idx.dense:
                raise UsageError(f"index {idx.name!r} is BM25-only: use mode bm25")
            if instruction is None:
                instruction = self.encoders[idx.encoder_fingerprint].config.query_instruction
            instr = instruction
            xq = await self.embed(idx, queries, instr or None)
        return await asyncio.to_thread(idx.search_embedded, xq, queries, k, mode=mode)

    async def close(self) -> None:
        for b in self.batchers.values():
            await b.close()


def create_app(service: SearchService):
    """The FastAPI application around a :class:`SearchService`."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from pydantic import AfterValidator, BaseModel, Field

    def valid_name(name: str | None) -> str | None:
        if name in (".", ".."):
            raise ValueError("not an index name")
        return name

    # Index names as everywhere ([A-Za-z0-9_.-], not . or ..): names, never paths.
    IndexName = Annotated[str | None, Field(max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$"),
                          AfterValidator(valid_name)]

    class SearchRequest(BaseModel):
        query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
        k: int = Field(10, ge=1, le=MAX_K)
        instruction: str | None = Field(None, max_length=MAX_QUERY_CHARS)
        index: IndexName = None
        mode: Literal["dense", "bm25", "hybrid"] | None = None  # None: the index's default (hybrid with BM25)

    class BatchRequest(BaseModel):
        queries: list[str] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)
        k: int = Field(10, ge=1, le=MAX_K)
        instruction: str | None = Field(None, max_length=MAX_QUERY_CHARS)
        index: IndexName = None
        mode: Literal["dense", "bm25", "hybrid"] | None = None

    app = FastAPI(title="llm2vec-search", version="0.1.0",
                  description="Semantic search over LLM2Vec embeddings, BM25 and hybrid.")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"error": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        errors = [{"field": ".".join(str(x) for x in e["loc"][1:]), "message": e["msg"]} for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "details": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(_, exc: Exception):  # never a stack trace to clients
        return JSONResponse({"error": "internal error"}, status_code=500)

    async def run(index, queries, k, instruction, mode):
        for q in queries:
            if not q.strip() or len(q) > MAX_QUERY_CHARS:
                return JSONResponse({"error": "queries must be non-empty and at most "
                                              f"{MAX_QUERY_CHARS} characters"}, status_code=422)
        t0 = time.perf_counter()
        try:
            hits = await service.search(index, queries, k, instruction, mode)
        except KeyError:
            return JSONResponse({"error": f"unknown index {index!r}"}, status_code=404)
        except L2VError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return hits, round((time.perf_counter() - t0) * 1000, 2), service.index(index).resolve_mode(mode)

    @app.post("/search")
    async def search(req: SearchRequest):
        res = await run(req.index, [req.query], req.k, req.instruction, req.mode)
        if isinstance(res, JSONResponse):
            return res
        hits, took, mode = res
        return {"results": [h.to_dict() for h in hits[0]], "mode": mode, "took_ms": took}

    @app.post("/search/batch")
    async def search_batch(req: BatchRequest):
        res = await run(req.index, req.queries, req.k, req.instruction, req.mode)
        if isinstance(res, JSONResponse):
            return res
        hits, took, mode = res
        return {"results": [[h.to_dict() for h in row] for row in hits], "mode": mode, "took_ms": took}

    @app.get("/indexes")
    async def indexes():
        return {"default": service.default, "indexes": [
            {"name": n, "documents": i.size, "dense": i.dense, "default_mode": i.default_mode,
             "encoder": i.manifest.encoder["spec"] if i.dense else None,
             "faiss": i.manifest.faiss.factory if i.dense else None}
            for n, i in service.indexes.items()]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "indexes": len(service.indexes)}

    page = Path(str(resources.files("llm2vec_search") / "static" / "index.html"))

    @app.get("/", include_in_schema=False)
    async def home():
        return FileResponse(page, media_type="text/html")

    @app.on_event("shutdown")
    async def shutdown():
        await service.close()

    return app
