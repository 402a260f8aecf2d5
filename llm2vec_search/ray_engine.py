"""Embed shards on a Ray cluster: a Ray Dataset of pending shards, ``map_batches`` on an actor
class that holds the encoder, shards written by the driver as they come back.

Each dataset row is one shard: its number and the documents of it that need the encoder (taken
from the staged documents table on the driver), so workers on other machines need no shared
filesystem, only this package and the model. An actor embeds them with the same ``embed_chunks``
as a local process and returns the chunk rows (Arrow IPC bytes); the driver puts each shard
together with :meth:`~llm2vec_search.index.ShardJob.write`, like every engine. A killed job rerun
skips the shards already written.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from .embed import ChunkConfig
from .errors import L2VError, UsageError

EXTRA_HINT = "pip install 'llm2vec-search[ray]'"


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError(f"--engine ray needs Ray: {EXTRA_HINT}") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` ("auto", host:port, ray://...) or start a local Ray."""
    ray = _ray()
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False,
                              "include_dashboard": False}
    if address:
        kwargs.pop("include_dashboard")
        kwargs["address"] = address
    elif num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    # Workers import this package from the driver's environment (same venv on a local Ray).
    kwargs["runtime_env"] = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}}
    if address and address != "auto":
        _check_reachable(address)
    try:
        ray.init(**kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        where = f"Ray cluster at {address!r}" if address else "a local Ray"
        raise L2VError(f"cannot start or reach {where}: {first}") from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a dead host:port: ray.init would otherwise retry for minutes."""
    import socket

    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: expected auto, host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise L2VError(f"cannot start or reach Ray cluster at {address!r}: {e.strerror or e}") from None


class ShardEmbedder:
    """A Ray actor: loads the encoder once, turns a shard's documents into chunk rows (IPC bytes)."""

    def __init__(self, model: str, overrides: dict[str, Any], chunk: ChunkConfig, device: str):
        import torch

        from .encoder import load_encoder

        if device == "cpu":
            torch.set_num_threads(1)  # one core per CPU actor (Ray reserves num_cpus=1)
        self.encoder = load_encoder(model, **overrides, device=device)
        self.chunk = chunk

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        import pyarrow as pa

        from .embed import embed_chunks

        shards, blobs = [], []
        for s, ids, titles, texts in zip(batch["shard"], batch["id"], batch["title"], batch["text"]):
            docs = pa.table({"id": list(ids), "title": list(titles), "text": list(texts)})
            rows = embed_chunks(self.encoder, docs, self.chunk)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, rows.schema) as w:
                w.write_table(rows)
            shards.append(int(s))
            blobs.append(sink.getvalue().to_pybytes())
        return {"shard": shards, "data": blobs}


@dataclasses.dataclass(frozen=True)
class RayActors:
    """Ray actors holding the encoder: one GPU each when the cluster has GPUs, else one CPU."""

    model: str
    overrides: dict
    workers: int | None = None  # actors; None: one per GPU, else one per CPU (at most one per shard)
    ray_address: str | None = None
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0

    def embed(self, job, shards: list[int], show_progress: bool) -> dict[str, int]:
        """Embed ``shards`` of ``job`` (an :class:`~llm2vec_search.index.ShardJob`) and write them as they finish."""
        import pyarrow as pa

        ray = _ray()
        connect(self.ray_address)
        resources = ray.cluster_resources()
        gpus = self.gpus_per_actor
        if gpus is None:
            gpus = 1 if resources.get("GPU", 0) >= 1 else 0
        slots = int(resources.get("GPU", 0) // gpus) if gpus else int(resources.get("CPU", 1))
        rows = []
        for s in shards:
            fresh = job.fresh(s)
            if fresh.num_rows:
                rows.append({"shard": s, **fresh.to_pydict()})
            else:  # every vector reused: nothing for an actor to do
                job.write(s, None)
        actors = max(1, min(self.workers or slots, len(rows)))
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn(f"[bold]embedding shards on Ray ({actors} actors)"), BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True),
                       disable=not show_progress)
        with bar:
            task = bar.add_task("shards", total=len(shards), completed=len(shards) - len(rows))
            if not rows:
                return {}
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # ours above; Ray's own go to stdout
            ctx.print_on_execution_start = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            ds = ray.data.from_items(rows, override_num_blocks=len(rows))
            ds = ds.map_batches(ShardEmbedder, batch_size=1, batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=actors),
                                num_gpus=gpus, num_cpus=0 if gpus else 1,
                                fn_constructor_kwargs={"model": self.model, "overrides": self.overrides,
                                                       "chunk": job.chunk, "device": "cuda" if gpus else "cpu"})
            try:
                for row in ds.iter_rows():
                    job.write(int(row["shard"]), pa.ipc.open_stream(row["data"]).read_all())
                    bar.advance(task)
            except L2VError:
                raise
            except Exception as e:  # a failed actor surfaces as a Ray task error; keep its cause's first line
                cause = getattr(e, "cause", None) or e
                if isinstance(cause, L2VError):
                    raise cause from None
                first = str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ""
                raise L2VError(f"Ray job failed: {type(cause).__name__}: {first}; rerun to resume "
                               f"from finished shards") from None
        return {}

    def describe(self) -> dict[str, Any]:
        return {"engine": "ray", "devices": [], "workers": self.workers, "ray_address": self.ray_address}
