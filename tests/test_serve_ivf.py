"""IVF indexes through ``query`` and the server: ``nprobe`` changes results exactly as FAISS does,
per request and as the server's default, and an on-disk IVF (``index --on-disk``) answers as the
in-memory IVF of the same factory string at every ``nprobe``."""

import json

import faiss
import numpy as np
import pytest
from conftest import run_cli, word_index

pytest.importorskip("fastapi", reason="the `serve` extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from llm2vec_search.search import SearchIndex  # noqa: E402
from llm2vec_search.server import SearchService, ServeConfig, create_app  # noqa: E402
from llm2vec_search.store import FAISS_FILE  # noqa: E402

QUERIES = ["the cat eats fish", "a virus in the blood", "river water climate", "old book study"]


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_encoder):
    home = tmp_path_factory.mktemp("ivf")
    word_index(home, tiny_encoder, "mem", 80, index_type="IVF8,Flat")
    return word_index(home, tiny_encoder, "disk", 80, index_type="IVF8,Flat", on_disk=True)


def served(home, **config):
    return TestClient(create_app(SearchService(None, home, ServeConfig(**config))))


def test_nprobe_changes_results_as_faiss_does(home):
    svc = SearchService(None, home, ServeConfig())
    idx = svc.index("mem")
    raw = faiss.read_index(str(idx.folder / FAISS_FILE))
    xq = svc.encoders[idx.encoder_fingerprint].encode_queries(QUERIES)  # the server's encoder (dtype: auto)
    by_nprobe = {}
    with TestClient(create_app(svc)) as client:
        for nprobe in (1, 2, 8):
            faiss.extract_index_ivf(raw).nprobe = nprobe
            D, I = raw.search(xq, 5)
            for q, want_d, want_i in zip(QUERIES, D, I):
                r = client.post("/search", json={"query": q, "k": 5, "mode": "dense", "index": "mem", "nprobe": nprobe})
                hits = r.json()["results"]
                assert [h["id"] for h in hits] == [f"d{i}" for i in want_i if i >= 0]
                np.testing.assert_allclose([h["score"] for h in hits], want_d[want_i >= 0], atol=1e-5)
                by_nprobe.setdefault(nprobe, []).append([h["id"] for h in hits])
        r = client.post("/search", json={"query": "cat", "index": "mem", "ef_search": 16})
        assert r.status_code == 400 and "HNSW" in r.json()["error"]
    assert by_nprobe[1] != by_nprobe[8]  # visiting one list of eight misses some of the best
    with served(home, nprobe=8) as client:  # the server's default applies where no request says otherwise
        got = [[h["id"] for h in client.post("/search", json={"query": q, "k": 5, "mode": "dense", "index": "mem"})
                .json()["results"]] for q in QUERIES]
    assert got == by_nprobe[8]


def test_an_on_disk_ivf_equals_the_in_memory_one(home, monkeypatch, capsys):
    disk = SearchIndex.open("disk", home)
    assert disk.manifest.faiss.on_disk and disk.manifest.faiss.factory == "IVF8,Flat"
    assert not (disk.folder / FAISS_FILE).exists() and (disk.folder / "ondisk" / "lists.ivfdata").is_file()
    for nprobe in ("1", "3", "8"):
        outputs = []
        for name in ("mem", "disk"):
            code, out, err = run_cli(monkeypatch, capsys, "query", QUERIES[0], "--index", name, "--index-dir",
                                     str(home), "--mode", "dense", "--nprobe", nprobe, "-k", "5", "--json")
            assert code == 0, err
            outputs.append(json.loads(out)["results"])
        assert outputs[0] == outputs[1]
    with served(home) as client:
        for mode in ("dense", "hybrid"):
            a, b = (client.post("/search/batch", json={"queries": QUERIES, "k": 5, "mode": mode, "index": name,
                                                       "nprobe": 2}).json()["results"] for name in ("mem", "disk"))
            assert a == b


def test_on_disk_needs_an_ivf_factory(home, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "index", str(home / "mem.jsonl"), "--name", "x", "--index-dir",
                           str(home), "--on-disk", "--index-type", "HNSW32")
    assert code != 0 and "IVF<nlist>,<codec>" in err and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, "query", "cat", "--index", "mem", "--index-dir", str(home),
                           "--ef-search", "8", "--mode", "dense")
    assert code != 0 and err.startswith("error:") and "HNSW" in err and len(err.strip().splitlines()) == 1
