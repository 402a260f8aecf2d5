"""``l2v-search serve``: the HTTP API and search page."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from . import app, err


@app.command("serve")
def serve_cmd(
    index: Annotated[list[str] | None, typer.Option("--index", help="Index to serve (repeat; default: all).")] = None,
    index_dir: Annotated[str | None, typer.Option(help="Index home (default ./indexes).")] = None,
    host: Annotated[str, typer.Option(help="Bind address; loopback unless you choose otherwise.")] = "127.0.0.1",
    port: int = 8000,
    max_batch: Annotated[int, typer.Option(help="Queries per encoder forward pass.")] = 32,
    batch_window_ms: Annotated[float, typer.Option(help="Wait for more queries this long.")] = 5.0,
    no_micro_batching: Annotated[bool, typer.Option("--no-micro-batching", help="One forward per request.")] = False,
) -> None:
    """Serve indexes over HTTP: POST /search, POST /search/batch, GET /indexes, GET /health, / (page).

    Example: l2v-search serve --index scifact --port 8000
    """
    try:
        import uvicorn

        from ..server import SearchService, ServeConfig, create_app
    except ImportError:
        raise UsageError("serving needs the `serve` extra: pip install 'llm2vec-search[serve]'") from None
    if max_batch < 1 or batch_window_ms < 0:
        raise UsageError("--max-batch must be >= 1 and --batch-window-ms >= 0")
    service = SearchService(index, index_dir, ServeConfig(max_batch, batch_window_ms, not no_micro_batching))
    err.print(f"serving {', '.join(service.indexes)} on http://{host}:{port}")
    from .. import serve_record
    from ..store import index_home

    # A record in the index home lets `l2v-search query` find this server (removed on a clean exit).
    local = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    record = serve_record.write(index_home(index_dir), f"http://{local}:{port}", list(service.indexes))
    app = create_app(service)
    app.add_event_handler("shutdown", lambda: serve_record.remove(record))  # uvicorn re-raises SIGTERM after it
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)
    finally:
        serve_record.remove(record)
