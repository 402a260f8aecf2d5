"""Training pairs from text alone (title, sentence, crop) and from SQuAD JSON."""

import gzip
import json
import random

import pytest
from conftest import run_cli as run

from llm2vec_search.corpus import Record
from llm2vec_search.errors import UsageError
from llm2vec_search.train.data import load_jsonl
from llm2vec_search.train.pairs import (
    load_squad,
    make_pairs,
    pairs_source,
    passages,
    split_sentences,
    title_body,
)

TOPICS = ["river", "glacier", "volcano", "desert", "forest", "ocean", "island", "canyon", "prairie", "lagoon"]


def article(i: int, topic: str) -> Record:
    paras = [f"The {topic} number {i} is a landform studied by many people. It lies in a region with a long history "
             f"of {topic} research. Scientists measure the {topic} every year. They publish the data online.",
             "Section heading.",
             f"Visitors come to the {topic} in summer. The {topic} has paths and guides. Local towns sell maps of the "
             f"{topic} area. Some visitors stay for weeks."]
    return Record(f"a{i}", f"{topic.title()} {i}", "\n".join(paras))


@pytest.fixture()
def pool():
    return passages([article(i, TOPICS[i % len(TOPICS)]) for i in range(30)], min_words=10)


def test_passages_split_paragraphs_and_drop_headings(pool):
    assert len(pool) == 60 and {p.doc for p in pool} == {f"a{i}" for i in range(30)}
    assert pool[0].id == "a0#0" and all("Section heading" not in p.text for p in pool)
    single = passages([Record("d1", "T", "one paragraph " * 10)])
    assert [p.id for p in single] == ["d1"]


def test_title_body_cuts_a_heading_copy_only():
    cranfield = "experimental study of a wing in a slipstream ."
    assert title_body(cranfield, cranfield + " an experimental study was made") == "an experimental study was made"
    assert title_body("Paris", "Paris is the capital of France.") == "Paris is the capital of France."
    assert title_body("Paris", "Paris.\nThe capital of France.") == "The capital of France."


def test_split_sentences():
    assert split_sentences("One here. Two there! Three? 4 is a digit.") == ["One here.", "Two there!", "Three?",
                                                                             "4 is a digit."]


@pytest.mark.parametrize("kind", ["title", "sentence", "crop"])
def test_pairs_one_per_document_and_query_not_copied(pool, kind):
    pairs = make_pairs(pool, kind, 20, random.Random(0), crop_words=(5, 8))
    assert 10 <= len(pairs) <= 20
    assert len({p.doc for _, p in pairs}) == len(pairs)
    for query, pos in pairs:
        if kind == "title":
            assert query == f"{TOPICS[int(pos.doc[1:]) % len(TOPICS)].title()} {pos.doc[1:]}" and pos.title == ""
        else:
            assert query not in pos.text and pos.title  # the span is cut out; the title stays in front
            assert pos.content.startswith(pos.title)


def test_unknown_kind(pool):
    with pytest.raises(UsageError, match="valid kinds are: title, sentence, crop"):
        make_pairs(pool, "summary", 3, random.Random(0))


def test_negatives_never_come_from_the_positives_document(pool):
    pairs = make_pairs(pool, "sentence", 20, random.Random(1))
    src = pairs_source("t", pairs, pool, "instr", depth=(0, 30))
    by_id = {p.id: p for p in pool}
    assert src.has_negatives and len(src.examples) == len(pairs)
    for e in src.examples:
        assert by_id[e.negative_id].doc != by_id[e.positive_id].doc
        assert src.judged[e.query_id] == {p.id for p in pool if p.doc == by_id[e.positive_id].doc}
    with pytest.raises(UsageError, match="no training pairs"):
        pairs_source("t", [], pool, None)


def squad_file(tmp_path):
    paras = []
    for i, topic in enumerate(TOPICS):
        ctx = f"The {topic} of region {i} was mapped in {1900 + i}. Its guide was named Guide{i}."
        paras.append({"context": ctx, "qas": [
            {"question": f"When was the {topic} of region {i} mapped?", "answers": [{"text": str(1900 + i)}]},
            {"question": f"Who guided the {topic} mapping?", "answers": [{"text": f"Guide{i}"}]}]})
    # a paragraph that holds another paragraph's answer: never that question's negative
    paras.append({"context": "In 1900 a river of region 0 was also mapped by the same river survey.", "qas": []})
    path = tmp_path / "squad.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"data": [{"title": "Maps_of_the_world", "paragraphs": paras}]}, f)
    return path


def test_squad_pairs_negatives_hold_no_answer(tmp_path):
    src = load_squad(squad_file(tmp_path), max_pairs=10, depth=(0, 30))
    assert len(src.examples) == 10 and src.instruction is None
    assert len({e.positive_id for e in src.examples}) == 10  # one question per paragraph first
    for e in src.examples:
        assert e.positive.startswith("Maps of the world ") and e.negative_id != e.positive_id
        if "region 0 mapped" in e.query:
            assert "1900" not in e.negative
    assert len(load_squad(squad_file(tmp_path), negatives=False).examples) == 20


def test_squad_bad_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    with pytest.raises(UsageError, match="not SQuAD JSON"):
        load_squad(bad)
    with pytest.raises(UsageError, match="SQuAD file not found"):
        load_squad(tmp_path / "missing.json")


def test_train_pairs_cli_writes_jsonl_for_supervised(monkeypatch, capsys, tmp_path):
    corpus = tmp_path / "wiki.jsonl"
    corpus.write_text("".join(json.dumps({"id": r.id, "title": r.title, "text": r.text}) + "\n"
                              for r in (article(i, TOPICS[i % len(TOPICS)]) for i in range(30))))
    out = tmp_path / "pairs.jsonl"
    code, _, err = run(monkeypatch, capsys, "train", "pairs", str(corpus), "--kind", "sentence", "--n", "12",
                       "-o", str(out))
    assert code == 0, err
    (source,) = load_jsonl(out)
    assert len(source.examples) == 12 and source.instruction == "Given a sentence, retrieve the passage it comes from"
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"id": "1", "text": "too short"}) + "\n")
    code, _, err = run(monkeypatch, capsys, "train", "pairs", str(empty), "-o", str(tmp_path / "o.jsonl"))
    assert code != 0 and "no passage of 10 words or more" in err and not (tmp_path / "o.jsonl").exists()


def test_keyword_pairs_negatives_never_name_the_word(pool):
    pairs = make_pairs(pool, "keyword", 30, random.Random(0), df_range=(2, 5))
    assert pairs and all(q in TOPICS and q in pos.content.lower() for q, pos in pairs)
    src = pairs_source("kw", pairs, pool, None, depth=(0, 30), keyword=True)
    for e in src.examples:
        assert e.query not in e.negative.lower()
        assert {p.id for p in pool if e.query in p.content.lower()} <= src.judged[e.query_id]
