"""IVF indexes larger than memory: train once on a sample, add shard by shard, merge on disk.

Layout of an on-disk index folder::

    trained.index        the empty IVF (coarse quantizer + codec), trained on a sample
    index.faiss          the populated index; its inverted lists point at ...
    lists.ivfdata        ... the vectors, grouped by list, memory-mapped at query time

Building keeps one shard's vectors in memory at a time (plus the training sample): each shard
becomes a small IVF "block" file on disk, and faiss ``contrib.ondisk.merge_ondisk`` streams the
blocks into one ``OnDiskInvertedLists`` file. Everything is written in ``<out>.tmp`` and renamed,
so an interrupted build leaves no half-written index. At query time only the lists that
``nprobe`` visits are paged in, so RAM holds the quantizer and the OS page cache decides the rest.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import IndexStateError, UsageError

INDEX_FILE = "index.faiss"
TRAINED_FILE = "trained.index"
IVFDATA_FILE = "lists.ivfdata"
ONDISK_DIR = "ondisk"  # in a generation's folder, for an index built with `l2v-search index --on-disk`


@dataclasses.dataclass(frozen=True)
class OnDiskConfig:
    nlist: int | None = None  # inverted lists; None: 4 * sqrt(n) (n given) else 1024
    codec: str = "Flat"  # the part after "IVF{nlist}," in a factory string: Flat, SQ8, PQ64...
    train_sample: int = 100_000  # vectors used to train the quantizer (>= 39 * nlist is best)
    use_gpu: bool = True  # train on GPU when faiss was built with CUDA and sees a device
    seed: int = 0


def default_nlist(n: int) -> int:
    """The usual 4 * sqrt(n) lists, at least 1."""
    return max(1, int(4 * math.sqrt(n)))


def factory_for(cfg: OnDiskConfig, n: int | None) -> str:
    nlist = cfg.nlist or (default_nlist(n) if n else 1024)
    return f"IVF{nlist},{cfg.codec}"


def _gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def train_ivf(xt: np.ndarray, cfg: OnDiskConfig, n: int | None = None):
    """An empty inner-product IVF index trained on ``xt`` (n, d); k-means on GPU when available."""
    import faiss

    xt = np.ascontiguousarray(xt, dtype=np.float32)
    factory = factory_for(cfg, n)
    try:
        index = faiss.index_factory(xt.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise UsageError(f"invalid on-disk codec {cfg.codec!r}: {str(e).splitlines()[0][:200]}") from None
    ivf = faiss.extract_index_ivf(index)
    if len(xt) < ivf.nlist:
        raise UsageError(f"{len(xt)} training vectors for {ivf.nlist} lists: lower nlist or train on more")
    ivf.cp.seed = cfg.seed
    if cfg.use_gpu and _gpu_count() > 0:
        # faiss's own recipe: only the coarse k-means runs on the GPUs; the codec trains on CPU.
        ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatL2(xt.shape[1]))
    index.train(xt)
    return index


def sample_rows(blocks: Iterable[np.ndarray], n: int, k: int, seed: int = 0) -> np.ndarray:
    """``min(k, n)`` rows drawn uniformly from a stream of blocks holding ``n`` rows in all;
    only the sample is kept in memory."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, min(k, n), replace=False))
    out, start = [], 0
    for xb in blocks:
        lo, hi = np.searchsorted(pick, [start, start + len(xb)])
        out.append(np.asarray(xb, dtype=np.float32)[pick[lo:hi] - start])
        start += len(xb)
    if not out:
        raise IndexStateError("no vectors to train on")
    return np.concatenate(out)


def build_ondisk(blocks: Iterable[np.ndarray], out: str | Path, trained, *, first_id: int = 0) -> Path:
    """Add ``blocks`` of vectors (ids run on from ``first_id``) to copies of the ``trained`` empty
    index, one block file each, and merge them into ``out/`` as an on-disk IVF. Returns ``out``."""
    import faiss
    from faiss.contrib.ondisk import merge_ondisk

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "blocks").mkdir(parents=True)
    faiss.write_index(trained, str(tmp / TRAINED_FILE))
    names, next_id = [], first_id
    for b, xb in enumerate(blocks):
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        index = faiss.read_index(str(tmp / TRAINED_FILE))
        index.add_with_ids(xb, np.arange(next_id, next_id + len(xb), dtype=np.int64))
        next_id += len(xb)
        name = str(tmp / "blocks" / f"block-{b:05d}.index")
        faiss.write_index(index, name)
        names.append(name)
        del index  # one block in memory at a time
    if not names:
        shutil.rmtree(tmp, ignore_errors=True)
        raise IndexStateError("no vectors to index")
    index = faiss.read_index(str(tmp / TRAINED_FILE))
    merge_ondisk(index, names, str(tmp / IVFDATA_FILE))
    faiss.write_index(index, str(tmp / INDEX_FILE))
    del index
    shutil.rmtree(tmp / "blocks")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def open_ondisk(folder: str | Path, nprobe: int | None = None):
    """Open an on-disk IVF, memory-mapping its inverted lists (the folder may have moved)."""
    import faiss

    path = Path(folder) / INDEX_FILE
    if not path.is_file() or not (Path(folder) / IVFDATA_FILE).is_file():
        raise IndexStateError(f"{folder}: not an on-disk index (needs {INDEX_FILE} and {IVFDATA_FILE})")
    # ONDISK_SAME_DIR: find lists.ivfdata beside index.faiss rather than at its build-time path.
    index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)
    if nprobe is not None:
        faiss.extract_index_ivf(index).nprobe = nprobe
    return index


def build_from_shards(index_dir: str | Path, out: str | Path | None = None, cfg: OnDiskConfig = OnDiskConfig()) -> Path:
    """An on-disk IVF over the Parquet shards of a generation's folder (``<index_dir>/ondisk``;
    ``IndexStore(home, name).current()`` is the published one).

    Row ``i`` of the FAISS index is row ``i`` of the shards read in order, as for the in-memory index.
    """
    from .store import iter_shards, shard_vectors

    index_dir = Path(index_dir)
    out = Path(out) if out else index_dir / ONDISK_DIR
    n = sum(t.num_rows for t in iter_shards(index_dir))
    if n == 0:
        raise IndexStateError(f"{index_dir}: no embeddings to index")
    xt = sample_rows((shard_vectors(t) for t in iter_shards(index_dir)), n, cfg.train_sample, cfg.seed)
    trained = train_ivf(xt, cfg, n)
    return build_ondisk((shard_vectors(t) for t in iter_shards(index_dir)), out, trained)
