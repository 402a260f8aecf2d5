"""BEIR loading, the evaluation end to end (BM25, dense, hybrid), instructions, and run comparison."""

import json
import random

import pytest
from conftest import write_beir

from llm2vec_search.errors import UsageError
from llm2vec_search.evaluate import evaluate_beir, load_beir
from llm2vec_search.instructions import BEIR_INSTRUCTIONS, instruction_for
from llm2vec_search.metrics import METRICS, score_run

TINY = {"dtype": "fp32", "max_length": 64}


@pytest.fixture()
def beir(tmp_path):
    return write_beir(tmp_path / "toy", extra_qrels=["q-unknown\td1\t1", "q1\td-unknown\t1", "q-empty\td2\t1"],
                      queries_extra=[{"_id": "q-empty", "text": " "}])


def test_load_beir_counts_unknown_ids_and_empty_queries(beir):
    queries, qrels, skipped = load_beir(beir, "test")
    assert len(queries) == 8 and skipped == {"unknown_queries": 1, "unknown_documents": 1, "empty_queries": 1}
    assert qrels["q1"] == {"d1": 1}
    with pytest.raises(UsageError, match="no 'dev' split \\(available: test\\)"):
        load_beir(beir, "dev")
    with pytest.raises(UsageError, match="not a BEIR dataset: no corpus.jsonl or queries.jsonl"):
        load_beir(beir / "qrels", "test")


@pytest.mark.parametrize("damage,message", [
    (lambda f: (f / "corpus.jsonl").write_text('{"_id": "d0", "text": "x"}\n{broken\n'),
     "corpus.jsonl:2: invalid JSON"),
    (lambda f: (f / "queries.jsonl").write_text('{"text": "no id"}\n'),
     r"queries.jsonl:1: none of the fields _id, id found \(fields: text\)$"),
    (lambda f: (f / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n"), "test.tsv:2: expected"),
    (lambda f: (f / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n"), "integer score"),
    (lambda f: (f / "qrels" / "test.tsv").write_text("qx\td1\t1\n"), "no judged queries left .*1 unknown queries"),
])
def test_bad_beir_files_are_one_line_errors(beir, damage, message):
    from llm2vec_search.train.data import load_beir as training_pairs

    damage(beir)
    with pytest.raises(UsageError, match=message) as e:
        load_beir(beir, "test")
    if "no judged" not in message:  # training reads the files with the same reader: the same error
        with pytest.raises(UsageError) as t:
            training_pairs(beir, split="test", negatives="none")
        assert str(t.value) == str(e.value)


def test_beir_ids_may_be_named_id(beir):
    for name in ("corpus.jsonl", "queries.jsonl"):
        path = beir / name
        path.write_text(path.read_text().replace('"_id"', '"id"'))
    queries, qrels, skipped = load_beir(beir, "test")
    assert len(queries) == 8 and qrels["q1"] == {"d1": 1}


def test_instruction_table():
    assert instruction_for("scifact") == "Given a scientific claim, retrieve documents that support or refute the claim"
    assert instruction_for("NFCorpus") == BEIR_INSTRUCTIONS["nfcorpus"]
    assert instruction_for("FiQA2018") == BEIR_INSTRUCTIONS["fiqa"]  # MTEB task names work too
    assert instruction_for("webis-touche2020") == instruction_for("Touche2020")
    assert instruction_for("CQADupstackEnglishRetrieval") == BEIR_INSTRUCTIONS["cqadupstack"]
    assert instruction_for("beir-trec-covid") == BEIR_INSTRUCTIONS["trec-covid"]
    assert instruction_for("my-own-data") is None
    assert all(not v.endswith((":", " ")) for v in BEIR_INSTRUCTIONS.values())


def test_eval_bm25_writes_outputs_that_rescore_to_the_same_metrics(beir, tmp_path):
    result = evaluate_beir(beir, "test", mode="bm25", index_dir=tmp_path / "idx", out=tmp_path / "out",
                           show_progress=False)
    assert result["metrics"]["ndcg@10"] > 0.5  # queries copy words of their document
    assert result["instruction"] is None and result["encoder"] is None  # BM25 uses no instruction
    assert result["dataset"]["unknown_documents"] == 1 and result["dataset"]["queries"] == 8
    lines = [line.split() for line in (tmp_path / "out" / "run.trec").read_text().splitlines()]
    assert lines[0][:2] == ["q0", "Q0"] and lines[0][3] == "1"
    # run.trec read back (by rank) scores exactly what metrics.json says
    ranked = {}
    for qid, _, doc, rank, _, _ in lines:
        ranked.setdefault(qid, []).append((int(rank), doc))
    qrels = load_beir(beir, "test")[1]
    again, _ = score_run({q: {d: -r for r, d in docs} for q, docs in ranked.items()}, qrels)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert again == pytest.approx(written["metrics"], abs=1e-9) and "per_query" not in written
    per_query = json.loads((tmp_path / "out" / "per_query.json").read_text())
    assert set(per_query) == {f"q{i}" for i in range(8)} and set(per_query["q0"]) == set(METRICS)
    assert written["dataset"]["fingerprint"] and written["library_versions"]


def test_eval_dense_caches_index_records_instruction_and_hybrid(beir, tmp_path, tiny_model_dir):
    kw = dict(model=str(tiny_model_dir), index_dir=tmp_path / "idx", encoder_overrides=TINY, show_progress=False)
    dense = evaluate_beir(beir, "test", **kw)
    assert 0 <= dense["metrics"]["ndcg@10"] <= 1 and dense["encoder"]["pooling"] == "mean"
    assert dense["instruction"] is None and dense["instruction_source"] is None  # "toy" is not in the table
    again = evaluate_beir(beir, "test", instruction="find the passage", **kw)
    assert again["index"]["folder"] == dense["index"]["folder"]  # same data and encoder: index reused
    assert not dense["index"]["reused"] and again["index"]["reused"]
    assert again["instruction"] == "find the passage" and again["instruction_source"] == "override"
    same = evaluate_beir(beir, "test", **kw)
    assert same["metrics"] == dense["metrics"]
    hybrid = evaluate_beir(beir, "test", mode="hybrid", **kw)
    assert hybrid["index"]["folder"] == dense["index"]["folder"] and hybrid["metrics"]["ndcg@10"] > 0.3


def test_ignore_identical_ids_drops_the_query_itself(tmp_path):
    folder = write_beir(tmp_path / "argu", n_docs=10, n_queries=0)
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    # Queries share ids with documents (ArguAna style): each query is its own document's text.
    (folder / "queries.jsonl").write_text("\n".join(json.dumps({"_id": d["_id"], "text": d["text"]}) for d in docs))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"d{i}\td{(i + 1) % 10}\t1\n" for i in range(10)))
    kw = dict(mode="bm25", index_dir=tmp_path / "idx", show_progress=False, k=5)
    plain = evaluate_beir(folder, "test", out=tmp_path / "plain", **kw)
    dropped = evaluate_beir(folder, "test", ignore_identical_ids=True, out=tmp_path / "dropped", **kw)
    rows = [line.split() for line in (tmp_path / "dropped" / "run.trec").read_text().splitlines()]
    assert all(r[0] != r[2] for r in rows) and len([r for r in rows if r[0] == "d0"]) == 5
    first = [line.split() for line in (tmp_path / "plain" / "run.trec").read_text().splitlines()]
    assert any(r[0] == r[2] for r in first)
    assert dropped["metrics"]["mrr@10"] >= plain["metrics"]["mrr@10"]


def test_bad_mode_and_k(beir):
    with pytest.raises(UsageError, match="unknown mode 'sparse'; valid: dense, bm25, hybrid"):
        evaluate_beir(beir, mode="sparse")
    with pytest.raises(UsageError, match="k must be positive"):
        evaluate_beir(beir, mode="bm25", k=0)


def fake_run(folder, per_query, name="toy", mode="dense", fingerprint="f1"):
    folder.mkdir(parents=True)
    metrics = {k: sum(p[k] for p in per_query.values()) / len(per_query) for k in METRICS}
    (folder / "per_query.json").write_text(json.dumps(per_query))
    (folder / "metrics.json").write_text(json.dumps({"mode": mode, "metrics": metrics, "encoder": None, "dataset": {
        "name": name, "split": "test", "fingerprint": fingerprint}}))
    return folder


def test_compare_runs_paired_tests_and_plot(tmp_path):
    from llm2vec_search.compare import compare_runs, paired_tests, plot_runs

    rng = random.Random(0)
    base = {f"q{i}": {k: rng.random() * 0.5 for k in METRICS} for i in range(40)}
    better = {q: {k: min(1.0, v + 0.2 + rng.random() * 0.05) for k, v in m.items()} for q, m in base.items()}
    a, b = fake_run(tmp_path / "a", base), fake_run(tmp_path / "b", better)
    c = fake_run(tmp_path / "c", base)  # identical to the baseline
    result = compare_runs([a, b, c])
    assert result["same_dataset"] and result["runs"][1]["paired_queries"] == 40
    test = result["runs"][1]["tests"]["ndcg@10"]
    assert test["t_test"] < 1e-6 and test["randomization"] < 1e-3 and test["delta"] > 0.2
    assert result["runs"][2]["tests"]["ndcg@10"] == {"delta": 0.0, "t_test": None, "randomization": None}
    # A small random difference is not significant under either test.
    noise = [rng.gauss(0, 1) for _ in range(40)]
    p = paired_tests(noise, [x + rng.gauss(0, 0.01) for x in noise])
    assert p["t_test"] > 0.01 and p["randomization"] > 0.01
    plot_runs(result, tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    other = compare_runs([a, fake_run(tmp_path / "d", better, name="other")])
    assert not other["same_dataset"] and "tests" not in other["runs"][1]


def test_compare_refuses_corrupt_runs(tmp_path):
    from llm2vec_search.compare import compare_runs

    a = fake_run(tmp_path / "a", {"q1": dict.fromkeys(METRICS, 0.5)})
    b = fake_run(tmp_path / "b", {"q1": dict.fromkeys(METRICS, 0.5)})
    (b / "per_query.json").write_text("{")
    with pytest.raises(UsageError, match="corrupt"):
        compare_runs([a, b])
    (b / "per_query.json").write_text(json.dumps({"q1": {"ndcg@10": "high"}}))
    with pytest.raises(UsageError, match="corrupt \\(1 queries missing"):
        compare_runs([a, b])
    with pytest.raises(UsageError, match="not an evaluation run: metrics.json is missing"):
        compare_runs([tmp_path])
    with pytest.raises(UsageError, match="not a directory"):
        compare_runs([tmp_path / "nope"])


def test_mteb_adapter_scores_equal_our_eval(tmp_path, tiny_encoder):
    """mteb (optional extra) evaluating our encoder gives our own eval's numbers on the same data."""
    pytest.importorskip("mteb", reason="the mteb extra is not installed")
    import mteb
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.types import PromptType

    from llm2vec_search.mteb_adapter import MtebEncoder

    folder = write_beir(tmp_path / "toy")
    queries, qrels, _ = load_beir(folder, "test")
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]

    class ToyRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            type="Retrieval", name="ToyRetrieval", main_score="ndcg_at_10", description="toy", reference=None,
            dataset={"path": "NA", "revision": "NA"}, category="t2t", eval_splits=["test"], eval_langs=["eng-Latn"],
            date=None, dialect=[], domains=[], task_subtypes=[], license="cc-by-4.0", annotations_creators="derived",
            modalities=["text"], sample_creation="found", bibtex_citation="")

        def load_data(self, **kwargs):
            corpus = [{"id": d["_id"], "text": d["text"], "title": d["title"]} for d in docs]
            split = RetrievalSplitData(queries=Dataset.from_list([{"id": q, "text": t} for q, t in queries.items()]),
                                       corpus=Dataset.from_list(corpus), relevant_docs=qrels, top_ranked=None)
            self.dataset, self.data_loaded = {"default": {"test": split}}, True

    model = MtebEncoder(tiny_encoder)
    scores = mteb.evaluate(model, [ToyRetrieval()], cache=None).task_results[0].scores["test"][0]
    used = model.instructions_used
    assert used["ToyRetrieval/document"] is None and used["ToyRetrieval/query"]  # mteb's prompt: not in our table
    ours = evaluate_beir(folder, "test", encoder=tiny_encoder, instruction=used["ToyRetrieval/query"],
                         index_dir=tmp_path / "idx", show_progress=False)["metrics"]
    for theirs, key in (("ndcg_at_10", "ndcg@10"), ("recall_at_100", "recall@100"), ("mrr_at_10", "mrr@10")):
        assert scores[theirs] == pytest.approx(ours[key], abs=1e-5), key  # mteb rounds to 5 decimals
    scifact = ToyRetrieval.metadata.model_copy(update={"name": "SciFact"})
    assert model.instruction(scifact, PromptType.query) == instruction_for("scifact")
    assert model.instruction(scifact, PromptType.document) is None
