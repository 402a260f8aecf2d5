"""``l2v-search index``, ``l2v-search remove`` and ``l2v-search indexes``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import UsageError
from .app import app, err, out
from .options import DEFAULT_MODEL, Dtype, Json, Model, RescoreMultiplier, print_json

IndexDir = Annotated[
    str | None, typer.Option("--index-dir", help="Index home (default $L2V_SEARCH_INDEX_DIR or ./indexes).")
]
NoWait = Annotated[bool, typer.Option("--no-wait", help="Fail at once when another process is writing the "
                                      "index (default: wait for it).")]


def _parse_part(value: str | None) -> tuple[int, int]:
    if value is None:
        return (0, 1)
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes I/N (e.g. 0/4), got {value!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {value}: need 0 <= I < N")
    return (i, n)


@app.command("index")
def index_cmd(
    corpus: Annotated[str | None, typer.Argument(help="BEIR folder, jsonl, csv/tsv, parquet, txt/md, folder.")] = (
        None
    ),
    name: Annotated[str | None, typer.Option(help="Index name (default: the corpus folder's name).")] = None,
    model: Model = DEFAULT_MODEL,
    index_dir: IndexDir = None,
    index_type: Annotated[str | None, typer.Option(help="FAISS factory string (default: by corpus size).")] = None,
    vectors: Annotated[str, typer.Option(help="float | int8 (scalar-quantized) | binary (sign bits): the codes "
                                         "FAISS holds; int8/binary rescore with the float vectors on disk.")] = "float",
    rescore_multiplier: RescoreMultiplier = None,
    sample: Annotated[bool, typer.Option("--sample", help="Index the bundled sample corpus.")] = False,
    id_field: str | None = None,
    text_field: str | None = None,
    title_field: str | None = None,
    skip_invalid: Annotated[bool, typer.Option(help="Skip (and count) malformed rows instead of failing.")] = False,
    chunk_tokens: Annotated[int | None, typer.Option(help="Tokens per window of a long document.")] = None,
    chunk_overlap: Annotated[int, typer.Option(help="Tokens shared by consecutive windows.")] = 64,
    docs_per_shard: Annotated[int | None, typer.Option(help="Documents per shard: the unit of work that workers "
                                                       "share and a rerun resumes from (default 128).")] = None,
    memory_budget_gb: Annotated[float | None, typer.Option("--memory-budget", help="GB for the vectors.")] = None,
    shard: Annotated[str | None, typer.Option("--shard", help="I/N: embed only this process's shards.")] = None,
    no_bm25: Annotated[bool, typer.Option("--no-bm25", help="Skip the BM25 index.")] = False,
    on_disk: Annotated[bool, typer.Option("--on-disk", help="FAISS as an IVF whose lists stay on disk, memory-"
                                          "mapped at query time (--index-type IVF<nlist>,<codec>; default lists "
                                          "4*sqrt(n), Flat).")] = False,
    append: Annotated[bool, typer.Option("--append", help="Add new and changed documents to an existing index "
                                         "(by id and content hash; unchanged ones are skipped).")] = False,
    workers: Annotated[int | None, typer.Option(help="Encoder processes (local) or actors (ray).")] = None,
    devices: Annotated[str | None, typer.Option(help="One process per device, e.g. cuda:0,cuda:1.")] = None,
    engine: Annotated[str, typer.Option(help="local | ray (actors on a Ray cluster).")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster (auto, host:port); default local.")] = None,
    no_wait: NoWait = False,
    dtype: Dtype = "auto",
    json_: Json = False,
) -> None:
    """Embed a corpus into Parquet shards and build FAISS (+ BM25) indexes; resumes if interrupted.

    Examples:
      l2v-search index ../shared/data/scifact --name scifact
      l2v-search index ../shared/data/scifact --name scifact-bin --vectors binary --rescore-multiplier 4
    """
    from ..corpus import Fields
    from ..embed import ChunkConfig
    from ..index import build_index, sample_corpus
    from ..store import IndexManifest, check_name

    if sample == (corpus is not None):
        raise UsageError("give a CORPUS path or --sample (not both)")
    path = sample_corpus() if sample else Path(corpus)
    name = check_name(name) if name is not None else ("sample" if sample else None)
    if append:
        if vectors != "float" or rescore_multiplier is not None:
            raise UsageError("--append keeps the index's vector type: leave out --vectors and --rescore-multiplier")
        _append(path, name, index_dir, Fields(id_field, text_field, title_field), skip_invalid, not no_wait, json_)
        return
    chunk = ChunkConfig(chunk_tokens, chunk_overlap, **({} if docs_per_shard is None else
                                                         {"docs_per_shard": docs_per_shard}))
    budget = int(memory_budget_gb * 2**30) if memory_budget_gb else None
    if workers is not None or devices or engine != "local" or ray_address:  # see distributed.py
        from ..distributed import ScaleConfig, build_index_scaled, parse_devices

        if shard is not None or on_disk:
            raise UsageError("--shard and --on-disk cannot be combined with --workers/--devices/--engine")
        folder = build_index_scaled(path, name, index_dir, model, index_type, scale=ScaleConfig(
            engine, parse_devices(devices), workers, ray_address=ray_address),
            fields=Fields(id_field, text_field, title_field), skip_invalid=skip_invalid,
            chunk=chunk, memory_budget=budget, bm25=not no_bm25, wait=not no_wait, vectors=vectors,
            rescore_multiplier=rescore_multiplier, encoder_overrides={"dtype": dtype})
    else:
        folder = build_index(path, name, index_dir, model, index_type,
                             fields=Fields(id_field, text_field, title_field), skip_invalid=skip_invalid,
                             chunk=chunk, memory_budget=budget, bm25=not no_bm25, part=_parse_part(shard),
                             wait=not no_wait, on_disk=on_disk, vectors=vectors,
                             rescore_multiplier=rescore_multiplier, encoder_overrides={"dtype": dtype})
    manifest = IndexManifest.read(folder)
    if manifest is None:
        err.print(f"embedded shard part {shard}; run without --shard to finish the index")
        return
    if json_:
        print_json(manifest.as_dict())
        return
    c, fx = manifest.corpus, manifest.faiss
    codes = f", {fx.vector_type} codes, rescoring x{fx.rescore_multiplier}" if fx.vector_type != "float" else ""
    err.print(f"[green]index {manifest.name!r}[/green] at {folder.parent}: {c.documents} documents, "
              f"{fx.vectors} vectors ({fx.factory}{', on disk' if fx.on_disk else ''}{codes}), "
              f"{c.empty_skipped} empty and {c.invalid_skipped} invalid rows skipped, "
              f"{manifest.timings['total_seconds']:.0f}s ({folder.name})", highlight=False, soft_wrap=True)


def _append(path: Path, name: str | None, index_dir: str | None, fields, skip_invalid: bool, wait: bool,
            json_: bool) -> None:
    from ..store import safe_name
    from ..update import append_documents

    if not path.exists():
        raise UsageError(f"corpus not found: {path}")
    name = name or safe_name(path.name if path.is_dir() else path.stem)
    folder, stats = append_documents(path, name, index_dir, fields=fields, skip_invalid=skip_invalid, wait=wait)
    _report_update(folder, stats, json_)


def _report_update(folder: Path, stats, json_: bool) -> None:
    import dataclasses

    from ..store import IndexManifest

    manifest = IndexManifest.read(folder)
    if json_:
        print_json({"index": manifest.name, **dataclasses.asdict(stats),
                    "documents": manifest.corpus.documents, "vectors": manifest.faiss.vectors})
        return
    err.print(f"[green]index {manifest.name!r}[/green]: {stats.added} added, {stats.changed} changed, "
              f"{stats.unchanged} unchanged, {stats.removed} removed; {stats.embedded} embedded, "
              f"{stats.reused} reused; now {manifest.corpus.documents} documents", highlight=False)


@app.command("remove")
def remove_cmd(
    ids: Annotated[list[str] | None, typer.Argument(help="Document ids to remove.")] = None,
    index: Annotated[str | None, typer.Option("--index", help="Index name (optional with one index).")] = None,
    index_dir: IndexDir = None,
    ids_file: Annotated[str | None, typer.Option("--ids-file", help="File with one id per line.")] = None,
    no_wait: NoWait = False,
    json_: Json = False,
) -> None:
    """Remove documents by id; the other documents keep their vectors (nothing is re-embedded).

    Example: l2v-search remove doc-17 doc-42 --index docs
    """
    from ..names import resolve_index_name
    from ..update import remove_documents

    wanted = list(ids or [])
    if ids_file is not None:
        p = Path(ids_file)
        if not p.is_file():
            raise UsageError(f"ids file not found: {p}")
        wanted += [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not wanted:
        raise UsageError("give document ids to remove (arguments or --ids-file)")
    folder, stats = remove_documents(wanted, resolve_index_name(index, index_dir), index_dir, wait=not no_wait)
    _report_update(folder, stats, json_)


@app.command("indexes")
def indexes_cmd(index_dir: IndexDir = None, json_: Json = False) -> None:
    """List the indexes in the index home."""
    from ..store import list_indexes

    found = list_indexes(index_dir)
    if json_:
        print_json({"indexes": [{"name": m.name, "documents": m.corpus.documents,
                                 "vectors": m.faiss.vectors if m.dense else 0,
                                 "encoder": m.encoder["spec"] if m.dense else None} for m in found]})
        return
    table = Table("name", "documents", "vectors", "faiss", "encoder")
    for m in found:
        table.add_row(m.name, str(m.corpus.documents), str(m.faiss.vectors if m.dense else 0),
                      m.faiss.factory if m.dense else "-", m.encoder["spec"] if m.dense else "BM25 only")
    out.print(table)
