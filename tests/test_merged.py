"""The merged-encoder cache (models.merged_dir, merged.py) and the GGUF conversion lock: the cached
weights give the same embeddings as merging at load time, change with an adapter, and two
processes filling one entry at once both succeed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_models import _random_adapter, _write_tiny_gguf

from llm2vec_search import models
from llm2vec_search.encoder import load_encoder

TEXTS = ["the cat sleeps", "a vaccine and the immune cell", "red fox"]


def _entries(tmp_path) -> list[Path]:
    root = tmp_path / "home" / "merged"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def _encode(spec, dtype="fp32"):
    return load_encoder(str(spec), dtype=dtype, device="cpu").encode(TEXTS)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cached_merge_equals_merging_at_load_time(encoder_dir, tmp_path, monkeypatch, dtype):
    monkeypatch.setenv("L2V_SEARCH_MERGED_CACHE", "0")
    at_load = _encode(encoder_dir, dtype)
    assert _entries(tmp_path) == []
    monkeypatch.delenv("L2V_SEARCH_MERGED_CACHE")
    filling = _encode(encoder_dir, dtype)  # merges, then writes the entry
    [entry] = _entries(tmp_path)
    assert (entry / "model.safetensors").is_file() and (entry / "l2v_merged.json").is_file()
    merges = []
    monkeypatch.setattr(models, "merge_adapters", lambda *a, **k: merges.append(a))
    from_cache = _encode(encoder_dir, dtype)
    assert merges == []  # read from the cache: no adapter merged, no peft needed
    np.testing.assert_array_equal(filling, at_load)
    np.testing.assert_array_equal(from_cache, at_load)


def test_a_changed_adapter_gets_a_new_entry_and_the_old_one_goes(encoder_dir, tiny_model_dir, tmp_path, monkeypatch):
    before = _encode(encoder_dir)
    [old] = _entries(tmp_path)
    other = _random_adapter(tiny_model_dir, tmp_path / "other", 7)
    os.replace(other / "adapter_model.safetensors", encoder_dir / "simcse" / "adapter_model.safetensors")
    after = _encode(encoder_dir)
    [new] = _entries(tmp_path)
    assert new != old and not old.exists()  # the stale merge of the same paths is pruned
    assert np.abs(after - before).max() > 1e-3
    monkeypatch.setenv("L2V_SEARCH_MERGED_CACHE", "0")
    np.testing.assert_array_equal(after, _encode(encoder_dir))


def test_the_least_recently_used_entries_beyond_keep_are_pruned(tiny_model_dir, tmp_path, monkeypatch):
    from llm2vec_search import merged

    monkeypatch.setenv("L2V_SEARCH_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(merged, "KEEP", 2)
    for seed in range(3):
        _random_adapter(tiny_model_dir, tmp_path / f"a{seed}", seed)
        cfg = json.loads((tmp_path / f"a{seed}" / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = str(tiny_model_dir)
        (tmp_path / f"a{seed}" / "adapter_config.json").write_text(json.dumps(cfg))
        _encode(tmp_path / f"a{seed}")
    kept = [json.loads((e / "l2v_merged.json").read_text())["adapters"] for e in _entries(tmp_path)]
    assert sorted(kept) == [[str(tmp_path / "a1")], [str(tmp_path / "a2")]]


CHILD = """
import sys
from llm2vec_search.encoder import load_encoder
print(load_encoder(sys.argv[1], dtype="fp32", device="cpu").encode(sys.argv[2:])[0, :4].tolist())
"""


def _together(args_per_child, tmp_path) -> list[str]:
    env = {**os.environ, "L2V_SEARCH_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for args in args_per_child]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr
    return [o for o, _ in outs]


def test_two_processes_filling_the_cache_at_once_both_succeed(encoder_dir, tmp_path):
    outs = _together([["-c", CHILD, str(encoder_dir), *TEXTS]] * 2, tmp_path)
    assert outs[0] == outs[1]
    [entry] = _entries(tmp_path)
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
    np.testing.assert_allclose(json.loads(outs[0]), _encode(encoder_dir)[0, :4], atol=0)


def test_two_processes_converting_one_gguf_at_once_both_succeed(tmp_path):
    gguf_path = _write_tiny_gguf(tmp_path / "tiny.gguf", tmp_path / "ref")
    code = "import sys; from llm2vec_search.models import resolve; print(resolve(sys.argv[1]).base_dir)"
    outs = _together([["-c", code, str(gguf_path)]] * 2, tmp_path)
    assert outs[0] == outs[1]
    [converted] = list((tmp_path / "home" / "models").iterdir())
    assert Path(outs[0].strip()) == converted and (converted / "model.safetensors").is_file()
