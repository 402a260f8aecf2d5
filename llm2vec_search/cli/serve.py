"""``l2v-search serve``: the HTTP API and search page."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from .app import app, err
from .options import QueryDtype


@app.command("serve")
def serve_cmd(
    index: Annotated[list[str] | None, typer.Option("--index", help="Index to serve (repeat; default: all).")] = None,
    index_dir: Annotated[str | None, typer.Option(help="Index home (default ./indexes).")] = None,
    host: Annotated[str, typer.Option(help="Bind address; loopback unless you choose otherwise.")] = "127.0.0.1",
    port: int = 8000,
    max_batch: Annotated[int, typer.Option(help="Queries per encoder forward pass.")] = 32,
    batch_window_ms: Annotated[float, typer.Option(help="Wait for more queries this long.")] = 5.0,
    no_micro_batching: Annotated[bool, typer.Option("--no-micro-batching", help="One forward per request.")] = False,
    max_queue: Annotated[int, typer.Option(help="Requests held at once (waiting or running); more get 503.")] = 64,
    request_timeout: Annotated[float, typer.Option(help="Seconds before a request gets 504 (0: none).")] = 30.0,
    nprobe: Annotated[int | None, typer.Option(help="IVF lists visited (default: the index's own).")] = None,
    ef_search: Annotated[int | None, typer.Option(help="HNSW search depth (default: the index's own).")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", help="Host header name to serve besides localhost, 127.0.0.1, [::1] (repeat).")] = None,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the query forward for batches up to "
                                           "--max-batch, warmed up before serving (minutes on a CPU).")] = False,
    dtype: QueryDtype = None,
) -> None:
    """Serve indexes over HTTP: POST /search, POST /search/batch, POST /v1/embeddings (OpenAI-compatible),
    GET /indexes, GET /health, / (page).

    Examples:
      l2v-search serve --index scifact --port 8000
      l2v-search serve --index scifact --compile
    """
    try:
        import uvicorn

        from ..server import SearchService, ServeConfig, create_app
    except ImportError:
        raise UsageError("serving needs the `serve` extra: pip install 'llm2vec-search[serve]'") from None
    if max_batch < 1 or batch_window_ms < 0:
        raise UsageError("--max-batch must be >= 1 and --batch-window-ms >= 0")
    if max_queue < 1 or request_timeout < 0 or (nprobe is not None and nprobe < 1) or (
            ef_search is not None and ef_search < 1):
        raise UsageError("--max-queue, --nprobe and --ef-search must be >= 1 and --request-timeout >= 0")
    config = ServeConfig(max_batch, batch_window_ms, not no_micro_batching, max_queue, request_timeout or None,
                         nprobe, ef_search, allowed_hosts(host, allowed_host or []), compile=compile_)
    service = SearchService(index, index_dir, config, encoder_overrides={"dtype": dtype} if dtype else None,
                            progress=err.print)
    err.print(f"serving {', '.join(service.indexes)} on http://{host}:{port}")
    from .. import serve_record
    from ..store import index_home

    # A record in the index home lets `l2v-search query` find this server (removed on a clean exit).
    local = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    record = serve_record.write(index_home(index_dir), f"http://{local}:{port}", list(service.indexes))
    app = create_app(service)
    # uvicorn re-raises SIGTERM after shutting down, so the `finally` below may not run: remove it on shutdown.
    inner = getattr(app, "app", app)  # the FastAPI app behind server.Guard
    inner.on_event("shutdown")(lambda: serve_record.remove(record))  # as server.py registers its own
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)
    finally:
        serve_record.remove(record)


def allowed_hosts(bind: str, extra: list[str]) -> tuple[str, ...] | None:
    """Host header names served: on loopback, the loopback names and ``extra`` (a page elsewhere
    cannot reach us through DNS rebinding); bound elsewhere, ``extra`` if given, else any."""
    from ..server import LOOPBACK_HOSTS

    if bind in ("127.0.0.1", "localhost", "::1") or bind.startswith("127."):
        return (*LOOPBACK_HOSTS, *extra)
    return tuple(extra) or None
