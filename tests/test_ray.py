"""The Ray engine on a real local Ray (2 CPUs): same index as the local engine, resume, errors."""

import json
import sys

import pytest
from test_distributed import CHUNK, OVERRIDES, assert_same_index, corpus, reference  # noqa: F401

from llm2vec_search.distributed import ScaleConfig, build_index_scaled
from llm2vec_search.errors import L2VError, UsageError
from llm2vec_search.store import shard_path

ray = pytest.importorskip("ray", reason="the ray extra is not installed")  # real condition: optional extra


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield
    ray.shutdown()


def test_ray_engine_equals_local_and_resumes(corpus, reference, tiny_model_dir, tmp_path, local_ray):  # noqa: F811
    def build():
        return build_index_scaled(corpus, "t", tmp_path, str(tiny_model_dir), chunk=CHUNK,
                                  encoder_overrides=OVERRIDES, scale=ScaleConfig(engine="ray", workers=2),
                                  show_progress=False)

    folder = build()
    assert_same_index(reference, folder)
    engine = json.loads((folder / "manifest.json").read_text())["engine"]
    assert engine["engine"] == "ray" and engine["embedded_shards"] == 2
    # A killed job: the shards and the manifest gone; the rerun embeds only those two.
    shard_path(folder, 0).unlink()
    shard_path(folder, 1).unlink()
    (folder / "manifest.json").unlink()
    folder = build()
    assert json.loads((folder / "manifest.json").read_text())["engine"]["embedded_shards"] == 2
    assert_same_index(reference, folder)


def test_ray_bad_options(corpus, tiny_model_dir, tmp_path, local_ray):  # noqa: F811
    def build(**scale):
        return build_index_scaled(corpus, "t", tmp_path, str(tiny_model_dir), chunk=CHUNK,
                                  encoder_overrides=OVERRIDES, scale=ScaleConfig(engine="ray", **scale),
                                  show_progress=False)

    with pytest.raises(UsageError, match="local engine"):
        build(devices=("cpu",))
    assert not (tmp_path / "t").exists()


def test_missing_ray_names_the_extra(monkeypatch, corpus, tiny_model_dir, tmp_path):  # noqa: F811
    from llm2vec_search import ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UsageError, match=r"llm2vec-search\[ray\]"):
        ray_engine.connect(None)
    with pytest.raises(UsageError, match=r"llm2vec-search\[ray\]"):
        build_index_scaled(corpus, "t", tmp_path, str(tiny_model_dir), chunk=CHUNK, encoder_overrides=OVERRIDES,
                           scale=ScaleConfig(engine="ray"), show_progress=False)
    assert not (tmp_path / "t").exists()


def test_unreachable_address_is_one_clear_error():
    from llm2vec_search import ray_engine

    if ray.is_initialized():
        ray.shutdown()
    with pytest.raises(L2VError, match="cannot start or reach Ray cluster at '127.0.0.1:9'"):
        ray_engine.connect("127.0.0.1:9")
    with pytest.raises(UsageError, match="host:port"):
        ray_engine.connect("nowhere")
