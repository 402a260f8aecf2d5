"""``l2v-search query``: search an index, in this process or through a running server."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from .app import app, err, out
from .index import IndexDir
from .options import Alpha, FusionMethod, Json, Mode, QueryDtype, RescoreMultiplier, make_fusion, print_json


@app.command("query")
def query_cmd(
    text: Annotated[str | None, typer.Argument(help="The query.")] = None,
    index: Annotated[str | None, typer.Option("--index", help="Index name (optional with one index).")] = None,
    index_dir: IndexDir = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Results to return.")] = 10,
    instruction: Annotated[str | None, typer.Option("--instruction", "-i", help="Query instruction.")] = None,
    mode: Mode = None,
    fusion: FusionMethod = None,
    alpha: Alpha = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    vectors: Annotated[str | None, typer.Option(help="float | int8 | binary: the vector type the index must "
                                                "hold (refused otherwise).")] = None,
    rescore_multiplier: RescoreMultiplier = None,
    dtype: QueryDtype = None,
    queries: Annotated[str | None, typer.Option("--queries", help="Batch: JSONL or TSV of id and text.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Batch output: jsonl | trec.")] = "jsonl",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Batch output file (default stdout).")] = None,
    server: Annotated[str | None, typer.Option("--server", help="Search through the `l2v-search serve` at this URL "
                                               "(default: a live server recorded in the index home, if any).")] = None,
    no_server: Annotated[bool, typer.Option("--no-server", help="Always search in this process.")] = False,
    json_: Json = False,
) -> None:
    """Search an index with the encoder it was built with (through a running server when one serves it).

    Example: l2v-search query "How do vaccines work?" --index demo -k 5
    """
    from ..query import QueryConfig, answer
    from ..runs import check_format, format_run, read_queries, write_output

    if (text is None) == (queries is None):
        raise UsageError("give a query TEXT or --queries FILE (not both)")
    if server is not None and no_server:
        raise UsageError("give --server URL or --no-server (not both)")
    if k <= 0:
        raise UsageError(f"-k must be positive, got {k}")
    cfg = QueryConfig(index, index_dir, k, instruction, mode, make_fusion(fusion, alpha), nprobe, ef_search,
                      vectors, rescore_multiplier, server, not no_server, dtype)
    if queries is not None:
        check_format(fmt)
        rows = read_queries(queries)
        result = answer([t for _, t in rows], cfg)
        write_output(format_run(rows, result.hits, fmt), output)
        if output is not None:
            err.print(f"{len(rows)} queries -> {output}")
        return
    result = answer([text], cfg)
    hits = result.hits[0]
    if json_:
        print_json({"index": result.index, "query": text, "mode": result.mode,
                    "fusion": result.fusion.describe() if result.fusion else None,
                    "results": [h.to_dict() for h in hits]})
        return
    from rich.table import Table

    table = Table("#", "score", "id", "title", "snippet", title=f"{result.index} ({result.mode}): {text}",
                  show_lines=True)
    for rank, h in enumerate(hits, 1):
        snippet = " ".join(h.text.split())[:220] + ("…" if len(h.text) > 220 else "")
        table.add_row(str(rank), f"{h.score:.4f}", h.id, h.title[:60], snippet)
    out.print(table)
