"""Engines that embed a build's pending shards in other processes: one per device (``--devices``)
or ``--workers`` CPU processes on this machine, or Ray actors across machines (``--engine ray``,
see ray_engine.py).

An engine only embeds. The build pipeline (index.py) stages the documents, fingerprints the run,
picks the pending shards, and afterwards builds FAISS, BM25 and the manifest, the same for every
engine. Workers write each shard with the same :class:`~llm2vec_search.index.ShardJob` as a single
process, so the output equals a single-process run's (same ids and chunks; vectors equal on the
same device and dtype), and a killed run resumes from its finished shards with any engine and any
number of workers. More workers than pending shards: the extra ones are not started.

Bad options write nothing: options and devices are checked, and Ray reached, before the index
folder is touched.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from .corpus import Fields
from .embed import ChunkConfig
from .errors import L2VError, UsageError
from .index import ShardJob, build_index
from .models import DEFAULT_ENCODER
from .store import shard_is_done, shard_path

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
    from .devices import select_device

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
    wait: bool = True,
    show_progress: bool = True,
    vectors: str = "float",
    rescore_multiplier: int | None = None,
) -> Path:
    """:func:`index.build_index` with the embedding spread over processes or Ray actors."""
    if scale.engine not in ENGINES:
        raise UsageError(f"unknown --engine {scale.engine!r}; valid: {', '.join(ENGINES)}")
    overrides = {k: v for k, v in (encoder_overrides or {}).items() if k != "device"}
    if scale.engine == "local":
        devices = worker_devices(scale)
        for d in set(devices):
            parse_devices(d)
        engine = LocalProcesses(model, overrides, tuple(devices), scale.threads_per_worker)
    else:
        from .ray_engine import RayActors, connect

        if scale.devices:
            raise UsageError("--devices is for the local engine; Ray places actors on its own GPUs")
        if scale.workers is not None and scale.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {scale.workers}")
        connect(scale.ray_address)
        engine = RayActors(model, overrides, scale.workers, scale.ray_address, scale.ray_gpus_per_actor)
    # The parent's encoder only gives the run's fingerprint: keep it on CPU.
    return build_index(corpus, name, index_dir, model, index_type, fields=fields, skip_invalid=skip_invalid,
                       chunk=chunk, memory_budget=memory_budget, bm25=bm25,
                       encoder_overrides={**overrides, "device": "cpu"}, engine=engine, wait=wait,
                       show_progress=show_progress, vectors=vectors, rescore_multiplier=rescore_multiplier)


@dataclasses.dataclass(frozen=True)
class LocalProcesses:
    """One spawned process per entry of ``devices``, each loading the encoder once; shard ``s``
    of the pending list goes to process ``s % n``."""

    model: str
    overrides: dict
    devices: tuple[str, ...]
    threads: int | None = None  # torch threads per process; None: cores // processes

    def embed(self, job: ShardJob, shards: list[int], show_progress: bool) -> dict[str, int]:
        import multiprocessing as mp

        n = min(len(self.devices), len(shards))
        threads = self.threads or max(1, (os.cpu_count() or 1) // n)
        # spawn, not fork: CUDA and torch's thread pools do not survive a fork.
        with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_worker, job, self.model, {**self.overrides, "device": dev}, shards[i::n], threads)
                       for i, dev in enumerate(self.devices[:n])]
            _wait_with_progress(futures, job, shards, show_progress)
        return {"tokens": sum(f.result() for f in futures)}

    def describe(self) -> dict[str, Any]:
        return {"engine": "local", "devices": list(self.devices), "workers": len(self.devices), "ray_address": None}


def _worker(job: ShardJob, model: str, overrides: dict[str, Any], shards: list[int], threads: int) -> int:
    """One process: load the encoder once, embed its shards (skipping finished ones). Returns tokens."""
    import torch

    torch.set_num_threads(threads)
    from .encoder import load_encoder

    encoder = load_encoder(model, **overrides)
    for _ in job.embed(lambda: encoder, job.pending(shards)):
        pass
    return encoder.stats.tokens


def _wait_with_progress(futures, job: ShardJob, shards: list[int], show: bool) -> None:
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
            bar.update(task, completed=sum(shard_is_done(shard_path(job.gen, s), job.run_fp) for s in shards))


def _unwrap(e: BaseException) -> BaseException:
    """A worker's L2VError travels back pickled; anything else gets a one-line summary."""
    if isinstance(e, L2VError):
        return e
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(e, BrokenProcessPool):
        return L2VError("a worker process died (out of memory or killed); rerun to resume from finished shards")
    return L2VError(f"a worker failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e) else ''}")

