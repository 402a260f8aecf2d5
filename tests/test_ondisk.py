"""On-disk IVF: same answers as the in-memory IVF built from the same training, recall vs exact
search on clustered vectors, bounded memory per block, moved folders, atomic output."""

from __future__ import annotations

import shutil

import faiss
import numpy as np
import pytest

from llm2vec_search.errors import IndexStateError, UsageError
from llm2vec_search.ondisk import (
    IVFDATA_FILE,
    OnDiskConfig,
    build_ondisk,
    open_ondisk,
    sample_rows,
    train_ivf,
)


def clustered(n: int, d: int = 32, centers: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, d)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.1 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def blocks(x: np.ndarray, size: int):
    for i in range(0, len(x), size):
        yield x[i:i + size]


def test_ondisk_equals_in_memory_ivf_and_recall(tmp_path):
    xb, xq = clustered(6000), clustered(100, seed=1)
    cfg = OnDiskConfig(nlist=32, train_sample=2000)
    trained = train_ivf(sample_rows(blocks(xb, 1000), len(xb), cfg.train_sample), cfg)
    mem = faiss.clone_index(trained)
    mem.add(xb)
    folder = build_ondisk(blocks(xb, 1000), tmp_path / "ivf", trained)
    disk = open_ondisk(folder, nprobe=8)
    faiss.extract_index_ivf(mem).nprobe = 8
    assert disk.ntotal == len(xb)
    Dm, Im = mem.search(xq, 10)
    Dd, Id = disk.search(xq, 10)
    np.testing.assert_array_equal(Im, Id)  # same lists, same ids (in shard order)
    np.testing.assert_allclose(Dm, Dd, rtol=1e-5)
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(xb)
    _, If = flat.search(xq, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(If, Id)])
    assert recall >= 0.9, recall
    assert not (tmp_path / "ivf.tmp").exists() and not (folder / "blocks").exists()


def test_moved_folder_still_opens(tmp_path):
    xb = clustered(2000)
    cfg = OnDiskConfig(nlist=16, train_sample=1000)
    folder = build_ondisk(blocks(xb, 500), tmp_path / "a", train_ivf(xb[:1000], cfg))
    moved = shutil.move(str(folder), str(tmp_path / "b"))
    index = open_ondisk(moved, nprobe=16)
    _, ids = index.search(xb[:5], 1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_interrupted_build_leaves_old_index(tmp_path):
    xb = clustered(2000)
    trained = train_ivf(xb[:1000], OnDiskConfig(nlist=16))
    folder = build_ondisk(blocks(xb, 500), tmp_path / "ivf", trained)
    size = (folder / IVFDATA_FILE).stat().st_size

    def failing():
        yield xb[:500]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_ondisk(failing(), tmp_path / "ivf", trained)
    assert (folder / IVFDATA_FILE).stat().st_size == size
    assert open_ondisk(folder).ntotal == 2000


def test_sample_rows_is_uniform_subset():
    x = np.arange(1000, dtype=np.float32).reshape(-1, 1)
    s = sample_rows(blocks(x, 97), 1000, 200, seed=3)
    assert s.shape == (200, 1) and len(np.unique(s)) == 200
    assert s.min() < 100 and s.max() > 900  # drawn from every part of the stream
    assert sample_rows(blocks(x, 97), 1000, 5000).shape == (1000, 1)


def test_bad_inputs(tmp_path):
    with pytest.raises(UsageError, match="training vectors"):
        train_ivf(clustered(10), OnDiskConfig(nlist=64))
    with pytest.raises(UsageError, match="codec"):
        train_ivf(clustered(100), OnDiskConfig(nlist=4, codec="Nope"))
    with pytest.raises(IndexStateError):
        open_ondisk(tmp_path)
    with pytest.raises(IndexStateError):
        build_ondisk(iter(()), tmp_path / "x", train_ivf(clustered(100), OnDiskConfig(nlist=4)))
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.tmp").exists()


def test_build_from_embedded_shards(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llm2vec_search.ondisk import build_from_shards
    from llm2vec_search.store import shard_path, shard_schema

    xb = clustered(3000)
    for s in range(3):  # the layout the store writes
        x = xb[s * 1000:(s + 1) * 1000]
        path = shard_path(tmp_path, s)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_arrays(
            [pa.array([f"d{s * 1000 + i}" for i in range(1000)]), pa.array([0] * 1000, pa.int32()),
             pa.array([0] * 1000, pa.int32()), pa.array([1] * 1000, pa.int32()),
             pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])], schema=shard_schema(32)), path)
    folder = build_from_shards(tmp_path, cfg=OnDiskConfig(nlist=16, train_sample=1000))
    assert folder == tmp_path / "ondisk"
    index = open_ondisk(folder, nprobe=16)
    _, ids = index.search(xb[[5, 1500, 2999]], 1)
    assert ids[:, 0].tolist() == [5, 1500, 2999]  # row i of the shards in order
    with pytest.raises(IndexStateError):
        build_from_shards(tmp_path / "empty")
