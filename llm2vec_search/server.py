"""HTTP search API (FastAPI): micro-batched query encoding over one or more indexes.

(No ``from __future__ import annotations`` here: FastAPI reads the request models defined
inside ``create_app`` from their evaluated annotations.)

    request ─┐
    request ─┼─ MicroBatcher (window, max batch) ─ one encoder forward ─ FAISS per index ─ responses
    request ─┘

One encoder is loaded per distinct encoder fingerprint and shared by the indexes built with it.
Model and FAISS work run in one dedicated thread (:data:`SearchService.worker`), never on the event
loop, and loading runs there too: an OpenMP thread team exists per calling thread, and a second
team anywhere in the process throttles the first (libgomp stops spinning once the process has
more threads than cores), which made a lone bf16 query forward ~1.8x slower on a 2-core CPU
(`benchmarks/README.md`, served path). The price: opening a new generation runs on that thread
too, so while one opens, requests to other indexes wait for it as well. Requests name indexes,
never paths.

Generations: before a request, the service checks whether its index has published a newer
generation (an ``--append``, a ``remove``, a rebuild) and, if so, opens it and switches; requests
already running finish on the generation they started with, which stays on disk until they are
done (:mod:`llm2vec_search.store`).
"""


import asyncio
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from .errors import L2VError, UsageError
from .protocols import TextEncoder
from .store import check_name

log = logging.getLogger(__name__)
MAX_QUERY_CHARS = 2000
MAX_K = 1000
MAX_BATCH_QUERIES = 256
MAX_HITS = 10_000  # k x queries in one request
MAX_RESPONSE_BYTES = 8 << 20  # hits' text included; larger answers are refused, not cut
MAX_BODY_BYTES = 1 << 20
MAX_EMBED_INPUTS = 512  # texts in one /v1/embeddings request
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 32  # texts per encoder forward pass
    window_ms: float = 5.0  # how long a batch waits for company, only while others are in flight
    micro_batching: bool = True
    max_queue: int = 64  # requests admitted at once (waiting or running); more get 503 at once
    request_timeout: float | None = 30.0  # seconds; then 504, and work still queued is dropped
    nprobe: int | None = None  # IVF lists visited (None: the index's own); per request too
    ef_search: int | None = None  # HNSW search depth (None: the index's own); per request too
    allowed_hosts: tuple[str, ...] | None = None  # Host header names served (any port); None: any
    # torch.compile each encoder's forward for batches of up to max_batch queries, warmed up at start
    # (minutes on a CPU); longer queries and larger batches run eager (llm2vec_search.compiled).
    compile: bool = False


class Overloaded(L2VError):
    """The service holds ``max_queue`` requests already (HTTP 503 with Retry-After)."""


class DeadlineExceeded(L2VError):
    """A request ran past ``request_timeout`` (HTTP 504); its queued work was dropped."""


def check_text(text: Any, what: str, max_chars: int | None = MAX_QUERY_CHARS) -> None:
    """A text the encoder can take: a non-blank string of well-formed Unicode, at most ``max_chars``.

    JSON can carry lone surrogates (``"\\ud800"``) that Python keeps in a ``str`` and the tokenizer
    rejects: they are refused here, before they reach a batch shared with other requests.
    """
    if not isinstance(text, str):
        raise UsageError(f"{what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise UsageError(f"{what} must be non-empty" + (f" and at most {max_chars} characters" if max_chars else ""))
    if max_chars is not None and len(text) > max_chars:
        raise UsageError(f"{what} must be non-empty and at most {max_chars} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not well-formed Unicode (a lone surrogate)") from None


def check_queries(queries: Sequence[str], k: int) -> None:
    for i, q in enumerate(queries):
        check_text(q, f"query {i}" if len(queries) > 1 else "query")
    if k * len(queries) > MAX_HITS:
        raise UsageError(f"k x queries = {k * len(queries)} hits, over the limit of {MAX_HITS} per request")


def encoder_name(spec: str) -> str:
    """How clients name an encoder: its alias or hub id, or a local directory's last part (never a path)."""
    return Path(spec).name if os.sep in spec or Path(spec).exists() else spec


class MicroBatcher:
    """Runs ``fn`` once on the items of concurrent calls, in a worker thread; each caller gets
    its own slice of the result.

    A call that finds the worker idle runs at once (no window to wait out). Calls arriving while a
    forward runs queue up and go together in the next one (up to ``max_batch`` items); when the last
    batch had company, the next waits up to ``window_ms`` for more. If a batch fails, each call in it
    is retried alone, so only the call that caused the failure gets the error. Calls cancelled
    while queued (a deadline) are dropped before their forward.
    """

    def __init__(self, fn: Callable[[list], np.ndarray], max_batch: int, window_ms: float,
                 executor: Executor | None = None):
        self.fn, self.max_batch, self.window = fn, max_batch, window_ms / 1000
        self.executor = executor  # where ``fn`` runs (None: asyncio's default thread pool)
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
        self.queue.put_nowait((items, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        company = False
        while True:
            pending = [await self.queue.get()]
            size = len(pending[0][0])
            deadline = loop.time() + (self.window if company else 0.0)
            while size < self.max_batch:
                if self.queue.empty():
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self.queue.get(), timeout)
                    except asyncio.TimeoutError:
                        break
                else:
                    nxt = self.queue.get_nowait()
                pending.append(nxt)
                size += len(nxt[0])
            pending = [(batch, fut) for batch, fut in pending if not fut.done()]  # past their deadline
            if pending:
                company = len(pending) > 1
                await self._run_batch(pending)

    async def _call(self, items: list) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.fn, items)

    async def _run_batch(self, pending: list) -> None:
        try:
            out = await self._call([x for batch, _ in pending for x in batch])
        except Exception as e:
            if len(pending) == 1:
                _settle(pending[0][1], error=e)
                return
            for batch, fut in pending:  # one at a time: only the call that fails gets an error
                if fut.done():
                    continue
                try:
                    _settle(fut, await self._call(batch))
                except Exception as e:
                    _settle(fut, error=e)
            return
        offset = 0
        for batch, fut in pending:
            _settle(fut, out[offset : offset + len(batch)])
            offset += len(batch)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.queue = self.task = None


def _settle(fut: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if fut.done():  # cancelled by its deadline meanwhile
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class SearchService:
    """Opened indexes, their shared encoders, one micro-batcher per encoder, and the limits.

    Texts with different instructions share a forward (the instruction travels with each text), so
    there is one batcher per encoder, however many instructions clients send.
    """

    def __init__(self, names: Sequence[str] | None, index_dir: str | Path | None, config: ServeConfig,
                 encoder_overrides: dict | None = None, progress: Callable[[str], None] | None = None):
        from .store import list_indexes

        names = [check_name(n) for n in names or [m.name for m in list_indexes(index_dir)]]
        if not names:
            raise UsageError("no index to serve (build one with `l2v-search index`)")
        self.config, self.index_dir, self.overrides = config, index_dir, encoder_overrides or {}
        self.progress = progress or log.info  # start-up lines (serve prints them on stderr)
        self.encoders: dict[str, TextEncoder] = {}
        self.encoder_names: dict[str, str] = {}  # name clients use -> fingerprint
        # Every model and FAISS call, loading included, runs on this one thread (module docstring).
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="l2v-model")
        try:
            self.indexes = {n: self.worker.submit(self._open, n).result() for n in names}
        except BaseException:
            self.worker.shutdown(wait=False)
            raise
        self.reloading: dict[str, asyncio.Lock] = {}
        self.failed: dict[str, Path | None] = {}  # a generation that did not open, not tried again
        self.batchers: dict[str, MicroBatcher] = {}
        self.active = 0  # requests admitted and not yet answered
        self.default = names[0]

    def _open(self, name: str):
        """Open the published generation of ``name``, sharing encoders by fingerprint."""
        from .search import SearchIndex

        idx = SearchIndex.open(name, self.index_dir)
        if idx.dense:
            fp = idx.encoder_fingerprint
            if fp not in self.encoders:
                self.encoders[fp] = idx.load_encoder(self.progress, **self.overrides)
                label = encoder_name(idx.manifest.encoder["spec"])
                self.encoder_names[label if label not in self.encoder_names else f"{label}@{fp}"] = fp
                if self.config.compile:
                    self._compile(self.encoders[fp], label)
            idx._encoder = self.encoders[fp]
        return idx

    def _compile(self, encoder: TextEncoder, label: str) -> None:
        """``serve --compile``: compile and warm up the encoder's forward before it serves (or keep it eager)."""
        if not hasattr(encoder, "compile"):
            self.progress(f"encoder {label}: no compiled forward for this kind of encoder; eager")
            return
        self.progress(f"encoder {label}: compiling the query forward (minutes on a CPU)")
        if compiled := encoder.compile(max_rows=self.config.max_batch):
            self.progress(f"encoder {label}: compiled {compiled.summary}")

    def index(self, name: str | None):
        name = name or self.default
        if name not in self.indexes:
            raise KeyError(name)
        return self.indexes[name]

    def encoder_label(self, fp: str) -> str:
        return next(name for name, f in self.encoder_names.items() if f == fp)

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
                    self.indexes[idx.name] = idx = await self.on_worker(self._open, idx.name)
                except L2VError as e:
                    self.failed[idx.name] = newest
                    log.warning("index %r: keeping the generation in use, the new one does not open: %s", idx.name, e)
        return idx

    async def on_worker(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on the model thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.worker, lambda: fn(*args, **kwargs))

    async def _bounded(self, work):
        """Run the coroutine ``work`` under the queue bound and the deadline."""
        if self.active >= self.config.max_queue:
            work.close()
            raise Overloaded(f"the server holds {self.active} requests already; retry shortly")
        self.active += 1
        try:
            return await asyncio.wait_for(work, self.config.request_timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"no answer within {self.config.request_timeout:g} s") from None
        finally:
            self.active -= 1

    async def encode(self, fp: str, texts: list[str], instruction: str | None) -> np.ndarray:
        """Vectors of ``texts`` with ``instruction`` (None or "": none), micro-batched per encoder."""
        encoder = self.encoders[fp]
        items = [(t, instruction or None) for t in texts]
        if not self.config.micro_batching:
            return await self.on_worker(_encode_items, encoder, items)
        if fp not in self.batchers:
            self.batchers[fp] = MicroBatcher(lambda batch: _encode_items(encoder, batch), self.config.max_batch,
                                             self.config.window_ms, self.worker)
        return await self.batchers[fp].submit(items)

    async def search(self, index: str | None, queries: list[str], k: int, instruction: str | None,
                     mode: str | None, nprobe: int | None = None, ef_search: int | None = None, **codes):
        """Top-``k`` hits per query. ``instruction`` None: the encoder's query instruction; "": none.
        ``codes``: ``vectors`` (checked against the index) and ``rescore_multiplier`` (int8/binary)."""
        check_queries(queries, k)
        return await self._bounded(self._search(index, queries, k, instruction, mode, nprobe, ef_search, codes))

    async def _search(self, index, queries, k, instruction, mode, nprobe, ef_search, codes):
        idx = await self.current(index)
        mode = idx.resolve_mode(mode)
        idx.check_vectors(**codes)  # before the encoder runs
        xq = None
        if mode != "bm25":
            if not idx.dense:
                raise UsageError(f"index {idx.name!r} is BM25-only: use mode bm25")
            fp = idx.encoder_fingerprint
            if instruction is None:
                instruction = self.encoders[fp].config.query_instruction
            xq = await self.encode(fp, queries, instruction)
        tuned = idx.tunable
        if nprobe is None and "nprobe" in tuned:  # the server's defaults, where they apply
            nprobe = self.config.nprobe
        if ef_search is None and "ef_search" in tuned:
            ef_search = self.config.ef_search
        return await self.on_worker(idx.search_embedded, xq, queries, k, mode=mode, nprobe=nprobe,
                                    ef_search=ef_search, **codes)

    async def embeddings(self, model: str | None, texts: list[str], input_type: str = "document"):
        """(vectors, token counts) of ``texts`` as documents (the encoder's document instruction) or
        queries (its query instruction); ``model`` None is the default index's encoder."""
        fp = self.resolve_encoder(model)
        for i, t in enumerate(texts):
            check_text(t, f"input {i}" if len(texts) > 1 else "input", None)
        return await self._bounded(self._embeddings(fp, texts, input_type))

    async def _embeddings(self, fp: str, texts: list[str], input_type: str):
        encoder = self.encoders[fp]
        cfg = encoder.config
        instruction = cfg.query_instruction if input_type == "query" else cfg.document_instruction
        counts = await asyncio.to_thread(encoder.count_tokens, texts)
        budget = encoder.text_budget(instruction or None)
        for i, n in enumerate(counts):
            if n > budget:
                raise UsageError(f"input {i} has {n} tokens, over this encoder's {budget} (max_length "
                                 f"{cfg.max_length}); shorten or split it")
        return await self.encode(fp, texts, instruction), counts

    def resolve_encoder(self, model: str | None) -> str:
        """The fingerprint of the encoder named ``model`` (by name or fingerprint; None: the default
        index's), KeyError for an unknown one."""
        if model is None:
            idx = self.index(None)
            if not idx.dense:
                raise KeyError("the default index has no encoder")
            return idx.encoder_fingerprint
        if model in self.encoder_names:
            return self.encoder_names[model]
        if model in self.encoders:
            return model
        raise KeyError(model)

    async def close(self) -> None:
        for b in self.batchers.values():
            await b.close()


def _encode_items(encoder, items: list[tuple[str, str | None]]) -> np.ndarray:
    """One forward over (text, instruction) pairs: texts with different instructions share it."""
    instructions = [i for _, i in items]
    same = all(i == instructions[0] for i in instructions)
    return encoder.encode([t for t, _ in items], instructions[0] if same else instructions)


class Guard:
    """ASGI middleware in front of the app: the Host check, then the body limit counted on the
    stream (a chunked upload has no Content-Length to trust).

    The body is read here (at most ``max_body`` bytes) and handed on whole. An oversize one is
    read to its end, up to ``drain`` bytes, before the 413, so that the client gets the answer
    instead of a reset connection; past that the connection is closed.
    """

    def __init__(self, app, max_body: int = MAX_BODY_BYTES, allowed_hosts: Sequence[str] | None = None,
                 drain: int = 16 * MAX_BODY_BYTES):
        self.app, self.max_body, self.drain = app, max_body, drain
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.allowed is not None and host_name(headers.get(b"host", b"").decode("latin-1")) not in self.allowed:
            return await _reply(send, 403, "host not allowed (serve --allowed-host NAME to add it)")
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _reply(send, 413, f"request body over {self.max_body} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            size += len(body := message.get("body", b""))
            if size <= self.max_body:
                chunks.append(body)
            elif size > self.drain:
                break
            if not message.get("more_body", False):
                break
        if size > self.max_body:
            return await _reply(send, 413, f"request body over {self.max_body} bytes")
        whole, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def host_name(host: str) -> str:
    """The name in a Host header, without the port: ``[::1]:8000`` -> ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _reply(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def create_app(service: SearchService):
    """The FastAPI application around a :class:`SearchService`, behind :class:`Guard`."""
    from fastapi import FastAPI
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
    Mode = Literal["dense", "bm25", "hybrid"] | None  # None: the index's default (hybrid with BM25)
    Tuning = Annotated[int | None, Field(None, ge=1, le=1 << 16)]
    Vectors = Literal["float", "int8", "binary"] | None  # None: the index's; else refused unless it is
    Rescore = Annotated[int | None, Field(None, ge=0, le=1000)]  # int8/binary; None: the index's

    class SearchRequest(BaseModel):
        query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
        k: int = Field(10, ge=1, le=MAX_K)
        instruction: str | None = Field(None, max_length=MAX_QUERY_CHARS)  # None: the default; "": none
        index: IndexName = None
        mode: Mode = None
        nprobe: Tuning = None
        ef_search: Tuning = None
        vectors: Vectors = None
        rescore_multiplier: Rescore = None

    class BatchRequest(BaseModel):
        queries: list[str] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)
        k: int = Field(10, ge=1, le=MAX_K)
        instruction: str | None = Field(None, max_length=MAX_QUERY_CHARS)
        index: IndexName = None
        mode: Mode = None
        nprobe: Tuning = None
        ef_search: Tuning = None
        vectors: Vectors = None
        rescore_multiplier: Rescore = None

    class EmbeddingsRequest(BaseModel):  # checked by hand: OpenAI's error shapes and codes
        input: Any = None
        model: Any = None
        encoding_format: Any = "float"
        dimensions: Any = None
        input_type: Any = None  # our extension: "query" embeds with the query instruction
        user: Any = None

    app = FastAPI(title="llm2vec-search", version="0.1.0",
                  description="Semantic search over LLM2Vec embeddings, BM25 and hybrid; OpenAI-compatible "
                              "/v1/embeddings.")

    def error(status: int, message: str, **headers) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        errors = [{"field": ".".join(str(x) for x in e["loc"][1:]), "message": e["msg"]} for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "details": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(_, exc: Exception):  # never a stack trace to clients
        log.error("internal error: %s: %s", type(exc).__name__, str(exc)[:300])
        return JSONResponse({"error": "internal error"}, status_code=500)

    def status_of(e: L2VError) -> tuple[int, dict]:
        if isinstance(e, Overloaded):
            return 503, {"Retry-After": "1"}
        return (504, {}) if isinstance(e, DeadlineExceeded) else (400, {})

    async def run(req, queries):
        try:
            check_queries(queries, req.k)
        except UsageError as e:
            return error(422, str(e))
        t0 = time.perf_counter()
        try:
            hits = await service.search(req.index, queries, req.k, req.instruction, req.mode, req.nprobe,
                                        req.ef_search, vectors=req.vectors, rescore_multiplier=req.rescore_multiplier)
        except KeyError:
            return error(404, f"unknown index {req.index!r}")
        except L2VError as e:
            status, headers = status_of(e)
            return error(status, str(e), **headers)
        except Exception as e:  # an internal fault: this request fails, with no detail for the client
            log.error("internal error: %s: %s", type(e).__name__, str(e)[:300])
            return error(500, "internal error")
        rows = [[h.to_dict() for h in row] for row in hits]
        size = sum(len(h["text"]) + len(h["title"]) + len(h["id"]) + 48 for row in rows for h in row)
        if size > MAX_RESPONSE_BYTES:
            return error(400, f"the answer would be about {size >> 20} MiB, over the {MAX_RESPONSE_BYTES >> 20} "
                              "MiB limit: ask for a smaller k or fewer queries")
        return rows, round((time.perf_counter() - t0) * 1000, 2), service.index(req.index).resolve_mode(req.mode)

    @app.post("/search")
    async def search(req: SearchRequest):
        res = await run(req, [req.query])
        if isinstance(res, JSONResponse):
            return res
        rows, took, mode = res
        return {"results": rows[0], "mode": mode, "took_ms": took}

    @app.post("/search/batch")
    async def search_batch(req: BatchRequest):
        res = await run(req, req.queries)
        if isinstance(res, JSONResponse):
            return res
        rows, took, mode = res
        return {"results": rows, "mode": mode, "took_ms": took}

    def openai_error(status: int, message: str, param: str | None = None, **headers) -> JSONResponse:
        kind = {404: "not_found_error", 503: "overloaded_error", 504: "timeout_error"}.get(status,
                                                                                            "invalid_request_error")
        return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}},
                            status_code=status, headers=headers or None)

    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingsRequest):
        """OpenAI-compatible embeddings; ``"input_type": "query"`` (our extension) embeds queries."""
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return openai_error(400, "input must be a string or a non-empty list of strings (token arrays are "
                                     "not accepted)", "input")
        if len(texts) > MAX_EMBED_INPUTS:
            return openai_error(400, f"{len(texts)} inputs, over the limit of {MAX_EMBED_INPUTS}", "input")
        if req.encoding_format not in ("float", "base64"):
            return openai_error(400, "encoding_format must be float or base64", "encoding_format")
        if req.input_type not in (None, "query", "document"):
            return openai_error(400, "input_type must be query or document", "input_type")
        if req.model is not None and not isinstance(req.model, str):
            return openai_error(400, "model must be a string", "model")
        try:
            fp = service.resolve_encoder(req.model)
        except KeyError:
            return openai_error(404, f"unknown model {req.model!r}; served: {', '.join(service.encoder_names)}",
                                "model")
        dim = service.encoders[fp].dim
        if req.dimensions is not None and req.dimensions != dim:
            return openai_error(400, f"this encoder gives {dim} dimensions only (no shortened embeddings)",
                                "dimensions")
        try:
            vectors, counts = await service.embeddings(fp, texts, req.input_type or "document")
        except L2VError as e:
            status, headers = status_of(e)
            return openai_error(status, str(e), "input" if status == 400 else None, **headers)
        except Exception as e:
            log.error("internal error: %s: %s", type(e).__name__, str(e)[:300])
            return openai_error(500, "internal error")
        if req.encoding_format == "base64":
            import base64

            data = [base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
        else:
            data = vectors.tolist()
        return {"object": "list", "model": service.encoder_label(fp),
                "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
                "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "llm2vec-search"}
                                           for name in service.encoder_names]}

    @app.get("/indexes")
    async def indexes():
        return {"default": service.default, "indexes": [
            {"name": n, "documents": i.size, "dense": i.dense, "default_mode": i.default_mode,
             "encoder": {"name": service.encoder_label(i.encoder_fingerprint),
                         "fingerprint": i.encoder_fingerprint} if i.dense else None,
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

    return Guard(app, MAX_BODY_BYTES, service.config.allowed_hosts)
