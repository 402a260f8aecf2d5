"""Index updates: --append (new and changed documents by content hash) and remove, each equal to a
fresh build of the resulting corpus, re-embedding only what changed, and resumable."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import run_cli as run

from llm2vec_search.embed import ChunkConfig
from llm2vec_search.errors import IndexStateError, UsageError
from llm2vec_search.index import build_index
from llm2vec_search.search import SearchIndex
from llm2vec_search.store import iter_shards
from llm2vec_search.update import append_documents, remove_documents

CHUNK = ChunkConfig(docs_per_shard=4)
TEXTS = ["the cat sleeps in the house", "a dog runs to the river", "a vaccine trains the immune system",
         "water in the river", "a protein in the cell", "climate and energy research", "the bird flies",
         "a horse eats", "old book on the tree", "the patient and the drug"]


def write(path, rows):
    path.write_text("\n".join(json.dumps({"id": i, "title": "", "text": t}) for i, t in rows))
    return path


def shards(folder):
    t = [s for s in iter_shards(folder)]
    ids = [x for s in t for x in s.column("id").to_pylist()]
    vec = np.concatenate([np.stack(s.column("vector").to_numpy(zero_copy_only=False)) for s in t])
    return ids, vec


def assert_same_index(a, b):
    ids_a, va = shards(a)
    ids_b, vb = shards(b)
    assert ids_a == ids_b
    np.testing.assert_allclose(va, vb, atol=1e-5)
    da, db = pq.read_table(a / "documents.parquet"), pq.read_table(b / "documents.parquet")
    assert da.equals(db)
    ma, mb = (json.loads((f / "manifest.json").read_text()) for f in (a, b))
    assert ma["corpus"]["fingerprint"] == mb["corpus"]["fingerprint"] and ma["fingerprint"] == mb["fingerprint"]
    assert ma["faiss"]["vectors"] == mb["faiss"]["vectors"]


@pytest.fixture()
def base(tmp_path, tiny_encoder):
    corpus = write(tmp_path / "docs.jsonl", [(f"d{i}", t) for i, t in enumerate(TEXTS)])
    build_index(corpus, "docs", tmp_path / "idx", encoder=tiny_encoder, chunk=CHUNK, show_progress=False)
    return tmp_path


def test_append_equals_a_fresh_build_and_embeds_only_what_changed(base, tiny_encoder):
    new = write(base / "new.jsonl", [("d3", "water in the old river"), ("d5", TEXTS[5]), ("d10", "a red fish swims"),
                                    ("d11", "the gene and the virus")])
    folder, stats = append_documents(new, "docs", base / "idx", encoder=tiny_encoder, show_progress=False)
    assert (stats.added, stats.changed, stats.unchanged, stats.removed) == (2, 1, 1, 0)
    assert (stats.embedded, stats.reused) == (3, 9)

    merged = [(f"d{i}", t) for i, t in enumerate(TEXTS)]
    merged[3] = ("d3", "water in the old river")
    fresh = write(base / "merged.jsonl", merged + [("d10", "a red fish swims"), ("d11", "the gene and the virus")])
    assert_same_index(folder, build_index(fresh, "fresh", base / "idx", encoder=tiny_encoder, chunk=CHUNK,
                                          show_progress=False))
    assert json.loads((folder / "manifest.json").read_text())["updates"][0]["added"] == 2

    hits = SearchIndex.open("docs", base / "idx").search(["red fish"], k=1, mode="bm25")[0]
    assert hits[0].id == "d10"
    # The same append again changes nothing.
    _, again = append_documents(new, "docs", base / "idx", encoder=tiny_encoder, show_progress=False)
    assert (again.added, again.changed, again.unchanged, again.embedded) == (0, 0, 4, 0)


def test_remove_equals_a_fresh_build_without_reembedding(base, tiny_encoder, monkeypatch):
    import llm2vec_search.index as pipeline

    monkeypatch.setattr(pipeline, "embed_chunks", lambda *a, **k: pytest.fail("remove must not re-embed"))
    folder, stats = remove_documents(["d1", "d6"], "docs", base / "idx", show_progress=False)
    assert (stats.removed, stats.embedded, stats.reused) == (2, 0, 8)
    monkeypatch.undo()  # the fresh build below embeds, of course
    kept = [(f"d{i}", t) for i, t in enumerate(TEXTS) if i not in (1, 6)]
    assert_same_index(folder, build_index(write(base / "kept.jsonl", kept), "fresh", base / "idx",
                                          encoder=tiny_encoder, chunk=CHUNK, show_progress=False))
    assert sorted(p.name for p in (folder / "shards").iterdir()) == ["shard-00000.parquet", "shard-00001.parquet"]
    assert not (folder / "previous-shards").exists() and not (folder / "update.json").exists()


def test_remove_unknown_ids_changes_nothing(base):
    before = sorted(p.relative_to(base) for p in (base / "idx").rglob("*"))
    current = (base / "idx" / "docs" / "CURRENT").read_text()
    with pytest.raises(UsageError, match="not in the index.*'nope'"):
        remove_documents(["d1", "nope"], "docs", base / "idx", show_progress=False)
    with pytest.raises(UsageError, match="removing all 10 documents would leave the index empty; nothing removed"):
        remove_documents([f"d{i}" for i in range(10)], "docs", base / "idx", show_progress=False)
    assert (base / "idx" / "docs" / "CURRENT").read_text() == current
    assert sorted(p.relative_to(base) for p in (base / "idx").rglob("*")) == before
    with pytest.raises(IndexStateError, match="no finished index 'other'"):
        remove_documents(["d1"], "other", base / "idx", show_progress=False)


def test_an_interrupted_append_keeps_the_old_generation_and_a_rerun_finishes_it(base, tiny_encoder, monkeypatch):
    import llm2vec_search.index as update

    new = write(base / "new.jsonl", [("d0", "the cat sleeps in the old house"), ("d12", "a small mouse"),
                                    ("d13", "the bright city"), ("d14", "a sad wolf"), ("d15", "green tree")])
    real, calls = update.embed_chunks, []

    def crash_on_second(*args, **kwargs):  # shard 0 (d0 changed) is written, shard 2 is not
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(update, "embed_chunks", crash_on_second)
    monkeypatch.setattr(update, "ENCODE_GROUP_DOCS", 1)  # one shard per encoder call
    with pytest.raises(KeyboardInterrupt):
        append_documents(new, "docs", base / "idx", encoder=tiny_encoder, show_progress=False)
    old = SearchIndex.open("docs", base / "idx")  # the published generation still answers, as it was
    assert old.size == len(TEXTS) and "d12" not in {h.id for h in old.search(["small mouse"], k=20, mode="bm25")[0]}
    old.close()
    monkeypatch.setattr(update, "embed_chunks", real)
    folder, stats = append_documents(new, "docs", base / "idx", encoder=tiny_encoder, show_progress=False)

    merged = [(f"d{i}", t) for i, t in enumerate(TEXTS)]
    merged[0] = ("d0", "the cat sleeps in the old house")
    rows = merged + [("d12", "a small mouse"), ("d13", "the bright city"), ("d14", "a sad wolf"), ("d15", "green tree")]
    assert_same_index(folder, build_index(write(base / "merged.jsonl", rows), "fresh", base / "idx",
                                          encoder=tiny_encoder, chunk=CHUNK, show_progress=False))


def test_cli_append_and_remove(monkeypatch, capsys, base):
    home = str(base / "idx")
    new = write(base / "more.jsonl", [("d20", "a blue bird"), ("d2", TEXTS[2])])
    code, out, err = run(monkeypatch, capsys, "index", str(new), "--name", "docs", "--append", "--index-dir", home,
                         "--json")
    assert code == 0, err
    assert {k: json.loads(out)[k] for k in ("added", "unchanged", "documents")} == {"added": 1, "unchanged": 1,
                                                                                    "documents": 11}
    code, _, err = run(monkeypatch, capsys, "remove", "d20", "d0", "--index", "docs", "--index-dir", home)
    assert code == 0 and "2 removed" in err and "now 9 documents" in err
    code, _, err = run(monkeypatch, capsys, "remove", "d20", "--index", "docs", "--index-dir", home)
    assert code != 0 and err.startswith("error:") and "not in the index" in err and "Traceback" not in err
    code, _, err = run(monkeypatch, capsys, "index", str(new), "--name", "nope", "--append", "--index-dir", home)
    assert code != 0 and err.startswith("error:") and "no finished index 'nope'" in err
