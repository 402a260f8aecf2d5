"""``l2v-search eval`` and ``eval compare`` in process: JSON shape, tables, outputs, one-line errors."""

import json

import pytest
from conftest import run_cli as run
from test_evaluate import write_beir

from llm2vec_search.metrics import METRICS


@pytest.fixture()
def beir(tmp_path):
    return write_beir(tmp_path / "scifact", extra_qrels=["q-unknown\td1\t1"])


def test_eval_json_table_and_compare(monkeypatch, capsys, beir, tmp_path, tiny_model_dir):
    home = str(tmp_path / "idx")
    code, out, err = run(monkeypatch, capsys, "eval", str(beir), "--mode", "bm25", "--json", "--index-dir", home,
                         "--out", str(tmp_path / "bm25"))
    assert code == 0, err
    result = json.loads(out)
    assert {"ndcg@10", "recall@100", "mrr@10"} <= set(result["metrics"]) and set(result["metrics"]) == set(METRICS)
    assert result["dataset"]["split"] == "test" and "per_query" not in result
    assert "1 unknown queries" in err  # skipped qrels rows are reported, not fatal
    assert {p.name for p in (tmp_path / "bm25").iterdir()} == {"run.trec", "per_query.json", "metrics.json"}

    # Dense with the tiny model; the folder is named scifact, so SciFact's instruction is used.
    code, out, err = run(monkeypatch, capsys, "eval", str(beir), "--model", str(tiny_model_dir), "--dtype", "fp32",
                         "--max-length", "64", "--index-dir", home, "--out", str(tmp_path / "dense"), "-k", "20",
                         "--mode", "dense")
    assert code == 0, err
    assert "ndcg@10" in out and "scifact / test: 8 queries, dense" in " ".join(out.split())
    assert "Given a scientific claim" in " ".join(err.split())
    written = json.loads((tmp_path / "dense" / "metrics.json").read_text())
    assert written["instruction_source"] == "table" and written["k"] == 20
    assert written["encoder"]["max_length"] == 64

    code, out, err = run(monkeypatch, capsys, "eval", "compare", str(tmp_path / "bm25"), str(tmp_path / "dense"),
                         "--plot", str(tmp_path / "cmp.png"))
    assert code == 0, err
    assert "bm25" in out and "dense" in out and "randomization test; * p < 0.05" in " ".join(out.split())
    assert "ndcg@10" in out and "p=" in out
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run(monkeypatch, capsys, "eval", "compare", str(tmp_path / "bm25"), str(tmp_path / "dense"),
                       "--json")
    cmp = json.loads(out)
    assert code == 0 and cmp["runs"][1]["paired_queries"] == 8 and set(cmp["runs"][1]["tests"]) == set(METRICS)

    # The default mode is hybrid (convex fusion); the fusion is recorded with the run.
    code, out, err = run(monkeypatch, capsys, "eval", str(beir), "--model", str(tiny_model_dir), "--dtype", "fp32",
                         "--max-length", "64", "--index-dir", home, "--json", "-k", "20")
    result = json.loads(out)
    assert code == 0 and result["mode"] == "hybrid" and result["fusion"]["method"] == "convex"
    assert result["index"]["reused"]  # the dense run's cached index serves the hybrid run too


@pytest.mark.parametrize("args,message", [
    (["eval", "{tmp}/nope"], "not a BEIR dataset"),
    (["eval", "{beir}", "--split", "dev"], "has no 'dev' split (available: test)"),
    (["eval", "{beir}", "--mode", "sparse"], "unknown --mode 'sparse'; valid: dense, bm25, hybrid"),
    (["eval", "{beir}", "-k", "0"], "--k must be positive"),
    (["eval", "compare", "{tmp}"], "is not an evaluation run: metrics.json is missing"),
    (["eval", "compare", "{beir}/corpus.jsonl"], "not a directory"),
    (["eval", "compare", "{corrupt}"], "metrics.json or per_query.json is corrupt"),
    (["eval", "compare", "{tmp}", "--test", "wilcoxon"], "unknown --test 'wilcoxon'; valid: randomization, t-test"),
    (["eval", "compare", "{tmp}", "--plot", "x.pdf"], "--plot must name a .png file"),
])
def test_bad_input_gives_one_line_error(monkeypatch, capsys, tmp_path, beir, args, message):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metrics.json").write_text('{"metrics": {"ndcg@10": 0.5}')
    (corrupt / "per_query.json").write_text("{}")
    args = [a.format(tmp=tmp_path, beir=beir, corrupt=corrupt) for a in args]
    code, out, err = run(monkeypatch, capsys, *args, "--index-dir", str(tmp_path / "idx")) if args[1] != "compare" \
        else run(monkeypatch, capsys, *args)
    assert code != 0 and out == ""
    assert message in " ".join(err.split()), err
    assert "Traceback" not in err and err.strip().startswith("error:") and len(err.strip().splitlines()) <= 2


def test_empty_queries_leave_nothing_to_evaluate(monkeypatch, capsys, tmp_path):
    folder = write_beir(tmp_path / "empty", n_queries=0, extra_qrels=["q1\td1\t1"],
                        queries_extra=[{"_id": "q1", "text": "  "}])
    code, _, err = run(monkeypatch, capsys, "eval", str(folder), "--mode", "bm25", "--index-dir", str(tmp_path / "i"))
    assert code != 0 and "no judged queries left to evaluate (1 empty queries)" in " ".join(err.split())


def test_eval_help_lists_compare(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "eval", "--help")
    assert code == 0 and "compare" in out
