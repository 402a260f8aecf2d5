"""The compiled query forward (``serve --compile``, compiled.py): padding to the length buckets does
not change the vectors, batches outside the buckets run eager, a failed compile keeps the eager
forward with one warning, and the server and the CLI switch it on. The real inductor compile takes
minutes on a busy 2-core CPU even for the tiny model: that test is marked slow; the others use a
stand-in for torch.compile or dynamo's ``eager`` backend (tracing, no C++)."""

import asyncio
import logging
import threading

import numpy as np
import pytest
import torch
from conftest import run_cli, word_index

from llm2vec_search.encoder import load_encoder
from llm2vec_search.errors import UsageError

INSTRUCTION = "find the cat"  # 3 tokens with the test tokenizer (one token a word, no special tokens)
# 1 to 120 words: with the instruction, buckets 16, 16, 32, 64 and over the largest (eager)
QUERIES = ["cat", "the dog runs to the river", "a small red bird " * 5, "cell protein gene virus " * 10,
           "the " * 120]


@pytest.fixture
def encoder(tiny_model_dir):
    """An encoder of its own (compiling changes it; the session's tiny_encoder stays eager)."""
    return load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu", max_length=128)


def spy_compile(seen: list):
    """A stand-in for torch.compile: the model itself, recording the shapes it is called with."""
    def compile_(model, **kw):
        assert kw["dynamic"] is False

        def fn(**inputs):
            seen.append(tuple(inputs["input_ids"].shape))
            return model(**inputs)
        return fn
    return compile_


def eager_vectors(encoder, queries):
    return encoder.encode_queries(queries, INSTRUCTION), [encoder.encode_queries([q], INSTRUCTION) for q in queries]


def test_bucket_padding_does_not_change_embeddings(monkeypatch, encoder):
    together, alone = eager_vectors(encoder, QUERIES)
    seen = []
    monkeypatch.setattr(torch, "compile", spy_compile(seen))
    compiled = encoder.compile(lengths=(64, 16, 32), max_rows=4)
    assert compiled.lengths == (16, 32, 64)
    assert seen == [(1, 16), (2, 16), (1, 32), (2, 32), (1, 64), (2, 64)]  # the warm-up: one forward a graph
    seen.clear()
    for q, want in zip(QUERIES, alone):
        np.testing.assert_allclose(encoder.encode_queries([q], INSTRUCTION), want, atol=1e-5)
    assert seen == [(1, 16), (1, 16), (1, 32), (1, 64)]  # the 123-token query ran eager
    seen.clear()
    np.testing.assert_allclose(encoder.encode_queries(QUERIES[:4], INSTRUCTION), together[:4], atol=1e-5)
    assert seen == [(4, 64)]  # one batch, padded to its longest row's bucket
    seen.clear()
    np.testing.assert_allclose(encoder.encode_queries(QUERIES, INSTRUCTION), together, atol=1e-5)
    assert seen == []  # 5 rows > max_rows, and wider than 64: eager
    with torch.enable_grad():  # training: always eager
        encoder.forward_texts(QUERIES[:2])
    assert seen == []
    assert encoder.compile(lengths=(16, 512), max_rows=1).lengths == (16, 128)  # clipped to max_length
    assert seen == [(1, 16), (1, 128)]


def test_a_failed_compile_keeps_the_eager_forward(monkeypatch, encoder, caplog):
    before = encoder.encode_queries(QUERIES)

    def broken(model, **kw):
        def fn(**inputs):
            raise RuntimeError("InvalidCxxCompiler: No working C compiler found in cpp_builder.py\nsecond line")
        return fn

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="llm2vec_search.compiled"):
        assert encoder.compile() is None
    lines = [r.getMessage() for r in caplog.records if r.name == "llm2vec_search.compiled"]
    assert len(lines) == 1 and "No working C compiler" in lines[0] and "eager" in lines[0], lines
    assert "second line" not in lines[0]
    np.testing.assert_array_equal(encoder.encode_queries(QUERIES), before)


def test_dynamo_traces_the_padded_forward_once_per_graph(encoder):
    """Real torch.compile with dynamo's eager backend: 2 graphs (1 row; 2+ rows marked dynamic), and
    no retracing for other row counts and query lengths within the bucket, from a worker thread too."""
    from torch._dynamo.utils import counters

    queries = ["cat", "the dog runs", "a small red bird in the tree", "gene", "cell protein", "the river",
               "blue fish", "old book"]
    together, alone = eager_vectors(encoder, queries)
    compiled = encoder.compile(lengths=(16,), max_rows=8, backend="eager")
    assert compiled is not None and len(compiled.shapes()) == 2
    graphs = counters["stats"]["unique_graphs"]
    np.testing.assert_allclose(encoder.encode_queries(queries[:1], INSTRUCTION), alone[0], atol=1e-5)
    np.testing.assert_allclose(encoder.encode_queries(queries[:3], INSTRUCTION), together[:3], atol=1e-5)
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("v", encoder.encode_queries(queries, INSTRUCTION)))
    worker.start()
    worker.join()
    np.testing.assert_allclose(out["v"], together, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == graphs  # nothing compiled while "serving"


@pytest.mark.slow
def test_inductor_embeddings_equal_eager(encoder):
    """The real thing (inductor, C++): equal to eager within float tolerance, lone and batched."""
    together, alone = eager_vectors(encoder, QUERIES)
    compiled = encoder.compile(lengths=(16, 32), max_rows=4)
    assert compiled is not None, "compile failed (see the warning)"
    for q, want in zip(QUERIES[:3], alone):
        np.testing.assert_allclose(encoder.encode_queries([q], INSTRUCTION), want, atol=1e-4)
    np.testing.assert_allclose(encoder.encode_queries(QUERIES[:3], INSTRUCTION), together[:3], atol=1e-4)
    np.testing.assert_allclose(encoder.encode_queries(QUERIES, INSTRUCTION), together, atol=1e-4)


def test_serve_compiles_each_encoder_before_serving(monkeypatch, tmp_path, tiny_encoder, caplog):
    from llm2vec_search.server import SearchService, ServeConfig

    word_index(tmp_path, tiny_encoder)
    fp32 = {"dtype": "fp32"}  # auto is bf16 on an AMX CPU, where another padded shape moves scores by ~1e-4
    eager = SearchService(None, tmp_path, ServeConfig(), fp32)
    want = asyncio.run(eager.search(None, ["cat dog river"], 5, None, "dense"))
    seen, lines = [], []
    monkeypatch.setattr(torch, "compile", spy_compile(seen))
    svc = SearchService(None, tmp_path, ServeConfig(max_batch=4, compile=True), fp32, progress=lines.append)
    assert [ln.split(": ", 1)[1].split(" (")[0] for ln in lines] == ["compiling the query forward",
                                                                      "compiled 8 graphs"]
    assert len(seen) == 8  # warmed up before the service exists, so before the server reports ready
    got = asyncio.run(svc.search(None, ["cat dog river"], 5, None, "dense"))
    assert [h.id for h in got[0]] == [h.id for h in want[0]]
    np.testing.assert_allclose([h.score for h in got[0]], [h.score for h in want[0]], atol=1e-5)
    assert len(seen) == 9

    monkeypatch.setattr(torch, "compile", lambda model, **kw: pytest.fail("compiled without --compile"))
    SearchService(None, tmp_path, ServeConfig())  # off by default


def test_serve_compile_option(monkeypatch, capsys, tmp_path):
    from llm2vec_search import server

    configs = []

    def fake_service(names, index_dir, config, **kw):
        configs.append(config)
        raise UsageError("stop here")

    monkeypatch.setattr(server, "SearchService", fake_service)
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--index-dir", str(tmp_path), "--compile", "--max-batch", "8")
    assert code != 0 and "stop here" in err
    assert configs[0].compile is True and configs[0].max_batch == 8
    run_cli(monkeypatch, capsys, "serve", "--index-dir", str(tmp_path))
    assert configs[1].compile is False
