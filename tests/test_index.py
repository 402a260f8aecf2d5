"""Indexing and search with the tiny encoder: exactness, resume after a crash, manifests, modes."""

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import WORDS

from llm2vec_search import index as pipeline
from llm2vec_search.embed import ChunkConfig
from llm2vec_search.errors import IndexStateError, UsageError
from llm2vec_search.index import build_faiss, build_index
from llm2vec_search.search import SearchIndex
from llm2vec_search.store import iter_shards, shard_vectors


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    rows = [{"_id": f"d{i}", "title": rng.choice(WORDS), "text": " ".join(rng.choices(WORDS, k=rng.randint(5, 150)))}
            for i in range(60)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _build(corpus, tmp_path, tiny_encoder, name="t", **kw):
    kw.setdefault("chunk", ChunkConfig(max_tokens=48, overlap=8, docs_per_shard=16))
    return build_index(corpus, name, tmp_path, encoder=tiny_encoder, show_progress=False, **kw)


def test_flat_search_equals_numpy_brute_force(corpus, tmp_path, tiny_encoder):
    folder = _build(corpus, tmp_path, tiny_encoder)
    idx = SearchIndex.open("t", tmp_path)
    idx._encoder = tiny_encoder
    assert idx.size == 60 and idx.manifest.faiss.factory == "Flat"
    tables = list(iter_shards(folder))
    xb = np.concatenate([shard_vectors(t) for t in tables])
    rows = [(i, c) for t in tables for i, c in zip(t.column("id").to_pylist(), t.column("chunk").to_pylist())]
    assert len(rows) > 60  # long documents were split into windows, none cut
    queries = ["the cat eats food", "a virus in the cell", "river mountain city"]
    xq = tiny_encoder.encode_queries(queries)
    for q, hits in zip(xq, idx.search(queries, k=5, mode="dense")):
        scores = xb @ q
        best: dict[str, float] = {}
        for (doc, _), s in sorted(zip(rows, scores), key=lambda x: -x[1]):
            best.setdefault(doc, float(s))
        expected = sorted(best.items(), key=lambda x: -x[1])[:5]
        assert [h.id for h in hits] == [d for d, _ in expected]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], rtol=1e-5)


def test_a_toy_encoder_passes_through_the_search_seam(corpus, tmp_path, tiny_encoder):
    from llm2vec_search.encoder import EncoderConfig
    from llm2vec_search.protocols import ChunkingEncoder, TextEncoder

    class Toy:  # answers every text with the vector of one stored chunk
        config = EncoderConfig()
        fingerprint = "toy"

        def __init__(self, vector):
            self.vector = vector

        @property
        def dim(self):
            return len(self.vector)

        def identity(self):
            return {"dim": self.dim}

        def encode_queries(self, queries, instruction=None):
            return np.tile(self.vector, (len(queries), 1))

        def encode_documents(self, docs):
            return np.tile(self.vector, (len(docs), 1))

    assert isinstance(tiny_encoder, ChunkingEncoder)
    folder = _build(corpus, tmp_path, tiny_encoder)
    table = next(iter_shards(folder))
    doc, vector = table.column("id")[5].as_py(), shard_vectors(table)[5]
    toy = Toy(vector)
    assert isinstance(toy, TextEncoder) and not isinstance(toy, ChunkingEncoder)
    idx = SearchIndex.open("t", tmp_path)
    hit = idx.search(["anything"], k=1, encoder=toy, mode="dense")[0][0]
    assert hit.id == doc and hit.score == pytest.approx(float(vector @ vector), rel=1e-5)
    with pytest.raises(IndexStateError, match="different encoder"):
        idx.check_encoder(toy)  # the manifest still names the encoder that built the index


def test_interrupted_indexing_resumes_to_the_same_result(corpus, tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.setattr(pipeline, "ENCODE_GROUP_DOCS", 16)  # one shard per encoder call
    whole = _build(corpus, tmp_path / "a", tiny_encoder)
    real = pipeline.embed_chunks
    calls = []

    def crash_on_third(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if killed mid-run
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "embed_chunks", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _build(corpus, tmp_path / "b", tiny_encoder)
    with pytest.raises(IndexStateError, match="unfinished"):
        SearchIndex.open("t", tmp_path / "b")  # a half-built index never loads
    monkeypatch.setattr(pipeline, "embed_chunks", real)
    done_before = len(list((tmp_path / "b" / "t").glob("gen-*/shards/shard-*.parquet")))
    assert done_before == 2
    resumed = _build(corpus, tmp_path / "b", tiny_encoder)
    assert json.loads((resumed / "manifest.json").read_text())["timings"]["reused_shards"] == 2
    for ta, tb in zip(iter_shards(whole), iter_shards(resumed), strict=True):
        assert ta.column("id").to_pylist() == tb.column("id").to_pylist()
        assert ta.column("chunk").to_pylist() == tb.column("chunk").to_pylist()
        np.testing.assert_array_equal(shard_vectors(ta), shard_vectors(tb))


@pytest.mark.parametrize("group", [1, 5, 16, 23, 10_000])
def test_shards_encoded_together_are_cut_back_into_the_same_shards(corpus, tmp_path, tiny_encoder, monkeypatch,
                                                                     group):
    one_by_one = _build(corpus, tmp_path / "a", tiny_encoder, chunk=ChunkConfig(max_tokens=48, overlap=8,
                                                                                  docs_per_shard=7))
    monkeypatch.setattr(pipeline, "ENCODE_GROUP_DOCS", group)
    calls = []
    real = pipeline.embed_chunks
    monkeypatch.setattr(pipeline, "embed_chunks", lambda enc, docs, *a, **kw: calls.append(docs.num_rows)
                        or real(enc, docs, *a, **kw))
    grouped = _build(corpus, tmp_path / "b", tiny_encoder, chunk=ChunkConfig(max_tokens=48, overlap=8,
                                                                              docs_per_shard=7))
    assert sum(calls) == 60 and all(n >= min(group, 7) for n in calls[:-1])
    assert len(calls) == (9 if group <= 7 else -(-60 // (-(-group // 7) * 7)))
    pairs = list(zip(iter_shards(one_by_one), iter_shards(grouped), strict=True))
    assert len(pairs) == 9
    for ta, tb in pairs:
        assert ta.column("id").to_pylist() == tb.column("id").to_pylist()
        assert ta.column("chunk").to_pylist() == tb.column("chunk").to_pylist()
        np.testing.assert_allclose(shard_vectors(ta), shard_vectors(tb), atol=1e-5)


def test_part_splits_shards_between_processes(corpus, tmp_path, tiny_encoder):
    staged = _build(corpus, tmp_path, tiny_encoder, part=(1, 2))
    done = sorted(p.name for p in (staged / "shards").glob("*.parquet"))
    assert done == ["shard-00001.parquet", "shard-00003.parquet"]
    assert not (staged / "manifest.json").exists() and not (tmp_path / "t" / "CURRENT").exists()
    folder = _build(corpus, tmp_path, tiny_encoder)  # finishes the other shards and the index
    assert json.loads((folder / "manifest.json").read_text())["timings"]["reused_shards"] == 2


def test_rerun_reuses_and_mismatches_are_refused(corpus, tmp_path, tiny_encoder):
    folder = _build(corpus, tmp_path, tiny_encoder)
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert _build(corpus, tmp_path, tiny_encoder) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
    idx = SearchIndex.open("t", tmp_path)
    other = type(tiny_encoder)(tiny_encoder.model, tiny_encoder.tokenizer,
                               tiny_encoder.config.__class__(**{**tiny_encoder.config.__dict__, "pooling": "eos"}),
                               tiny_encoder.source)
    with pytest.raises(IndexStateError, match="different encoder.*pooling: 'mean' != 'eos'"):
        idx.check_encoder(other)


def test_corrupt_and_missing_indexes_are_refused(corpus, tmp_path, tiny_encoder):
    folder = _build(corpus, tmp_path, tiny_encoder)
    with pytest.raises(IndexStateError, match="no index 'nope'"):
        SearchIndex.open("nope", tmp_path)
    (folder / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexStateError, match="corrupt"):
        SearchIndex.open("t", tmp_path)
    (folder / "manifest.json").write_text("{")
    with pytest.raises(IndexStateError, match="manifest.json is missing or invalid"):
        SearchIndex.open("t", tmp_path)


def test_modes_k_and_bad_queries(corpus, tmp_path, tiny_encoder):
    _build(corpus, tmp_path, tiny_encoder)
    idx = SearchIndex.open(None, tmp_path)  # the only index
    idx._encoder = tiny_encoder
    bm25 = idx.search(["cat"], k=5, mode="bm25")[0]
    assert bm25 and all("cat" in (h.title + " " + h.text).split() for h in bm25)
    hybrid = idx.search(["cat"], k=5, mode="hybrid")[0]
    assert len(hybrid) == 5 and len({h.id for h in hybrid}) == 5
    assert len(idx.search(["cat"], k=1000)[0]) == 60  # k is capped at the index size
    for bad, err in (([""], "empty query"), (["cat"], "k must be positive")):
        with pytest.raises(UsageError, match=err):
            idx.search(bad, k=0 if bad == ["cat"] else 3)
    with pytest.raises(UsageError, match="unknown mode"):
        idx.search(["cat"], mode="sparse")


def test_approximate_index_recall_on_clustered_vectors(tmp_path):
    """HNSW (the default above FLAT_LIMIT) against exact search on clustered data."""
    import faiss
    import pyarrow as pa

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 64)).astype(np.float32)
    xb = centers[rng.integers(0, 50, 20000)] + 0.3 * rng.normal(size=(20000, 64)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    (tmp_path / "shards").mkdir()
    pq.write_table(pa.table({"id": [str(i) for i in range(len(xb))], "chunk": np.zeros(len(xb), np.int32),
                             "start": np.zeros(len(xb), np.int32), "end": np.zeros(len(xb), np.int32),
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(xb.reshape(-1)), 64)}),
                   tmp_path / "shards" / "shard-00000.parquet")
    xq = xb[rng.choice(len(xb), 200, replace=False)] + 0.05 * rng.normal(size=(200, 64)).astype(np.float32)
    exact = faiss.IndexFlatIP(64)
    exact.add(xb)
    _, truth = exact.search(xq, 10)
    for factory in ("HNSW32,Flat", "IVF128,SQ8"):
        index, _ = build_faiss(tmp_path, factory)
        if "IVF" in factory:
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", 16)
        _, found = index.search(xq, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
        assert recall >= 0.95, (factory, recall)
