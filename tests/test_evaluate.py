"""Metrics against an independent implementation, BEIR loading, and the eval command end to end."""

import json
import math
import random

import pytest
from conftest import WORDS

from llm2vec_search.errors import UsageError
from llm2vec_search.evaluate import evaluate_beir, load_beir, score_run


def reference(run: dict, qrels: dict) -> dict[str, dict[str, float]]:
    """trec_eval semantics written out: linear gains, log2 discounts, recall over judged-relevant."""
    out = {}
    for q, judged in qrels.items():
        ranked = [d for d, _ in sorted(run.get(q, {}).items(), key=lambda x: -x[1])]
        rel = {d: r for d, r in judged.items() if r > 0}
        m = {}
        for k in (1, 3, 5, 10, 100):
            dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
            ideal = sorted(rel.values(), reverse=True)[:k]
            idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
            m[f"ndcg@{k}"] = dcg / idcg if idcg else 0.0
        for k in (10, 100, 1000):
            m[f"recall@{k}"] = len(set(ranked[:k]) & set(rel)) / len(rel) if rel else 0.0
        first = next((i for i, d in enumerate(ranked[:10]) if d in rel), None)
        m["mrr@10"] = 0.0 if first is None else 1 / (first + 1)
        hits, precisions = 0, []
        for i, d in enumerate(ranked[:100]):
            if d in rel:
                hits += 1
                precisions.append(hits / (i + 1))
        m["map@100"] = sum(precisions) / len(rel) if rel else 0.0
        out[q] = m
    return out


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_reference_on_random_runs(seed):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(300)]
    qrels, run = {}, {}
    for q in range(20):
        judged = rng.sample(docs, rng.randint(1, 30))
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 2, 3]) for d in judged}  # graded, some judged non-relevant
        if q % 7 == 0:
            qrels[f"q{q}"] = {d: 0 for d in judged}  # a query with no relevant document
        if q % 5 != 4:  # some queries retrieve nothing
            run[f"q{q}"] = {d: rng.random() for d in rng.sample(docs, rng.randint(5, 250))}
    aggregate, per_query = score_run(run, qrels)
    expected = reference(run, qrels)
    for q in qrels:
        for key, value in expected[q].items():
            assert per_query[q][key] == pytest.approx(value, abs=1e-6), (q, key)
    for key in aggregate:
        assert aggregate[key] == pytest.approx(sum(e[key] for e in expected.values()) / len(qrels), abs=1e-6)


@pytest.fixture()
def beir(tmp_path):
    rng = random.Random(0)
    (tmp_path / "qrels").mkdir()
    docs = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.choices(WORDS, k=12))} for i in range(40)]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    queries = [{"_id": f"q{i}", "text": docs[i]["text"][:30]} for i in range(8)] + [{"_id": "q-empty", "text": " "}]
    (tmp_path / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(8)]
    lines += ["q-unknown\td1\t1", "q1\td-unknown\t1", "q-empty\td2\t1"]
    (tmp_path / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_load_beir_counts_unknown_ids_and_empty_queries(beir):
    queries, qrels, report = load_beir(beir, "test")
    assert len(queries) == 8 and report == {"unknown_queries": 1, "unknown_documents": 1, "empty_queries": 1}
    with pytest.raises(UsageError, match="no 'dev' split \\(available: test\\)"):
        load_beir(beir, "dev")
    with pytest.raises(UsageError, match="not a BEIR dataset"):
        load_beir(beir / "qrels", "test")


def test_eval_bm25_and_dense_write_outputs(beir, tmp_path, tiny_model_dir):
    result = evaluate_beir(beir, "test", mode="bm25", index_dir=tmp_path / "idx", out=tmp_path / "out",
                           show_progress=False)
    assert result["metrics"]["ndcg@10"] > 0.5  # queries copy words of their document
    run = (tmp_path / "out" / "run.trec").read_text().splitlines()
    assert run[0].split()[:4] == ["q0", "Q0", run[0].split()[2], "1"]
    per_query = json.loads((tmp_path / "out" / "per_query.json").read_text())
    assert set(per_query) == {f"q{i}" for i in range(8)}
    dense = evaluate_beir(beir, "test", model=str(tiny_model_dir), index_dir=tmp_path / "idx",
                          encoder_overrides={"dtype": "fp32", "max_length": 64}, show_progress=False)
    assert 0 <= dense["metrics"]["ndcg@10"] <= 1 and dense["encoder"]["pooling"] == "mean"
    again = evaluate_beir(beir, "test", model=str(tiny_model_dir), index_dir=tmp_path / "idx",
                          encoder_overrides={"dtype": "fp32", "max_length": 64}, show_progress=False)
    assert again["metrics"] == dense["metrics"] and again["timings"]["index_seconds"] < 30


def test_compare_runs_paired_test_and_plot(tmp_path):
    from llm2vec_search.compare import compare_runs, plot_runs

    rng = random.Random(0)
    keys = ["ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "ndcg@100", "recall@10", "recall@100", "recall@1000",
            "mrr@10", "map@100"]
    for name, shift in (("a", 0.0), ("b", 0.2)):
        folder = tmp_path / name
        folder.mkdir()
        per_query = {f"q{i}": {k: min(1.0, rng.random() * 0.5 + shift) for k in keys} for i in range(40)}
        metrics = {k: sum(p[k] for p in per_query.values()) / 40 for k in keys}
        (folder / "per_query.json").write_text(json.dumps(per_query))
        (folder / "metrics.json").write_text(json.dumps({"mode": "dense", "metrics": metrics,
                                                         "dataset": {"name": "toy", "split": "test"}}))
    result = compare_runs([tmp_path / "a", tmp_path / "b"])
    assert result["same_dataset"] and result["runs"][1]["paired_queries"] == 40
    assert result["runs"][1]["p_value_ndcg@10"] < 0.01
    plot_runs(result, tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "b" / "per_query.json").write_text("{")
    with pytest.raises(UsageError, match="corrupt"):
        compare_runs([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(UsageError, match="not an evaluation run"):
        compare_runs([tmp_path])
