"""HTTP API: contract, micro-batching equality under concurrency, limits and errors."""

import asyncio
import json
import random

import numpy as np
import pytest
from conftest import WORDS, word_index

fastapi = pytest.importorskip("fastapi", reason="the `serve` extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from llm2vec_search.index import build_index  # noqa: E402
from llm2vec_search.server import MicroBatcher, SearchService, ServeConfig, create_app  # noqa: E402


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_encoder):
    home = word_index(tmp_path_factory.mktemp("serve"), tiny_encoder)
    svc = SearchService(None, home, ServeConfig(max_batch=8, window_ms=20))
    return svc


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


def test_contract(client):
    r = client.post("/search", json={"query": "the cat eats", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert len(body["results"]) == 3 and set(body["results"][0]) == {"id", "score", "title", "text"}
    assert body["took_ms"] >= 0 and body["mode"] == "hybrid"  # the default where the index has BM25
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)
    r = client.post("/search/batch", json={"queries": ["cat", "river"], "k": 2, "mode": "hybrid"})
    assert r.status_code == 200 and [len(x) for x in r.json()["results"]] == [2, 2]
    assert client.get("/indexes").json()["indexes"][0] == {"name": "docs", "documents": 30, "dense": True,
                                                           "default_mode": "hybrid",
                                                           "encoder": client.get("/indexes").json()["indexes"][0]
                                                           ["encoder"], "faiss": "Flat"}
    assert client.get("/health").json()["status"] == "ok"
    assert "llm2vec-search" in client.get("/").text
    assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("payload,status", [
    ({"query": "", "k": 3}, 422), ({"query": "x", "k": 0}, 422), ({"query": "x", "k": 1001}, 422),
    ({"query": "x" * 2001}, 422), ({"query": "x", "index": "../etc"}, 422),
    ({"query": "x", "index": ".."}, 422), ({"query": "x", "index": "caf\u00e9"}, 422),
    ({"query": "x", "mode": "sparse"}, 422),
    ({"query": "x", "index": "nope"}, 404), ({"k": 3}, 422),
])
def test_limits_and_errors(client, payload, status):
    r = client.post("/search", json=payload)
    assert r.status_code == status and "error" in r.json() and "Traceback" not in r.text


def test_invalid_json_and_large_body(client):
    r = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/search", content=b"x" * (2 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_concurrent_requests_equal_sequential(service):
    queries = [" ".join(random.Random(i).choices(WORDS, k=4)) for i in range(24)]

    async def concurrent():
        return await asyncio.gather(*(service.search(None, [q], 5, None, "dense") for q in queries))

    together = asyncio.run(concurrent())
    one_by_one = [asyncio.run(service.search(None, [q], 5, None, "dense")) for q in queries]
    for a, b in zip(together, one_by_one):
        assert [h.id for h in a[0]] == [h.id for h in b[0]]
        np.testing.assert_allclose([h.score for h in a[0]], [h.score for h in b[0]], atol=1e-5)


def test_micro_batcher_groups_concurrent_calls():
    calls = []

    def fn(items):
        calls.append(len(items))
        return np.array(items) * 2

    async def main():
        b = MicroBatcher(fn, max_batch=16, window_ms=50)
        out = await asyncio.gather(*(b.submit([i]) for i in range(10)))
        await b.close()
        return out

    out = asyncio.run(main())
    assert [o.tolist() for o in out] == [[i * 2] for i in range(10)]
    assert max(calls) > 1 and sum(calls) == 10


def test_micro_batcher_survives_a_new_event_loop():
    """A server restarted in-process (or TestClient then asyncio.run) gets a new loop: no hang."""
    b = MicroBatcher(lambda items: np.array(items) + 1, max_batch=4, window_ms=1)

    async def once(x):
        return await asyncio.wait_for(b.submit([x]), timeout=5)

    assert asyncio.run(once(1)).tolist() == [2]
    assert asyncio.run(once(2)).tolist() == [3]  # the first loop is closed by now
    asyncio.run(b.close())
    assert asyncio.run(once(3)).tolist() == [4]


def test_the_service_switches_generations_and_skips_one_that_does_not_open(tmp_path, tiny_encoder):
    from llm2vec_search.store import IndexStore
    from llm2vec_search.update import append_documents, remove_documents

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t}) for i, t in
                                enumerate(["the cat sleeps", "a dog runs", "a red fish"])))
    build_index(corpus, "docs", tmp_path, encoder=tiny_encoder, show_progress=False)
    svc = SearchService(None, tmp_path, ServeConfig(micro_batching=False))
    (tmp_path / "more.jsonl").write_text(json.dumps({"id": "d3", "text": "a small mouse"}))
    broken, _ = append_documents(tmp_path / "more.jsonl", "docs", tmp_path, encoder=tiny_encoder, show_progress=False)
    (broken / "index.faiss").write_bytes(b"garbage")

    def ids(query):
        return [h.id for h in asyncio.run(svc.search(None, [query], 5, None, "bm25"))[0]]

    assert "d3" not in ids("small mouse") and svc.failed["docs"] == broken  # kept the one in use
    assert ids("red fish")[0] == "d2"  # and does not try the broken one again
    remove_documents(["d0"], "docs", tmp_path, show_progress=False)
    assert ids("small mouse")[0] == "d3" and "d0" not in ids("cat sleeps")
    assert svc.index(None).folder == IndexStore(tmp_path, "docs").current()


def test_model_work_runs_on_one_thread(tmp_path, tiny_encoder, monkeypatch):
    """Loading, every forward and FAISS run on the service's one model thread, never the caller's:
    a second OpenMP team in the process slows the forward (server.py's docstring)."""
    import threading

    from llm2vec_search.search import SearchIndex

    threads = {}
    load = SearchIndex.load_encoder

    def recording_load(self, *a, **kw):
        threads.setdefault("load", set()).add(threading.get_ident())
        encoder = load(self, *a, **kw)
        encode = encoder.encode

        def recording_encode(*a, **kw):
            threads.setdefault("encode", set()).add(threading.get_ident())
            return encode(*a, **kw)

        monkeypatch.setattr(encoder, "encode", recording_encode)
        return encoder

    search = SearchIndex.search_embedded

    def recording_search(self, *a, **kw):
        threads.setdefault("search", set()).add(threading.get_ident())
        return search(self, *a, **kw)

    monkeypatch.setattr(SearchIndex, "load_encoder", recording_load)
    monkeypatch.setattr(SearchIndex, "search_embedded", recording_search)
    svc = SearchService(None, word_index(tmp_path, tiny_encoder), ServeConfig(max_batch=4, window_ms=5))

    async def traffic():
        await asyncio.gather(*(svc.search(None, [w], 3, None, "dense") for w in WORDS[:12]))
        await svc.embeddings(None, ["the cat eats"])

    for batching in (True, False):
        svc.config = ServeConfig(max_batch=4, window_ms=5, micro_batching=batching)
        asyncio.run(traffic())
    worker = svc.worker.submit(threading.get_ident).result()
    assert threads == {"load": {worker}, "encode": {worker}, "search": {worker}}
    assert worker != threading.get_ident()
