"""Index with several encoder processes: one per device (``--devices``) or ``--workers`` CPU processes,
or Ray actors across machines (``--engine ray``, see ray_engine.py).

Every engine writes the same layout as a single process (embed.py): the documents table, then
shard *i* from documents ``[i*S, (i+1)*S)`` embedded by ``embed_shard`` with the run's
fingerprint, then FAISS, BM25 and the manifest via ``index.build_index``, which finds every
shard done and only builds the indexes. So the output equals a single-process run's (same ids
and chunks; vectors equal on the same device and dtype), and a killed run resumes from its
finished shards with any engine.

Order of work, so that bad input writes nothing: check the options and devices, connect to
Ray, load the encoder (on CPU in this process, for its fingerprint and the final build), stage
the documents table and check the worker count against the shards, and only then touch the
index folder.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from .corpus import Fields, read_corpus
from .embed import DOCS_FILE, ChunkConfig, embed_shard, read_documents, shard_is_done, shard_path, write_documents
from .errors import L2VError, UsageError
from .index import MANIFEST, build_index, index_home
from .manifest import fingerprint, read_json
from .models import DEFAULT_ENCODER

ENGINES = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class ScaleConfig:
    engine: str = "local"  # local: processes on this machine; ray: actors on a Ray cluster
    devices: tuple[str, ...] = ()  # local: one process per device (cuda:0, cuda:1, cpu ...)
    workers: int | None = None  # local: processes (round-robin over devices; CPU when none); ray: actors
    threads_per_worker: int | None = None  # torch threads per CPU process; None: cores // workers
    ray_address: str | None = None  # None: start a local Ray; "auto" or host:port: join a cluster
    ray_gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0


def parse_devices(value: str | None) -> tuple[str, ...]:
    """``cuda:0,cuda:1`` -> ("cuda:0", "cuda:1"); each checked to exist here."""
    from .encoder import select_device

    if not value:
        return ()
    devices = tuple(d.strip() for d in value.split(",") if d.strip())
    if not devices:
        raise UsageError(f"--devices: no device in {value!r}; e.g. cuda:0,cuda:1 or cpu")
    for d in devices:
        if d == "auto":
            raise UsageError("--devices takes explicit devices (cuda:0, cpu ...), not auto")
        select_device(d)  # raises UsageError for a device that does not exist
    return devices


def worker_devices(cfg: ScaleConfig) -> list[str]:
    """The device of each local worker process."""
    if cfg.workers is not None and cfg.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {cfg.workers}")
    devices = list(cfg.devices) or ["cpu"]
    n = cfg.workers if cfg.workers is not None else len(devices)
    return [devices[i % len(devices)] for i in range(n)]


def build_index_scaled(
    corpus: str | Path,
    name: str | None = None,
    index_dir: str | Path | None = None,
    model: str = DEFAULT_ENCODER,
    index_type: str | None = None,
    *,
    scale: ScaleConfig = ScaleConfig(),
    fields: Fields = Fields(),
    skip_invalid: bool = False,
    chunk: ChunkConfig = ChunkConfig(),
    memory_budget: int | None = None,
    bm25: bool = True,
    encoder_overrides: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> Path:
    """Like :func:`index.build_index`, with the embedding spread over processes or Ray actors."""
    from .encoder import load_encoder

    if scale.engine not in ENGINES:
        raise UsageError(f"unknown --engine {scale.engine!r}; valid: {', '.join(ENGINES)}")
    overrides = {k: v for k, v in (encoder_overrides or {}).items() if k != "device"}
    if scale.engine == "local":
        devices = worker_devices(scale)
        for d in set(devices):
            parse_devices(d)
    else:
        from .ray_engine import connect

        if scale.devices:
            raise UsageError("--devices is for the local engine; Ray places actors on its own GPUs")
        if scale.workers is not None and scale.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {scale.workers}")
        connect(scale.ray_address)
    corpus = Path(corpus)
    name = name or (corpus.name if corpus.is_dir() else corpus.stem)
    out = index_home(index_dir) / name
    # The parent's copy only gives the fingerprint and builds FAISS at the end: keep it on CPU.
    encoder = load_encoder(model, **overrides, device="cpu")

    created = not out.exists()
    staged = out / "documents.staged.parquet"
    try:
        out.mkdir(parents=True, exist_ok=True)
        n_docs, corpus_fp = write_documents(read_corpus(corpus, fields, skip_invalid=skip_invalid), staged)
        n_shards = max(1, -(-n_docs // chunk.docs_per_shard))
        wanted = len(devices) if scale.engine == "local" else scale.workers
        if wanted is not None and wanted > n_shards:
            raise UsageError(f"{wanted} workers for {n_shards} shard(s) of {chunk.docs_per_shard} documents: "
                             f"use at most {n_shards}")
    except BaseException:
        staged.unlink(missing_ok=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    # Same formula as index.build_index, so its final pass finds every shard done.
    run_fp = fingerprint([corpus_fp, encoder.fingerprint, dataclasses.asdict(chunk)])
    old = _manifest(out)
    if not (old and old.get("fingerprint") == run_fp):
        (out / MANIFEST).unlink(missing_ok=True)  # from here on the folder is an unfinished build
    os.replace(staged, out / DOCS_FILE)
    pending = [s for s in range(n_shards) if not shard_is_done(shard_path(out, s), run_fp)]
    t0 = time.perf_counter()
    if pending:
        if scale.engine == "local":
            embed_local(out, model, overrides, chunk, run_fp, pending, devices, scale.threads_per_worker,
                        show_progress)
        else:
            from .ray_engine import embed_ray

            embed_ray(out, model, overrides, chunk, run_fp, pending, scale, show_progress)
    seconds = time.perf_counter() - t0
    folder = build_index(corpus, name, index_dir, model, index_type, fields=fields, skip_invalid=skip_invalid,
                         chunk=chunk, memory_budget=memory_budget, bm25=bm25, encoder=encoder,
                         show_progress=False)
    _record_engine(folder, scale, len(pending), n_shards, seconds)
    return folder


def embed_local(index_dir: Path, model: str, overrides: dict[str, Any], chunk: ChunkConfig, run_fp: str,
                shards: list[int], devices: list[str], threads: int | None = None,
                show_progress: bool = True) -> None:
    """Embed ``shards`` with one spawned process per entry of ``devices`` (shard ``s`` goes to
    process ``s % len(devices)`` of the pending list), each loading the encoder once."""
    import multiprocessing as mp

    n = len(devices)
    threads = threads or max(1, (os.cpu_count() or 1) // n)
    parts = [shards[i::n] for i in range(n)]
    # spawn, not fork: CUDA and torch's thread pools do not survive a fork.
    with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_worker, str(index_dir), model, {**overrides, "device": dev}, chunk, run_fp,
                               part, threads) for dev, part in zip(devices, parts) if part]
        _wait_with_progress(futures, index_dir, run_fp, shards, show_progress)


def _worker(index_dir: str, model: str, overrides: dict[str, Any], chunk: ChunkConfig, run_fp: str,
            shards: list[int], threads: int) -> int:
    """One process: load the encoder once, embed its shards (skipping finished ones)."""
    import torch

    torch.set_num_threads(threads)
    from .encoder import load_encoder

    encoder = load_encoder(model, **overrides)
    folder = Path(index_dir)
    docs = read_documents(folder / DOCS_FILE, ["id", "title", "text"])
    done = 0
    for s in shards:
        path = shard_path(folder, s)
        if shard_is_done(path, run_fp):
            continue
        embed_shard(encoder, docs.slice(s * chunk.docs_per_shard, chunk.docs_per_shard), chunk, path, run_fp)
        done += 1
    return done


def _wait_with_progress(futures, index_dir: Path, run_fp: str, shards: list[int], show: bool) -> None:
    """Wait for the workers, showing finished shards; the first failure cancels the rest."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]embedding shards"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), disable=not show)
    with bar:
        task = bar.add_task("shards", total=len(shards))
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=2.0, return_when=FIRST_EXCEPTION)
            for f in finished:
                if f.exception() is not None:
                    for p in pending:
                        p.cancel()
                    raise _unwrap(f.exception())
            bar.update(task, completed=sum(shard_is_done(shard_path(index_dir, s), run_fp) for s in shards))


def _unwrap(e: BaseException) -> BaseException:
    """A worker's L2VError travels back pickled; anything else gets a one-line summary."""
    if isinstance(e, L2VError):
        return e
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(e, BrokenProcessPool):
        return L2VError("a worker process died (out of memory or killed); rerun to resume from finished shards")
    return L2VError(f"a worker failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e) else ''}")


def _manifest(folder: Path) -> dict | None:
    try:
        return read_json(folder / MANIFEST) if (folder / MANIFEST).is_file() else None
    except ValueError:
        return None


def _record_engine(folder: Path, scale: ScaleConfig, embedded: int, n_shards: int, seconds: float) -> None:
    """Add how the shards were made to the manifest (the final pass embedded none of them)."""
    from .manifest import write_json_atomic

    manifest = read_json(folder / MANIFEST)
    manifest["engine"] = {"engine": scale.engine, "devices": list(scale.devices), "workers": scale.workers,
                          "ray_address": scale.ray_address, "embedded_shards": embedded, "shards": n_shards,
                          "embed_seconds": round(seconds, 2)}
    write_json_atomic(folder / MANIFEST, manifest)
