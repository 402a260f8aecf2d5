"""int8 inference (int8.py, int8_build.py): the exported graph computes what the float model does,
SmoothQuant keeps the float outputs, the int8 embeddings stay close and are deterministic, the
cache is reused, rebuilt on change and safe under two writers, and an index built with
``--dtype int8`` records it and is queried in int8 without torch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli

from llm2vec_search import int8
from llm2vec_search.encoder import load_encoder
from llm2vec_search.errors import UsageError

pytest.importorskip("onnxruntime")

TEXTS = ["the cat sleeps by the river", "a vaccine and the immune cell", "red fox", "protein gene virus " * 12]
INSTRUCTION = "query document search"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("L2V_SEARCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _float(model_dir, **kw):
    return load_encoder(str(model_dir), dtype="fp32", device="cpu", attn_implementation="eager", **kw)


def _entries(home):
    root = home / "int8"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


@pytest.mark.parametrize("pooling", ["mean", "eos", "weighted_mean"])
def test_the_exported_graph_computes_the_float_models_embeddings(tiny_model_dir, tmp_path, pooling):
    import onnxruntime as ort

    from llm2vec_search.int8_build import export_onnx

    enc = _float(tiny_model_dir, pooling=pooling)
    export_onnx(enc, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for texts in (TEXTS, TEXTS[:1], TEXTS[1:3]):  # other batch sizes and lengths than the traced ones
        for batch in enc.batches(texts, INSTRUCTION):
            feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "pool_mask": batch.pool_mask}
            got = session.run(None, {k: v.numpy() for k, v in feed.items()})[0]
            want = enc.forward(batch).detach().numpy()
            np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-3)


def test_smoothquant_moves_scales_into_weights_without_changing_the_outputs(tiny_model_dir):
    from llm2vec_search.int8_build import smooth

    enc = _float(tiny_model_dir)
    before = enc.encode(TEXTS, INSTRUCTION)
    w = enc.model.layers[0].mlp.down_proj.weight.detach().clone()
    smooth(enc, 0.75)
    assert not np.allclose(w.numpy(), enc.model.layers[0].mlp.down_proj.weight.detach().numpy())  # it did move scales
    np.testing.assert_allclose(enc.encode(TEXTS, INSTRUCTION), before, atol=1e-5)


def test_int8_embeddings_are_close_to_float_and_deterministic(tiny_model_dir, home):
    want = _float(tiny_model_dir).encode(TEXTS, INSTRUCTION)
    enc = load_encoder(str(tiny_model_dir), dtype="int8")
    assert isinstance(enc, int8.Int8Encoder) and enc.identity()["dtype"] == "int8"
    got = enc.encode(TEXTS, INSTRUCTION)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert (got * want).sum(1).min() > 0.97
    np.testing.assert_array_equal(enc.encode(TEXTS, INSTRUCTION), got)
    np.testing.assert_array_equal(load_encoder(str(tiny_model_dir), dtype="int8").encode(TEXTS, INSTRUCTION), got)


def test_tokenization_matches_the_float_encoders(tiny_model_dir, home):
    ours, theirs = load_encoder(str(tiny_model_dir), dtype="int8"), _float(tiny_model_dir)
    texts = [*TEXTS, "Naïve café 123", ""]
    assert ours.tokenize(texts, INSTRUCTION) == theirs.tokenize(texts, INSTRUCTION)
    got = ours.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    want = theirs.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    assert got["input_ids"] == want["input_ids"]
    spans = [[[tuple(o) for o in x] for x in t["offset_mapping"]] for t in (got, want)]
    assert spans[0] == spans[1]
    assert ours.text_budget(INSTRUCTION) == theirs.text_budget(INSTRUCTION)


def test_the_cache_is_reused_and_a_new_entry_made_when_the_graph_changes(tiny_model_dir, home, monkeypatch):
    from llm2vec_search import int8_build

    load_encoder(str(tiny_model_dir), dtype="int8")
    [entry] = _entries(home)
    assert json.loads((entry / int8.META).read_text())["quantization"] == int8.QUANTIZATION
    monkeypatch.setattr(int8_build, "build", lambda *a: pytest.fail("rebuilt a cached entry"))
    load_encoder(str(tiny_model_dir), dtype="int8", max_length=64)  # settings outside the graph: same entry
    assert _entries(home) == [entry]
    monkeypatch.undo()
    monkeypatch.setenv("L2V_SEARCH_HOME", str(home))
    load_encoder(str(tiny_model_dir), dtype="int8", pooling="eos")
    assert len(_entries(home)) == 2


CHILD = """
import sys
from llm2vec_search.encoder import load_encoder
print(load_encoder(sys.argv[1], dtype="int8").encode(sys.argv[2:])[0, :4].tolist())
"""


def test_two_processes_filling_the_int8_cache_at_once_both_succeed(tiny_model_dir, home):
    env = {**os.environ, "L2V_SEARCH_HOME": str(home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_model_dir), *TEXTS], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, stderr) in zip(procs, outs):
        assert p.returncode == 0, stderr
    assert outs[0][0] == outs[1][0]
    [entry] = _entries(home)
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_int8_refuses_cuda_and_names_the_extra_when_onnxruntime_is_missing(tiny_model_dir, home, monkeypatch, capsys):
    with pytest.raises(UsageError, match="runs on the CPU"):
        load_encoder(str(tiny_model_dir), dtype="int8", device="cuda")
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    with pytest.raises(UsageError, match=r"pip install 'llm2vec-search\[int8\]'"):
        load_encoder(str(tiny_model_dir), dtype="int8")
    code, _, err = run_cli(monkeypatch, capsys, "encode", "a cat", "--model", str(tiny_model_dir), "--dtype", "int8")
    assert code != 0 and "pip install 'llm2vec-search[int8]'" in err and "Traceback" not in err, err
    with pytest.raises(UsageError, match="token vectors"):
        int8.Int8Encoder.encode_tokens(None, ["x"])


PROBE = """
import json, sys
sys.argv = ["l2v-search", *sys.argv[1:]]
from llm2vec_search.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
heavy = [m for m in ("torch", "transformers", "pandas") if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def test_an_int8_index_records_it_and_is_queried_in_int8_without_torch(tiny_model_dir, home, tmp_path, monkeypatch,
                                                                       capsys):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(TEXTS)))
    idx = ["--index-dir", str(tmp_path / "indexes")]
    code, out, err = run_cli(monkeypatch, capsys, "index", str(corpus), "--name", "i8", "--model", str(tiny_model_dir),
                             "--dtype", "int8", *idx, "--json")
    assert code == 0, err
    manifest = json.loads(out)
    assert manifest["encoder"]["dtype"] == "int8" and manifest["encoder"]["float_fingerprint"]
    query = ["query", "red fox", "--mode", "dense", "--json", "--no-server", *idx]
    code, out, err = run_cli(monkeypatch, capsys, *query)
    assert code == 0 and err == "", err
    int8_hits = json.loads(out)["results"]
    assert int8_hits[0]["id"] == "d2"
    code, out, err = run_cli(monkeypatch, capsys, *query, "--dtype", "fp32")
    assert code == 0 and "was built with int8 vectors; these queries are encoded in float32" in err, err
    assert json.loads(out)["results"][0]["id"] == "d2"
    env = {**os.environ, "L2V_SEARCH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, *query], capture_output=True, text=True, timeout=300, env=env)
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == {"code": 0, "heavy": []}, proc.stderr
    assert json.loads(proc.stdout)["results"] == int8_hits


def test_eval_in_int8_keeps_its_own_index_and_scores_like_float(tiny_model_dir, home, tmp_path, monkeypatch, capsys):
    from conftest import write_beir

    beir = write_beir(tmp_path / "beir")
    runs = {}
    for dtype in ("fp32", "int8"):
        args = ["eval", str(beir), "--model", str(tiny_model_dir), "--dtype", dtype, "--mode", "dense", "--json",
                "--index-dir", str(tmp_path / "indexes"), "--out", str(tmp_path / dtype)]
        code, out, err = run_cli(monkeypatch, capsys, *args)
        assert code == 0, err
        runs[dtype] = json.loads((tmp_path / dtype / "metrics.json").read_text())
    assert runs["int8"]["encoder"]["dtype"] == "int8"
    assert len([p for p in (tmp_path / "indexes").iterdir() if p.name.startswith("eval-")]) == 2
    assert abs(runs["int8"]["metrics"]["ndcg@10"] - runs["fp32"]["metrics"]["ndcg@10"]) < 0.15


def test_a_server_serves_an_int8_index_with_the_int8_encoder(tiny_model_dir, home, tmp_path):
    import asyncio

    from llm2vec_search.index import build_index
    from llm2vec_search.server import SearchService, ServeConfig

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(TEXTS)))
    build_index(corpus, "i8", tmp_path / "indexes", str(tiny_model_dir), show_progress=False,
                encoder_overrides={"dtype": "int8"})
    service = SearchService(None, tmp_path / "indexes", ServeConfig())
    [encoder] = service.encoders.values()
    assert isinstance(encoder, int8.Int8Encoder)
    hits = asyncio.run(service.search(None, ["red fox", "immune cell"], 2, None, "dense"))
    assert [h[0].id for h in hits] == ["d2", "d1"]
