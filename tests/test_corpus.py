"""Corpus readers: every format, auto-detection, field overrides and bad input."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm2vec_search.corpus import Fields, ReadStats, read_corpus
from llm2vec_search.embed import chunk_spans
from llm2vec_search.errors import UsageError
from llm2vec_search.store import write_documents

DOCS = [{"_id": "d1", "title": "Cats", "text": "the cat sleeps"}, {"_id": "d2", "title": "", "text": "a dog runs"}]


def ids(path, **kw):
    return [(r.id, r.content) for r in read_corpus(path, **kw)]


def test_beir_folder_and_jsonl(tmp_path):
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in DOCS))
    assert ids(tmp_path) == [("d1", "Cats the cat sleeps"), ("d2", "a dog runs")]
    assert ids(tmp_path / "corpus.jsonl") == ids(tmp_path)


def test_csv_tsv_parquet_and_field_overrides(tmp_path):
    (tmp_path / "c.csv").write_text('doc,body\nx1,"hello, world"\nx2,second\n')
    assert ids(tmp_path / "c.csv", fields=Fields(id="doc", text="body")) == [("x1", "hello, world"), ("x2", "second")]
    (tmp_path / "c.tsv").write_text("id\ttext\ny1\tone\n")
    assert ids(tmp_path / "c.tsv") == [("y1", "one")]
    pq.write_table(pa.Table.from_pylist([{"id": "p1", "title": "T", "text": "body"}]), tmp_path / "c.parquet")
    assert ids(tmp_path / "c.parquet") == [("p1", "T body")]


def test_text_file_and_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("first para\nline two\n\nsecond para\n")
    assert ids(tmp_path / "notes.txt") == [("notes.txt:1", "first para\nline two"), ("notes.txt:2", "second para")]
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# A\ntext a")
    (folder / "sub" / "b.txt").write_text("text b")
    (folder / "skip.bin").write_bytes(b"\x00")
    assert [i for i, _ in ids(folder)] == ["a.md", "sub/b.txt"]


def test_empty_texts_are_skipped_and_counted(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": "  "}\n\n')
    stats = ReadStats()
    assert [r.id for r in read_corpus(tmp_path / "c.jsonl", stats=stats)] == ["a"]
    assert (stats.records, stats.empty) == (1, 1)


def test_malformed_lines_fail_with_location_or_are_skipped(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": \n{"id": "c", "text": "z"}\n')
    with pytest.raises(UsageError, match=r"c.jsonl:2: invalid JSON"):
        list(read_corpus(path))
    stats = ReadStats()
    assert [r.id for r in read_corpus(path, skip_invalid=True, stats=stats)] == ["a", "c"]
    assert stats.invalid == 1


def test_non_utf8_missing_fields_and_unknown_format(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_bytes(b'{"id": "a", "text": "caf\xe9"}\n')
    with pytest.raises(UsageError, match="not valid UTF-8"):
        list(read_corpus(bad))
    nofield = tmp_path / "n.jsonl"
    nofield.write_text('{"name": "a"}\n')
    with pytest.raises(UsageError, match="none of the fields"):
        list(read_corpus(nofield))
    with pytest.raises(UsageError, match="cannot tell the format"):
        list(read_corpus(tmp_path / "c.xml") if (tmp_path / "c.xml").write_text("x") else [])
    with pytest.raises(UsageError, match="not found"):
        list(read_corpus(tmp_path / "missing"))


def test_duplicate_ids_and_empty_corpus_are_refused(tmp_path):
    from llm2vec_search.corpus import Record

    with pytest.raises(UsageError, match=r"duplicate document ids \(1\), first: 'a'"):
        write_documents([Record("a", "", "x"), Record("a", "", "y")], tmp_path / "d.parquet")
    assert not (tmp_path / "d.parquet").exists()
    with pytest.raises(UsageError, match="no documents"):
        write_documents([], tmp_path / "d.parquet")


def test_chunk_spans_cover_the_text_with_overlap():
    offsets = [(i * 2, i * 2 + 1) for i in range(10)]  # ten one-char tokens with spaces
    spans = chunk_spans(offsets, window=4, overlap=1)
    assert spans[0] == (0, 7) and spans[-1][1] == 19
    starts = [offsets.index(next(o for o in offsets if o[0] == s)) for s, _ in spans]
    assert starts == [0, 3, 6]  # stride 3 = window - overlap, and the last window reaches the end
    assert chunk_spans(offsets[:3], window=4, overlap=1) == [(0, 5)]


def test_csv_quotes_are_strict(tmp_path):
    """An unbalanced quote used to swallow the rest of the file into one document."""
    path = tmp_path / "c.csv"
    path.write_text('id,text\n1,"hello\n2,world\n3,foo\n')
    with pytest.raises(UsageError, match=r"c.csv:2: malformed CSV \(a quote opened here is never closed\)"):
        list(read_corpus(path))
    stats = ReadStats()
    assert ids(path, skip_invalid=True, stats=stats) == [("2", "world"), ("3", "foo")] and stats.invalid == 1
    (tmp_path / "t.csv").write_text('id,text\n1,"hel"lo\n2,ok\n3,a,b\n')
    with pytest.raises(UsageError, match=r"t.csv:2: malformed CSV"):
        list(read_corpus(tmp_path / "t.csv"))
    stats = ReadStats()
    assert ids(tmp_path / "t.csv", skip_invalid=True, stats=stats) == [("2", "ok")] and stats.invalid == 2
    (tmp_path / "m.csv").write_text('id,text\n1,"two\nlines"\n\n2,"a ""quoted"" word"\n')
    assert ids(tmp_path / "m.csv") == [("1", "two\nlines"), ("2", 'a "quoted" word')]
