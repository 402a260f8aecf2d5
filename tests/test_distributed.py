"""Several worker processes write the same index as one process (200 documents, the default shard
size: two shards); resume with more workers than shards; bad options write nothing."""

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import WORDS

from llm2vec_search.distributed import ScaleConfig, build_index_scaled, parse_devices, worker_devices
from llm2vec_search.embed import ChunkConfig
from llm2vec_search.errors import UsageError
from llm2vec_search.index import build_index
from llm2vec_search.search import SearchIndex
from llm2vec_search.store import shard_path, shard_paths

CHUNK = ChunkConfig(max_tokens=48, overlap=8)  # the default docs_per_shard: 200 documents are 2 shards
OVERRIDES = {"dtype": "fp32", "max_length": 128}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    rows = [{"_id": f"d{i}", "title": rng.choice(WORDS), "text": " ".join(rng.choices(WORDS, k=rng.randint(5, 120)))}
            for i in range(200)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.fixture(scope="module")
def reference(corpus, tiny_model_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("single")
    return build_index(corpus, "t", home, str(tiny_model_dir), chunk=CHUNK, encoder_overrides={**OVERRIDES,
                       "device": "cpu"}, show_progress=False)


def assert_same_index(a, b):
    assert [p.name for p in shard_paths(a)] == [p.name for p in shard_paths(b)] == ["shard-00000.parquet",
                                                                                  "shard-00001.parquet"]
    for pa_, pb in zip(shard_paths(a), shard_paths(b)):
        ta, tb = pq.read_table(pa_), pq.read_table(pb)
        for col in ("id", "chunk", "start", "end"):
            assert ta.column(col).to_pylist() == tb.column(col).to_pylist()
        va = np.array(ta.column("vector").to_pylist(), np.float32)
        vb = np.array(tb.column("vector").to_pylist(), np.float32)
        np.testing.assert_allclose(va, vb, atol=1e-5)
    ma, mb = (json.loads((f / "manifest.json").read_text()) for f in (a, b))
    assert ma["fingerprint"] == mb["fingerprint"] and ma["faiss"] == mb["faiss"]


def test_two_workers_equal_one_process_and_resume(corpus, reference, tiny_model_dir, tmp_path):
    folder = build_index_scaled(corpus, "t", tmp_path, str(tiny_model_dir), chunk=CHUNK, encoder_overrides=OVERRIDES,
                                scale=ScaleConfig(workers=2, threads_per_worker=1), show_progress=False)
    assert_same_index(reference, folder)
    engine = json.loads((folder / "manifest.json").read_text())["engine"]
    assert engine["embedded_shards"] == 2 and engine["workers"] == 2
    hits = SearchIndex.open("t", tmp_path).search(["the cat sleeps"], 3)[0]
    ref_hits = SearchIndex.open("t", reference.parent.parent).search(["the cat sleeps"], 3)[0]
    assert [h.id for h in hits] == [h.id for h in ref_hits]

    # A run killed after some shards: the rerun embeds only the missing one (3 workers for it: fine), same result.
    shard_path(folder, 1).unlink()
    (folder / "manifest.json").unlink()
    folder = build_index_scaled(corpus, "t", tmp_path, str(tiny_model_dir), chunk=CHUNK, encoder_overrides=OVERRIDES,
                                scale=ScaleConfig(workers=3, threads_per_worker=1), show_progress=False)
    assert json.loads((folder / "manifest.json").read_text())["engine"]["embedded_shards"] == 1
    assert_same_index(reference, folder)


def test_bad_options_write_nothing(corpus, tiny_model_dir, tmp_path):
    def build(**scale):
        return build_index_scaled(corpus, "t", tmp_path, str(tiny_model_dir), chunk=CHUNK,
                                  encoder_overrides=OVERRIDES, scale=ScaleConfig(**scale), show_progress=False)

    with pytest.raises(UsageError, match="at least 1"):
        build(workers=0)
    with pytest.raises(UsageError, match="does not exist"):
        build(devices=("cuda:7",))
    with pytest.raises(UsageError, match="unknown --engine"):
        build(engine="spark")
    assert not (tmp_path / "t").exists()


def test_device_parsing():
    assert parse_devices("cpu, cpu") == ("cpu", "cpu")
    assert parse_devices(None) == ()
    with pytest.raises(UsageError, match="invalid device"):
        parse_devices("gpu0")
    with pytest.raises(UsageError, match="explicit"):
        parse_devices("auto")
    assert worker_devices(ScaleConfig(devices=("cuda:0", "cuda:1"), workers=3)) == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices(ScaleConfig(workers=2)) == ["cpu", "cpu"]


def test_cli_workers_and_errors(monkeypatch, capsys, corpus, tiny_model_dir, tmp_path):
    from llm2vec_search.cli import main

    def run(*args):
        monkeypatch.setattr("sys.argv", ["l2v-search", "index", str(corpus), "--model", str(tiny_model_dir),
                                         "--index-dir", str(tmp_path), *args])
        with pytest.raises(SystemExit) as e:
            main()
        return e.value.code, capsys.readouterr().err

    code, err = run("--workers", "0")
    assert code == 2 and err.strip() == "error: --workers must be at least 1, got 0"
    code, err = run("--devices", "cuda:9")
    assert code == 2 and err.startswith("error: device 'cuda:9' does not exist") and "Traceback" not in err
    code, err = run("--workers", "2", "--shard", "0/2")
    assert code == 2 and "--shard" in err
    assert not (tmp_path / "docs").exists()
    code, err = run("--workers", "1", "--json")
    assert code == 0 and "Traceback" not in err
