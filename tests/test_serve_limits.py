"""The HTTP API under abuse and load: a bad query fails alone, the body limit holds on chunked
uploads, a full queue answers 503, a deadline 504, foreign Host headers are refused, ``""`` means
no instruction, and ``/v1/embeddings`` speaks the OpenAI shapes."""

import asyncio
import base64
import dataclasses
import json
import random
import threading
import time

import httpx
import numpy as np
import pytest
from conftest import WORDS, word_index

pytest.importorskip("fastapi", reason="the `serve` extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from llm2vec_search.server import (  # noqa: E402
    LOOPBACK_HOSTS,
    MAX_BODY_BYTES,
    MicroBatcher,
    SearchService,
    ServeConfig,
    create_app,
)


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_encoder):
    return word_index(tmp_path_factory.mktemp("limits"), tiny_encoder)


class Wrapped:
    """The tiny encoder with a hook run before each ``encode`` (to fail, stall, or record)."""

    def __init__(self, encoder, before):
        self._encoder, self._before = encoder, before

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def encode(self, texts, instruction=None, **kw):
        self._before(list(texts))
        return self._encoder.encode(texts, instruction, **kw)


def service_with(home, before=None, **config) -> SearchService:
    svc = SearchService(None, home, ServeConfig(**config))
    if before is not None:
        (fp,) = svc.encoders
        svc.encoders[fp] = Wrapped(svc.encoders[fp], before)
    return svc


JSON = {"content-type": "application/json"}  # bodies sent as json.dumps writes them: lone surrogates escaped


async def gather_posts(app, requests, base_url="http://localhost"):
    """POST (path, json) pairs at once to ``app``; the responses in order."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url, timeout=60) as c:
        return await asyncio.gather(*(c.post(path, content=json.dumps(body), headers=JSON) for path, body in requests))


def test_a_bad_query_fails_alone(home):
    """A lone surrogate is refused before the batcher; a query that makes the encoder fail (an
    internal fault) gets a generic 500 while the queries batched with it get their results."""
    def boom(texts):
        if any("boom" in t for t in texts):
            raise RuntimeError("the tokenizer blew up at /secret/path")

    svc = service_with(home, boom, max_batch=8, window_ms=50)
    good = [{"query": " ".join(random.Random(i).choices(WORDS, k=4)), "k": 3, "mode": "dense"} for i in range(5)]
    requests = [("/search", g) for g in good] + [("/search/batch", {"queries": ["cat", "\ud800"], "k": 3}),
                                                 ("/search", {"query": "cat boom", "k": 3, "mode": "dense"})]
    *ok, surrogate, internal = asyncio.run(gather_posts(create_app(svc), requests))
    assert [r.status_code for r in ok] == [200] * 5 and all(len(r.json()["results"]) == 3 for r in ok)
    assert surrogate.status_code == 422 and "query 1" in surrogate.json()["error"] and "Unicode" in surrogate.text
    assert internal.status_code == 500 and internal.json() == {"error": "internal error"}


def test_a_failed_batch_is_retried_per_call():
    calls = []

    def fn(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return np.array([len(x) for x in items])

    async def main():
        b = MicroBatcher(fn, max_batch=16, window_ms=50)
        first = asyncio.ensure_future(b.submit(["x"]))  # runs at once; the others queue behind it
        await asyncio.sleep(0)
        out = await asyncio.gather(first, *(b.submit(x) for x in (["aa"], ["bad"], ["ccc", "dd"])),
                                   return_exceptions=True)
        await b.close()
        return out

    first, a, bad, c = asyncio.run(main())
    assert first.tolist() == [1] and a.tolist() == [2] and c.tolist() == [3, 2]
    assert isinstance(bad, ValueError)
    assert calls[0] == ["x"] and ["aa", "bad", "ccc", "dd"] in calls  # one batch, then one call each


def test_a_lone_request_does_not_wait_for_the_window():
    async def main():
        b = MicroBatcher(lambda items: np.array(items), max_batch=16, window_ms=2000)
        t0 = time.perf_counter()
        await b.submit([1])
        took = time.perf_counter() - t0
        await b.close()
        return took

    assert asyncio.run(main()) < 1.0


def test_the_body_limit_holds_on_chunked_uploads(home):
    def chunks(total):
        for _ in range(total // 65536):
            yield b" " * 65536

    with TestClient(create_app(service_with(home))) as client:
        r = client.post("/search", content=chunks(2 * MAX_BODY_BYTES), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "body over" in r.json()["error"]

        def small():
            yield b'{"query": "cat", '
            yield b'"k": 2}'

        r = client.post("/search", content=small(), headers={"content-type": "application/json"})
        assert r.status_code == 200 and len(r.json()["results"]) == 2


def test_a_full_queue_answers_503_and_a_deadline_504(home):
    stall = threading.Event()
    svc = service_with(home, lambda texts: stall.wait(5), max_queue=1, max_batch=1)
    answers = asyncio.run(_with_release(create_app(svc), stall, [
        ("/search", {"query": "cat", "k": 2, "mode": "dense"}), ("/search", {"query": "dog", "k": 2})]))
    busy, refused = sorted(answers, key=lambda r: r.status_code)
    assert busy.status_code == 200
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"

    seen = []
    svc = service_with(home, lambda texts: (seen.append(texts), time.sleep(1.0)), request_timeout=0.3, max_batch=1)
    late = asyncio.run(gather_posts(create_app(svc), [("/search", {"query": q, "k": 2, "mode": "dense"})
                                                      for q in ("first cat", "second dog")]))
    assert [r.status_code for r in late] == [504, 504] and "0.3 s" in late[0].json()["error"]
    time.sleep(0.5)
    assert len(seen) == 1  # the forward under way ran out; the queued one was dropped


async def _with_release(app, stall, requests):
    async def release():
        await asyncio.sleep(0.5)
        stall.set()

    out, _ = await asyncio.gather(gather_posts(app, requests), release())
    return out


def test_foreign_hosts_are_refused_and_indexes_show_no_paths(home):
    app = create_app(service_with(home, allowed_hosts=(*LOOPBACK_HOSTS, "search.lan")))
    for base, status in (("http://localhost:8000", 200), ("http://127.0.0.1", 200), ("http://[::1]:9", 200),
                         ("http://search.lan:80", 200), ("http://evil.example", 403),
                         ("http://localhost.evil.example:8000", 403)):
        with TestClient(app, base_url=base) as client:
            r = client.get("/indexes")
            assert r.status_code == status, base
    with TestClient(app, base_url="http://localhost") as client:
        body = client.get("/indexes").json()
    encoder = body["indexes"][0]["encoder"]
    assert set(encoder) == {"name", "fingerprint"} and "/" not in encoder["name"] and len(encoder["fingerprint"]) == 16
    assert str(home) not in json.dumps(body) and "tiny-llama" in encoder["name"]


def test_an_empty_instruction_means_none(home):
    from llm2vec_search.search import SearchIndex

    svc = service_with(home)
    (fp,) = svc.encoders
    plain = svc.encoders[fp]
    svc.encoders[fp] = instructed = Wrapped(plain, lambda texts: None)
    instructed.config = dataclasses.replace(plain.config, query_instruction="a question about the river")
    idx = SearchIndex.open("docs", home)

    def scores(**kw):
        with TestClient(create_app(svc)) as client:
            body = {"query": "the cat eats", "k": 5, "mode": "dense", **kw}
            r = client.post("/search", json=body)
        assert r.status_code == 200
        return [h["score"] for h in r.json()["results"]]

    def local(instruction):
        hits = idx.search(["the cat eats"], 5, encoder=plain, instruction=instruction, mode="dense")[0]
        return [h.score for h in hits]

    np.testing.assert_allclose(scores(instruction=""), local(""), atol=1e-5)  # "": none, as --instruction ''
    np.testing.assert_allclose(scores(), local("a question about the river"), atol=1e-5)  # absent: the default
    np.testing.assert_allclose(scores(instruction=None), scores(), atol=1e-6)
    assert not np.allclose(scores(instruction=""), scores(), atol=1e-4)


def test_embeddings_endpoint_contract(home):
    svc = service_with(home)
    (name,) = svc.encoder_names
    encoder = svc.encoders[svc.encoder_names[name]]  # as the index records it (dtype: auto)
    with TestClient(create_app(svc)) as client:
        r = client.post("/v1/embeddings", json={"input": ["the cat sleeps", "a red fish"], "model": name})
        assert r.status_code == 200
        body = r.json()
        assert body["object"] == "list" and body["model"] == name and [d["index"] for d in body["data"]] == [0, 1]
        want = encoder.encode_documents(["the cat sleeps", "a red fish"])
        np.testing.assert_allclose([d["embedding"] for d in body["data"]], want, atol=1e-6)
        assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}

        r = client.post("/v1/embeddings", json={"input": "a red fish", "encoding_format": "base64",
                                                "input_type": "query", "dimensions": encoder.dim})
        vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
        np.testing.assert_allclose(vec, encoder.encode_queries(["a red fish"])[0], atol=1e-6)
        assert client.get("/v1/models").json()["data"][0]["id"] == name

        for payload, status, param in (({"input": [1, 2, 3]}, 400, "input"), ({"input": [[1, 2]]}, 400, "input"),
                                       ({"input": []}, 400, "input"), ({"input": "x", "model": "gpt-4"}, 404, "model"),
                                       ({"input": "x", "dimensions": 8}, 400, "dimensions"),
                                       ({"input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
                                       ({"input": ["ok", "\ud800"]}, 400, "input"),
                                       ({"input": "cat " * 300}, 400, "input")):
            r = client.post("/v1/embeddings", content=json.dumps(payload), headers=JSON)
            assert r.status_code == status and r.json()["error"]["param"] == param, payload


def test_k_times_queries_is_capped(home):
    with TestClient(create_app(service_with(home))) as client:
        r = client.post("/search/batch", json={"queries": ["cat"] * 20, "k": 1000})
        assert r.status_code == 422 and "10000" in r.json()["error"]
