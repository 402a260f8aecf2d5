"""``l2v-search encode`` and ``l2v-search models``: output equals the library's, bad input is one line."""

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_tiny_model

from llm2vec_search.cli import main
from llm2vec_search.encoder import load_encoder


def run(monkeypatch, capsys, *args, stdin: str | None = None):
    monkeypatch.setattr("sys.argv", ["l2v-search", *args])
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def encode_json(monkeypatch, capsys, model, *args, stdin=None):
    code, out, err = run(monkeypatch, capsys, "encode", *args, "--model", str(model), "--dtype", "fp32", "--json",
                         stdin=stdin)
    assert code == 0, err
    return json.loads(out), err


def test_json_is_the_library_output_in_input_order(monkeypatch, capsys, tiny_model_dir):
    texts = ["the cat sleeps", "a dog runs to the river", "cell"]
    result, _ = encode_json(monkeypatch, capsys, tiny_model_dir, *texts)
    assert set(result) == {"model", "dim", "embeddings"}
    assert result["model"] == str(tiny_model_dir) and result["dim"] == 64
    expected = load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu").encode(texts)
    np.testing.assert_allclose(np.array(result["embeddings"]), expected, atol=1e-6)


def test_options_reach_the_encoder(monkeypatch, capsys, tiny_model_dir):
    texts = ["the cat sleeps in the house", "a dog"]
    result, _ = encode_json(monkeypatch, capsys, tiny_model_dir, *texts, "--instruction", "find the cat",
                            "--pooling", "eos", "--causal", "--no-normalize")
    enc = load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu", pooling="eos", causal=True, normalize=False)
    np.testing.assert_allclose(np.array(result["embeddings"]), enc.encode(texts, "find the cat"), atol=1e-5)
    assert abs(np.linalg.norm(result["embeddings"][0]) - 1) > 1e-3  # not normalized


def test_stdin_one_text_per_line(monkeypatch, capsys, tiny_model_dir):
    result, _ = encode_json(monkeypatch, capsys, tiny_model_dir, "-", stdin="the cat\n\na dog\n")
    expected = load_encoder(str(tiny_model_dir), dtype="fp32", device="cpu").encode(["the cat", "a dog"])
    np.testing.assert_allclose(np.array(result["embeddings"]), expected, atol=1e-6)


def test_truncation_is_reported(monkeypatch, capsys, tiny_model_dir):
    result, err = encode_json(monkeypatch, capsys, tiny_model_dir, "cat " * 50, "dog", "--max-length", "16")
    assert len(result["embeddings"]) == 2
    assert "warning: 1 text(s) truncated to 16 tokens" in " ".join(err.split())


def test_table_output(monkeypatch, capsys, tiny_model_dir):
    code, out, _ = run(monkeypatch, capsys, "encode", "the cat", "--model", str(tiny_model_dir), "--dtype", "fp32")
    assert code == 0 and "the cat" in out and "64" in out


def test_models_lists_aliases_and_the_cache(monkeypatch, capsys, tmp_path, tiny_model_dir):
    monkeypatch.setenv("L2V_SEARCH_HOME", str(tmp_path / "home"))
    shutil.copytree(tiny_model_dir, tmp_path / "home" / "models" / "tiny")
    code, out, _ = run(monkeypatch, capsys, "models", "--json")
    result = json.loads(out)
    assert code == 0 and result["cache_dir"] == str(tmp_path / "home")
    names = {a["name"]: a for a in result["aliases"]}
    assert {"smollm2-135m", "gemma3-270m"} <= set(names) and names["smollm2-135m"]["kind"] == "base"
    assert [(c["name"], c["model_type"]) for c in result["cached"]] == [("tiny", "llama")]
    code, out, _ = run(monkeypatch, capsys, "models")
    assert code == 0 and "smollm2-135m" in out and "tiny" in out


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("bad")
    corrupt = root / "corrupt"
    shutil.copytree(tiny_model_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    gpt2 = make_tiny_model(root / "gpt2", "gpt2", n_embd=64, n_layer=2, n_head=4, n_positions=128)
    bad_gguf = root / "bad.gguf"
    bad_gguf.write_bytes(b"GGUF not really")
    return {"corrupt": corrupt, "gpt2": gpt2, "bad_gguf": bad_gguf, "tiny": tiny_model_dir, "root": root}


@pytest.mark.parametrize("args,message", [
    (["--model", "no-such-alias", "hi"], "unknown model 'no-such-alias'"),
    (["--model", "{root}/missing/dir", "hi"], "not an alias"),
    (["--model", "{root}/missing.gguf", "hi"], "GGUF file not found"),
    (["--model", "some-org/not-cached", "hi"], "cannot fetch 'some-org/not-cached' from the Hugging Face hub"),
    (["--model", "{corrupt}", "hi"], "cannot load"),
    (["--model", "{bad_gguf}", "hi"], "cannot convert"),
    (["--model", "{gpt2}", "hi"], "'gpt2' is not supported for bidirectional attention; supported: llama, mistral"),
    (["--model", "{tiny}"], "no texts to encode"),
    (["--model", "{tiny}", "-"], "no texts to encode"),
    (["--model", "{tiny}", "--pooling", "max", "hi"], "valid pooling modes are: mean, weighted_mean, eos, bos"),
    (["--model", "{tiny}", "--max-length", "2", "hi"], "max_length must be at least 8"),
    (["--model", "{tiny}", "--dtype", "fp8", "hi"], "unknown dtype 'fp8'"),
])
def test_bad_input_is_one_error_line(monkeypatch, capsys, tmp_path, bad_models, args, message):
    monkeypatch.setenv("L2V_SEARCH_HOME", str(tmp_path / "home"))
    args = [a.format(**bad_models) for a in args]
    code, out, err = run(monkeypatch, capsys, "encode", *args, stdin="")
    assert code != 0 and out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[0].startswith("error:") and "Traceback" not in err, err
    assert message in " ".join(err.split()), err


def test_unsupported_architecture_encodes_with_causal(monkeypatch, capsys, bad_models):
    result, _ = encode_json(monkeypatch, capsys, bad_models["gpt2"], "the cat", "--causal")
    assert result["dim"] == 64 and len(result["embeddings"]) == 1


def test_non_utf8_stdin_in_a_real_process(tiny_model_dir, tmp_path):
    """A fresh interpreter: real stdin decoding, real exit code, and stderr shows no traceback."""
    cmd = [sys.executable, "-c", "from llm2vec_search.cli import main; main()", "encode", "-", "--model",
           str(tiny_model_dir)]
    proc = subprocess.run(cmd, input=b"the cat\n\xff\xfe not utf-8\n", capture_output=True, timeout=300,
                          env={**os.environ, "L2V_SEARCH_HOME": str(tmp_path), "LC_ALL": "C.UTF-8"})
    err = proc.stderr.decode()
    assert proc.returncode != 0 and proc.stdout == b""
    assert err.strip().startswith("error:") and "not valid UTF-8" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])  # under C, Python decodes bad bytes to surrogates
def test_non_utf8_argument_in_a_real_process(tiny_model_dir, tmp_path, locale):
    cmd = [b"-c", b"from llm2vec_search.cli import main; main()", b"encode", b"the cat \xff", b"--model",
           str(tiny_model_dir).encode()]
    env = {**os.environ, "L2V_SEARCH_HOME": str(tmp_path), "LC_ALL": locale, "PYTHONUTF8": "0"}
    proc = subprocess.run([sys.executable.encode(), *cmd], capture_output=True, timeout=300, env=env)
    err = proc.stderr.decode()
    assert proc.returncode != 0 and "not valid UTF-8" in err and "Traceback" not in err, err
