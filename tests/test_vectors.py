"""Quantized vectors (``--vectors int8|binary``) with rescoring: the codes' candidates are put in
the order of their exact float inner products, top-10s agree with a float index, the manifest
records the type, a query for another type is refused, and updates keep the codes."""

import json
import random

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import WORDS, run_cli, word_index

from llm2vec_search.errors import UsageError
from llm2vec_search.search import SearchIndex
from llm2vec_search.store import FAISS_FILE, VECTORS_FILE, iter_shards, shard_vectors
from llm2vec_search.update import append_documents, remove_documents
from llm2vec_search.vectors import binarize, requantize

N_DOCS = 100
QUERIES = [" ".join(random.Random(i).choices(WORDS, k=4)) for i in range(30)]


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_encoder):
    """One corpus three ways: float, and int8 and binary made from the float vectors (no re-embedding)."""
    home = tmp_path_factory.mktemp("vectors")
    for name in ("float", "int8", "binary"):
        word_index(home, tiny_encoder, name, N_DOCS, bm25=False)
    requantize("int8", home, "int8")
    requantize("binary", home, "binary")
    return home


def opened(home, name, encoder):
    idx = SearchIndex.open(name, home)
    idx._encoder = encoder
    return idx


def float_vectors(idx):
    """(vectors, document ids) of an index, read from its shards."""
    tables = list(iter_shards(idx.folder))
    return np.concatenate([shard_vectors(t) for t in tables]), [i for t in tables for i in t.column("id").to_pylist()]


def test_manifest_records_the_codes_and_the_float_vectors_are_the_shards(home, tiny_encoder):
    for name, factory, metric in (("float", "Flat", "inner_product"), ("int8", "SQ8", "inner_product"),
                                  ("binary", "BFlat", "hamming")):
        idx = opened(home, name, tiny_encoder)
        info = json.loads((idx.folder / "manifest.json").read_text())["faiss"]
        assert (info["vector_type"], info["factory"], info["metric"]) == (name, factory, metric)
        assert info["rescore_multiplier"] == (None if name == "float" else 4)
        assert info["vectors"] == N_DOCS
        if name != "float":
            assert idx.manifest.timings["tokens"] == 0  # made from the float index's vectors: nothing embedded
    binary = opened(home, "binary", tiny_encoder)
    assert isinstance(binary.faiss, faiss.IndexBinaryFlat) and binary.faiss.code_size == 64 // 8  # 32x smaller
    assert isinstance(opened(home, "int8", tiny_encoder).faiss, faiss.IndexScalarQuantizer)
    xb, _ = float_vectors(binary)
    np.testing.assert_array_equal(np.load(binary.folder / VECTORS_FILE), xb)
    # documents' codes: the signs of the vectors less the documents' mean (all 100 are the sample)
    codes = faiss.vector_to_array(binary.faiss.xb).reshape(N_DOCS, 8)
    np.testing.assert_array_equal(codes, np.packbits(xb > xb.mean(0, dtype=np.float64).astype(np.float32), axis=1))
    assert not (opened(home, "float", tiny_encoder).folder / VECTORS_FILE).exists()  # FAISS holds them already


def rescored_order(idx, xq, k, m):
    """What the hits must be: the codes' top k*m candidates (from FAISS itself), ordered by exact
    inner product with the float vectors of the shards."""
    xb, ids = float_vectors(idx)
    raw = faiss.read_index_binary(str(idx.folder / FAISS_FILE)) if idx.manifest.faiss.vector_type == "binary" \
        else faiss.read_index(str(idx.folder / FAISS_FILE))
    codes = binarize(xq) if idx.manifest.faiss.vector_type == "binary" else xq
    _, cand = raw.search(codes, k * m)
    out = []
    for q, rows in zip(xq, cand):
        scores = xb[rows] @ q
        order = np.argsort(-scores, kind="stable")[:k]
        out.append([(ids[rows[j]], float(scores[j])) for j in order])
    return out


@pytest.mark.parametrize("name", ["binary", "int8"])
def test_hits_are_the_rescored_candidates_and_match_float(home, tiny_encoder, name):
    flt, idx = opened(home, "float", tiny_encoder), opened(home, name, tiny_encoder)
    xq = tiny_encoder.encode_queries(QUERIES)
    want = flt.search_embedded(xq, QUERIES, 10, mode="dense")
    got = idx.search_embedded(xq, QUERIES, 10, mode="dense")
    for hits, expected in zip(got, rescored_order(idx, xq, 10, 4)):
        assert [h.id for h in hits] == [d for d, _ in expected]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], rtol=1e-5, atol=1e-6)
    same = sum([h.id for h in a] == [h.id for h in b] for a, b in zip(want, got))
    # 64-bit codes of a tiny random model: binary keeps most top-10s with 40 candidates of 100
    assert same >= (0.6 if name == "binary" else 0.95) * len(QUERIES), same
    for a, b in zip(want, got):  # a document both return has the float index's score
        score = {h.id: h.score for h in a}
        for h in b:
            if h.id in score:
                assert h.score == pytest.approx(score[h.id], rel=1e-5, abs=1e-6)


def test_more_candidates_agree_more_and_zero_returns_the_codes_order(home, tiny_encoder):
    flt, idx = opened(home, "float", tiny_encoder), opened(home, "binary", tiny_encoder)
    xq = tiny_encoder.encode_queries(QUERIES)
    want = [[h.id for h in r] for r in flt.search_embedded(xq, QUERIES, 10, mode="dense")]
    agree = {}
    for m in (0, 1, 4, 10):
        got = idx.search_embedded(xq, QUERIES, 10, mode="dense", rescore_multiplier=m)
        agree[m] = sum([h.id for h in r] == w for r, w in zip(got, want))
    assert agree[10] == len(QUERIES)  # every document is a candidate: exactly the float ranking
    assert agree[0] <= agree[1] <= agree[4] <= agree[10] and agree[4] > agree[0]
    # M = 0: the codes' order, scored 1 - 2 * hamming / d
    D, I = idx.faiss.search(binarize(xq), 10)
    got = idx.search_embedded(xq, QUERIES, 10, mode="dense", rescore_multiplier=0)
    for hits, d, rows in zip(got, D, I):
        assert [h.id for h in hits] == [f"d{r}" for r in rows]
        np.testing.assert_allclose([h.score for h in hits], 1 - 2 * d / 64, rtol=1e-6)


def test_a_query_for_another_vector_type_is_refused(home, monkeypatch, capsys):
    for name, asked in (("float", "binary"), ("binary", "int8"), ("int8", "float")):
        code, out, err = run_cli(monkeypatch, capsys, "query", "the cat eats", "--index", name, "--index-dir",
                                 str(home), "--vectors", asked, "--no-server")
        assert code == 2 and not out and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and f"holds {name} vectors, not {asked}" in err, err
    code, _, err = run_cli(monkeypatch, capsys, "query", "the cat", "--index", "float", "--index-dir", str(home),
                           "--rescore-multiplier", "2", "--no-server")
    assert code == 2 and "--rescore-multiplier applies to int8 and binary" in err
    code, out, err = run_cli(monkeypatch, capsys, "query", "the cat", "--index", "binary", "--index-dir", str(home),
                             "--vectors", "binary", "--rescore-multiplier", "1", "--no-server", "--json")
    assert code == 0 and len(json.loads(out)["results"]) == 10


@pytest.mark.parametrize("args, message", [
    (["--vectors", "binary", "--on-disk"], "cannot hold --vectors binary"),
    (["--vectors", "int8", "--index-type", "IVF8,PQ4"], "--index-type takes Flat, IVF<nlist> or HNSW<M>"),
    (["--vectors", "binary", "--index-type", "HNSW16,SQ8"], "not 'HNSW16,SQ8'"),
    (["--vectors", "float", "--rescore-multiplier", "3"], "--rescore-multiplier applies to --vectors int8"),
    (["--vectors", "binary", "--rescore-multiplier", "-1"], "must be a whole number >= 0"),
    (["--vectors", "int8", "--memory-budget", "1"], "leave it out with --vectors int8"),
    (["--vectors", "int4"], "unknown vector type 'int4'; valid: float, int8, binary"),
    (["--vectors", "int8", "--on-disk", "--index-type", "Flat"], "an on-disk index is an IVF"),
])
def test_impossible_builds_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, args, message):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "a", "text": "the cat"}))
    code, _, err = run_cli(monkeypatch, capsys, "index", str(corpus), "--name", "x", "--model", "/no/such/model",
                           "--index-dir", str(tmp_path / "idx"), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "idx").exists()


def test_index_type_gives_the_structure_and_ivf_takes_nprobe(tmp_path, tiny_encoder):
    word_index(tmp_path, tiny_encoder, "bivf", N_DOCS, bm25=False, vectors="binary", index_type="IVF4",
               rescore_multiplier=8)
    idx = opened(tmp_path, "bivf", tiny_encoder)
    assert (idx.manifest.faiss.factory, idx.manifest.faiss.rescore_multiplier) == ("BIVF4", 8)
    assert isinstance(idx.faiss, faiss.IndexBinaryIVF) and idx.faiss.nprobe == 4  # min(16, nlist)
    assert idx.tunable == {"nprobe"}
    xq = tiny_encoder.encode_queries(QUERIES[:5])
    for nprobe in (1, 4):
        idx.search_embedded(xq, QUERIES[:5], 5, mode="dense", nprobe=nprobe)
    with pytest.raises(UsageError, match="ef_search applies to HNSW"):
        idx.search_embedded(xq, QUERIES[:5], 5, mode="dense", ef_search=8)


def test_int8_on_disk_answers_as_in_memory(tmp_path, tiny_encoder):
    word_index(tmp_path, tiny_encoder, "mem", N_DOCS, bm25=False, vectors="int8", index_type="IVF4")
    word_index(tmp_path, tiny_encoder, "disk", N_DOCS, bm25=False, vectors="int8", index_type="IVF4", on_disk=True)
    mem, disk = opened(tmp_path, "mem", tiny_encoder), opened(tmp_path, "disk", tiny_encoder)
    assert disk.manifest.faiss.on_disk and disk.manifest.faiss.factory == mem.manifest.faiss.factory == "IVF4,SQ8"
    xq = tiny_encoder.encode_queries(QUERIES)
    for nprobe in (1, 4):
        a = mem.search_embedded(xq, QUERIES, 10, mode="dense", nprobe=nprobe)
        b = disk.search_embedded(xq, QUERIES, 10, mode="dense", nprobe=nprobe)
        assert [[(h.id, h.score) for h in r] for r in a] == [[(h.id, h.score) for h in r] for r in b]


def test_append_and_remove_keep_binary_codes_and_equal_a_fresh_build(tmp_path, tiny_encoder):
    word_index(tmp_path, tiny_encoder, "docs", 40, bm25=False, vectors="binary", rescore_multiplier=3)
    new = tmp_path / "new.jsonl"
    new.write_text("\n".join(json.dumps({"id": f"n{i}", "text": t}) for i, t in
                             enumerate(["a red fish swims in the river", "the gene and the virus in the cell"])))
    append_documents(new, "docs", tmp_path, encoder=tiny_encoder, show_progress=False)
    remove_documents(["d3", "d7"], "docs", tmp_path, show_progress=False)
    idx = opened(tmp_path, "docs", tiny_encoder)
    info = idx.manifest.faiss
    assert (info.vector_type, info.rescore_multiplier, info.factory, info.vectors) == ("binary", 3, "BFlat", 40)
    assert np.load(idx.folder / VECTORS_FILE).shape == (40, 64) and idx.faiss.ntotal == 40
    # the same corpus built fresh, as binary: the same hits
    corpus = tmp_path / "fresh.jsonl"
    docs = pq.read_table(idx.folder / "documents.parquet", columns=["id", "title", "text"]).to_pylist()
    corpus.write_text("\n".join(json.dumps(d) for d in docs))
    from llm2vec_search.index import build_index

    build_index(corpus, "fresh", tmp_path, encoder=tiny_encoder, show_progress=False, bm25=False, vectors="binary",
                rescore_multiplier=3)
    fresh = opened(tmp_path, "fresh", tiny_encoder)
    a, b = idx.search(QUERIES, 10, mode="dense"), fresh.search(QUERIES, 10, mode="dense")
    assert [[h.id for h in r] for r in a] == [[h.id for h in r] for r in b]
    # appended documents were embedded in another batch than in the fresh build: float noise only
    np.testing.assert_allclose([h.score for r in a for h in r], [h.score for r in b for h in r], atol=1e-5)
    found = {h.id for h in idx.search(["the cat"], 40, mode="dense")[0]}
    assert {"n0", "n1"} <= found and not {"d3", "d7"} & found


def test_serve_takes_vectors_and_rescore_multiplier_per_request(home):
    pytest.importorskip("fastapi", reason="the `serve` extra is not installed")
    from fastapi.testclient import TestClient

    from llm2vec_search.server import SearchService, ServeConfig, create_app

    svc = SearchService(["binary", "float"], home, ServeConfig())
    idx = svc.index("binary")
    xq = svc.encoders[idx.encoder_fingerprint].encode_queries(QUERIES)  # the server's encoder (dtype: auto)
    with TestClient(create_app(svc)) as client:
        r = client.post("/search", json={"query": "the cat", "index": "float", "vectors": "binary"})
        assert r.status_code == 400 and "holds float vectors, not binary" in r.json()["error"]
        body = {"queries": QUERIES, "k": 10, "index": "binary", "mode": "dense", "vectors": "binary"}
        for m in (None, 0):
            got = client.post("/search/batch", json={**body, "rescore_multiplier": m}).json()["results"]
            want = idx.search_embedded(xq, QUERIES, 10, mode="dense", rescore_multiplier=m)
            assert [[h["id"] for h in r] for r in got] == [[h.id for h in r] for r in want]
        assert client.post("/search", json={"query": "cat", "index": "binary", "rescore_multiplier": -1}
                           ).status_code == 422


def test_eval_builds_its_cached_index_with_the_codes(tmp_path, tiny_encoder):
    from conftest import write_beir

    from llm2vec_search.evaluate import evaluate_beir

    data = write_beir(tmp_path / "beir")
    kw = dict(encoder=tiny_encoder, index_dir=tmp_path / "idx", mode="dense", show_progress=False, k=10)
    flt = evaluate_beir(data, **kw)
    binary = evaluate_beir(data, vectors="binary", rescore_multiplier=10, **kw)  # every document rescored
    assert binary["index"]["faiss"]["vector_type"] == "binary" and binary["rescore_multiplier"] == 10
    assert binary["metrics"]["ndcg@10"] == pytest.approx(flt["metrics"]["ndcg@10"], abs=1e-9)
    with pytest.raises(UsageError, match="applies to --vectors int8 or binary"):
        evaluate_beir(data, rescore_multiplier=2, **kw)
