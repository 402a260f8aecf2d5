"""The CLI end to end, in process: exit codes, one-line errors, JSON output."""

import json

import pytest
from conftest import run_cli as run


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"id": f"d{i}", "title": t, "text": x} for i, (t, x) in enumerate([
        ("cats", "the cat sleeps in the house"), ("dogs", "a dog runs to the river"),
        ("vaccines", "a vaccine trains the immune system against a virus"), ("rivers", "water in the river")])]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_index_query_and_batch(monkeypatch, capsys, corpus, tmp_path, tiny_model_dir):
    home = str(tmp_path / "idx")
    code, _, err = run(monkeypatch, capsys, "index", str(corpus), "--model", str(tiny_model_dir), "--index-dir", home)
    assert code == 0, err
    assert "index 'docs'" in err and "4 documents" in err
    code, out, _ = run(monkeypatch, capsys, "query", "vaccine immune", "--index-dir", home, "-k", "2", "--json",
                       "--mode", "bm25")
    result = json.loads(out)
    assert code == 0 and [r["id"] for r in result["results"]][0] == "d2"
    assert set(result["results"][0]) == {"id", "score", "title", "text"}
    code, out, _ = run(monkeypatch, capsys, "query", "a dog", "--index-dir", home, "--json")
    assert code == 0 and len(json.loads(out)["results"]) == 4  # k=10 capped at 4 documents
    queries = tmp_path / "q.tsv"
    queries.write_text("q1\tcat\nq2\triver water\n")
    out_file = tmp_path / "run.trec"
    code, _, _ = run(monkeypatch, capsys, "query", "--queries", str(queries), "--index-dir", home, "--format", "trec",
                     "-o", str(out_file), "--mode", "hybrid", "-k", "3")
    lines = out_file.read_text().splitlines()
    assert code == 0 and len(lines) == 6 and lines[0].split()[:2] == ["q1", "Q0"]


@pytest.mark.parametrize("args,message", [
    (["query", "x", "--index-dir", "/nonexistent-home"], "0 indexes in /nonexistent-home"),
    (["query", "x", "-k", "0"], "-k must be positive"),
    (["index", "/no/such/corpus.jsonl"], "corpus not found"),
    (["index"], "give a CORPUS path or --sample"),
    (["encode", "--model", "no-such-alias", "hi"], "unknown model 'no-such-alias'"),
    (["encode", "--model", "org/model-not-cached", "hi"], "cannot fetch 'org/model-not-cached' from the Hugging"),
    (["encode"], "no texts to encode"),
    (["eval", "/no/such/dataset"], "not a BEIR dataset"),
    (["train", "mntp", "--data", "/no/file.txt", "--output", "/tmp/x", "--model", "smollm2-135m"],
     "training file not found"),
    (["train", "mntp", "--data", "/no/file.txt", "--output", "/tmp/x", "--save-every", "0"],
     "--save-every must be at least 1, got 0"),  # refused before the model loads
    (["train", "simcse", "--model", "/no/model", "--data", "/no/file.txt", "--output", "/tmp/x", "--save-every", "0"],
     "--save-every must be at least 1, got 0"),
])
def test_bad_input_gives_one_line_error(monkeypatch, capsys, args, message, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, *args)
    assert code != 0
    assert message in " ".join(err.split()), err
    assert "Traceback" not in err and err.strip().startswith("error:")


@pytest.mark.parametrize("extra,message", [
    (["--negatives", "random"], "unknown negatives 'random'; valid: bm25, encoder, none"),
    (["--init-adapter", "/no/adapter"], "--init-adapter /no/adapter: no adapter_model.safetensors"),
    (["--beir-split", "dev"], "has no 'dev' split (available: test)"),  # as eval says it
])
def test_train_supervised_bad_input(monkeypatch, capsys, tmp_path, tiny_model_dir, extra, message):
    from llm2vec_search.index import sample_dataset

    code, _, err = run(monkeypatch, capsys, "train", "supervised", "--model", str(tiny_model_dir), "--beir",
                       str(sample_dataset()), "--beir-split", "test", "--batch-size", "4", "--output",
                       str(tmp_path / "o"), "--device", "cpu", *extra)
    assert code != 0 and message in " ".join(err.split()), err
    assert "Traceback" not in err and not (tmp_path / "o" / "encoder").exists()


def test_encode_json_and_models(monkeypatch, capsys, tiny_model_dir):
    code, out, _ = run(monkeypatch, capsys, "encode", "the cat", "a dog", "--model", str(tiny_model_dir), "--json",
                       "--dtype", "fp32")
    result = json.loads(out)
    assert code == 0 and result["dim"] == 64 and len(result["embeddings"]) == 2
    code, out, _ = run(monkeypatch, capsys, "models", "--json")
    assert code == 0 and {"smollm2-135m", "gemma3-270m"} <= {a["name"] for a in json.loads(out)["aliases"]}


def test_sample_corpus_indexes_and_evaluates(monkeypatch, capsys, tmp_path, tiny_model_dir):
    """`make demo`'s path: the bundled sample indexes by --sample, and its folder is a BEIR dataset."""
    from llm2vec_search.index import sample_dataset

    home = str(tmp_path / "idx")
    code, _, err = run(monkeypatch, capsys, "index", "--sample", "--name", "demo", "--model", str(tiny_model_dir),
                       "--index-dir", home)
    assert code == 0 and "400 documents" in " ".join(err.split()), err
    code, out, _ = run(monkeypatch, capsys, "eval", str(sample_dataset()), "--mode", "bm25", "--index-dir", home,
                       "--json")
    result = json.loads(out)
    assert code == 0 and result["dataset"]["queries"] == 19 and result["metrics"]["ndcg@10"] > 0.5
