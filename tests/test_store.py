"""The index store: names, the writer lock, generations (atomic publish, held by readers, removed
when free), crashes at every write, legacy folders, and writers in real processes at once."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest
from conftest import run_cli
from test_update import CHUNK, TEXTS, assert_same_index, write

from llm2vec_search import manifest, store
from llm2vec_search.errors import IndexStateError, UsageError
from llm2vec_search.index import build_index
from llm2vec_search.search import SearchIndex
from llm2vec_search.store import IndexStore, check_name, safe_name
from llm2vec_search.update import append_documents, remove_documents

NEW = [("d0", "the cat sleeps in the old house"), ("d12", "a small mouse"), ("d13", "the bright city"),
       ("d14", "a sad wolf"), ("d15", "green tree")]

# A child process that builds, appends or removes with the tiny model in fp32 (as the fixtures do),
# optionally killing itself with SIGKILL just before its k-th file write in the index home becomes visible.
CHILD = r"""
import json, os, signal, sys
from llm2vec_search import manifest
from llm2vec_search.embed import ChunkConfig
a = json.loads(sys.argv[1])
if a.get("kill_at"):
    real, n = manifest._commit, [0]
    def commit(tmp, path):
        n[0] += str(path).startswith(a["home"])
        if n[0] == a["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)
        real(tmp, path)
    manifest._commit = commit
if a["what"] == "remove":
    from llm2vec_search.update import remove_documents
    remove_documents(a["ids"], a["name"], a["home"], show_progress=False)
    sys.exit(0)
from llm2vec_search.encoder import load_encoder
encoder = load_encoder(a["model"], dtype="fp32", device="cpu", max_length=128)
if a["what"] == "append":
    from llm2vec_search.update import append_documents
    append_documents(a["corpus"], a["name"], a["home"], encoder=encoder, show_progress=False)
else:
    from llm2vec_search.index import build_index
    build_index(a["corpus"], a["name"], a["home"], encoder=encoder, chunk=ChunkConfig(**a["chunk"]),
                part=tuple(a.get("part", (0, 1))), show_progress=False)
"""


def child(**args) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    args = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in args.items()}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture()
def base(tmp_path, tiny_encoder):
    corpus = write(tmp_path / "docs.jsonl", [(f"d{i}", t) for i, t in enumerate(TEXTS)])
    build_index(corpus, "docs", tmp_path / "idx", encoder=tiny_encoder, chunk=CHUNK, show_progress=False)
    return tmp_path


def merged_corpus(path):
    rows = [(f"d{i}", t) for i, t in enumerate(TEXTS)]
    rows[0] = NEW[0]
    return write(path, rows + NEW[1:])


def files(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


# -- names -------------------------------------------------------------------------------------
def test_index_names_are_checked_where_they_enter(monkeypatch, capsys, base, tmp_path):
    for good in ("docs", "eval-scifact-0123abcd", "v1.2_final"):
        assert check_name(good) == good
    for bad in ("..", ".", "a/b", "/abs", "", "a b", "x" * 201, "caf\u00e9"):
        with pytest.raises(UsageError, match="invalid index name"):
            check_name(bad)
    assert safe_name("my corpus (v2)") == "my-corpus-v2" and safe_name("..") == "index"
    home = str(base / "idx")
    for args in (["index", str(base / "docs.jsonl"), "--name", ".."], ["index", str(base / "docs.jsonl"), "--name",
                 "/etc/x", "--append"], ["query", "cat", "--index", "../docs"], ["remove", "d1", "--index", ".."],
                 ["serve", "--index", ".."]):
        code, out, err = run_cli(monkeypatch, capsys, *args, "--index-dir", home)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: invalid index name") and "Traceback" not in err
    assert sorted(p.name for p in (base / "idx").iterdir()) == ["docs"]


def test_eval_sanitizes_the_names_it_makes(monkeypatch, capsys, tmp_path):
    from conftest import write_beir

    beir = write_beir(tmp_path / "my data (copy)")
    code, out, err = run_cli(monkeypatch, capsys, "eval", str(beir), "--mode", "bm25", "--json", "--index-dir",
                             str(tmp_path / "idx"))
    assert code == 0, err
    assert json.loads(out)["index"]["name"] == "eval-my-data-copy-bm25"


# -- the writer lock ---------------------------------------------------------------------------
def test_a_second_writer_fails_at_once_or_waits_naming_the_holder(monkeypatch, capsys, base):
    home, more = str(base / "idx"), write(base / "more.jsonl", [("d20", "a blue bird")])
    with IndexStore(base / "idx", "docs").lock():
        code, _, err = run_cli(monkeypatch, capsys, "index", str(more), "--name", "docs", "--append", "--no-wait",
                               "--index-dir", home)
        assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert f"error: index 'docs' is being written by pid {os.getpid()} (" in err
        code, _, err = run_cli(monkeypatch, capsys, "remove", "d1", "--no-wait", "--index", "docs", "--index-dir", home)
        assert code != 0 and "is being written by pid" in err
    assert SearchIndex.open("docs", home).size == len(TEXTS)  # nothing changed

    lock = IndexStore(base / "idx", "docs").lock()
    threading.Timer(1.0, lock.release).start()
    code, out, err = run_cli(monkeypatch, capsys, "index", str(more), "--name", "docs", "--append", "--index-dir",
                             home, "--json")
    assert code == 0 and f"waiting for index 'docs': it is being written by pid {os.getpid()}" in err
    assert json.loads(out)["added"] == 1


def test_two_index_processes_on_one_name_give_one_build(tmp_path, tiny_model_dir, tiny_encoder):
    corpus = write(tmp_path / "docs.jsonl", [(f"d{i}", t) for i, t in enumerate(TEXTS)])
    chunk = {"docs_per_shard": 4}
    procs = [child(what="build", corpus=corpus, name="docs", home=tmp_path / "idx", model=tiny_model_dir,
                   chunk=chunk) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    reference = build_index(corpus, "ref", tmp_path / "idx", encoder=tiny_encoder, chunk=CHUNK, show_progress=False)
    store_ = IndexStore(tmp_path / "idx", "docs")
    assert [g.name for g in store_.generations()] == ["gen-000001"]  # one of them built, the other reused it
    assert_same_index(store_.current(), reference)
    assert SearchIndex.open("docs", tmp_path / "idx").search(["vaccine immune"], 1, mode="bm25")[0][0].id == "d2"


def test_shard_parts_in_parallel_then_a_finishing_run_equal_one_build(tmp_path, tiny_model_dir, tiny_encoder):
    corpus = write(tmp_path / "docs.jsonl", [(f"d{i}", t) for i, t in enumerate(TEXTS)])
    parts = [child(what="build", corpus=corpus, name="docs", home=tmp_path / "idx", model=tiny_model_dir,
                   chunk={"docs_per_shard": 4}, part=(i, 2)) for i in range(2)]
    results = [p.communicate(timeout=300) for p in parts]
    assert [p.returncode for p in parts] == [0, 0], results
    assert IndexStore(tmp_path / "idx", "docs").current() is None  # parts never publish
    folder = build_index(corpus, "docs", tmp_path / "idx", encoder=tiny_encoder, chunk=CHUNK, show_progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["timings"]["reused_shards"] == 3 and manifest["timings"]["embedded_shards"] == 0
    reference = build_index(corpus, "ref", tmp_path / "idx", encoder=tiny_encoder, chunk=CHUNK, show_progress=False)
    assert_same_index(folder, reference)


# -- generations -------------------------------------------------------------------------------
def test_a_complete_index_is_only_read(base, tiny_encoder):
    before = files(base / "idx")
    build_index(base / "docs.jsonl", "docs", base / "idx", encoder=tiny_encoder, chunk=CHUNK, show_progress=False)
    SearchIndex.open("docs", base / "idx").search(["cat"], 3)
    assert files(base / "idx") == before  # no lock file, no temporary, no rewritten table


def test_readers_keep_their_generation_until_they_let_it_go(base, tiny_encoder):
    from llm2vec_search.embed import ChunkConfig

    old = SearchIndex.open("docs", base / "idx")
    old._encoder = tiny_encoder
    append_documents(write(base / "new.jsonl", NEW), "docs", base / "idx", encoder=tiny_encoder,
                     show_progress=False)
    assert not old.is_current() and old.folder.is_dir()  # held: not removed at the publish
    for mode in ("bm25", "hybrid", "dense"):  # BM25 loads now, from the old generation, as it was
        assert "d12" not in {h.id for h in old.search(["a small mouse"], k=20, mode=mode)[0]}
    new = SearchIndex.open("docs", base / "idx")
    assert new.size == len(TEXTS) + 4 and new.search(["small mouse"], 1, mode="bm25")[0][0].id == "d12"
    old.close()

    # Re-embedding with another encoder is one more generation: the one in use keeps answering.
    other = type(tiny_encoder)(tiny_encoder.model, tiny_encoder.tokenizer,
                               tiny_encoder.config.__class__(**{**tiny_encoder.config.__dict__, "pooling": "eos"}),
                               tiny_encoder.source)
    build_index(merged_corpus(base / "merged.jsonl"), "docs", base / "idx", encoder=other,
                chunk=ChunkConfig(docs_per_shard=4), show_progress=False)
    assert new.search(["small mouse"], 1, mode="bm25")[0][0].id == "d12" and not new.is_current()
    assert [g.name for g in IndexStore(base / "idx", "docs").generations()] == ["gen-000002", "gen-000003"]
    new.close()
    remove_documents(["d13"], "docs", base / "idx", show_progress=False)  # the next publish removes what is free
    assert [g.name for g in IndexStore(base / "idx", "docs").generations()] == ["gen-000004"]
    assert SearchIndex.open("docs", base / "idx").manifest.encoder["pooling"] == "eos"


def test_an_index_of_the_layout_before_generations_asks_for_a_rebuild(monkeypatch, capsys, base, tiny_encoder):
    legacy = base / "idx" / "old"
    legacy.mkdir()
    (legacy / "manifest.json").write_text(json.dumps({"kind": "llm2vec-search.index", "name": "old"}))
    (legacy / "documents.parquet").write_bytes(b"PAR1")
    code, _, err = run_cli(monkeypatch, capsys, "query", "cat", "--index", "old", "--index-dir", str(base / "idx"))
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "built by an older llm2vec-search" in err and "rebuild it with `l2v-search index CORPUS --name old`" in err
    build_index(base / "docs.jsonl", "old", base / "idx", encoder=tiny_encoder, chunk=CHUNK, show_progress=False)
    assert sorted(p.name for p in legacy.iterdir()) == ["CURRENT", "LOCK", "gen-000001"]
    assert SearchIndex.open("old", base / "idx").size == len(TEXTS)


class Crash(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way catches it."""


def crash_at(monkeypatch, k, home):
    """Crash just before the k-th write under ``home`` becomes visible."""
    real, n = manifest._commit, [0]

    def commit(tmp, path):
        n[0] += path.is_relative_to(home)
        if n[0] == k:
            raise Crash
        real(tmp, path)

    monkeypatch.setattr(manifest, "_commit", commit)


@pytest.mark.parametrize("what", ["build", "update"])
def test_a_crash_at_every_write_leaves_the_old_generation_and_a_rerun_finishes(what, base, tiny_encoder,
                                                                             monkeypatch, tmp_path):
    reference = build_index(merged_corpus(base / "merged.jsonl"), "ref", base / "ref", encoder=tiny_encoder,
                            chunk=CHUNK, show_progress=False)
    new = write(base / "new.jsonl", NEW)

    def run(home):
        if what == "update":
            return append_documents(new, "docs", home, encoder=tiny_encoder, show_progress=False)[0]
        return build_index(base / "merged.jsonl", "docs", home, encoder=tiny_encoder, chunk=CHUNK,
                           show_progress=False)

    for k in range(1, 100):
        home = tmp_path / f"k{k}"
        shutil.copytree(base / "idx", home)
        crash_at(monkeypatch, k, home)
        try:
            run(home)
            break  # fewer than k writes: every step was tried
        except Crash:
            pass
        monkeypatch.undo()
        idx = SearchIndex.open("docs", home)  # the old generation answers until the new one is published
        assert idx.size == len(TEXTS), k
        assert_same_index(run(home), reference)
        assert idx.search(["cat"], 3, mode="bm25")[0] and idx.folder.is_dir()  # held: still there, still answers
        assert len(IndexStore(home, "docs").generations()) == 2  # the held one and the new one: nothing else left
    assert k > 10


def test_kill_9_before_the_switch_then_a_rerun_publishes(base, tiny_model_dir, tiny_encoder):
    reference = build_index(merged_corpus(base / "merged.jsonl"), "ref", base / "ref", encoder=tiny_encoder,
                            chunk=CHUNK, show_progress=False)
    new = write(base / "new.jsonl", NEW)
    # 2 staging writes, 4 shards, FAISS, 2 lookup tables, BM25, manifest: the 12th is CURRENT.
    proc = child(what="append", corpus=new, name="docs", home=base / "idx", model=tiny_model_dir, kill_at=12)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    held = json.loads((base / "idx" / "docs" / "LOCK").read_text())
    assert held["pid"] == proc.pid  # the dead writer's record; the lock itself died with it
    assert SearchIndex.open("docs", base / "idx").size == len(TEXTS)
    folder, _ = append_documents(new, "docs", base / "idx", encoder=tiny_encoder, show_progress=False)
    assert_same_index(folder, reference)
    assert json.loads((base / "idx" / "docs" / "LOCK").read_text())["pid"] == os.getpid()


@pytest.mark.slow
@pytest.mark.parametrize("what", ["build", "append", "remove"])
def test_kill_9_at_every_write(what, base, tiny_model_dir, tiny_encoder, tmp_path):
    """A real SIGKILL before each write of a build, an append and a removal becomes visible."""
    new = write(base / "new.jsonl", NEW)
    if what == "remove":
        result = write(base / "kept.jsonl", [(f"d{i}", t) for i, t in enumerate(TEXTS) if i != 3])
        args = dict(what="remove", ids=["d3"])
    else:
        result = merged_corpus(base / "merged.jsonl")
        args = dict(what="append", corpus=new) if what == "append" else dict(what="build", corpus=result,
                                                                              chunk={"docs_per_shard": 4})
    reference = build_index(result, "ref", base / "ref", encoder=tiny_encoder, chunk=CHUNK, show_progress=False)
    for k in range(1, 100):
        home = tmp_path / f"k{k}"
        shutil.copytree(base / "idx", home)
        proc = child(name="docs", home=home, model=tiny_model_dir, kill_at=k, **args)
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
        old = SearchIndex.open("docs", home)  # the old generation still answers
        assert old.size == len(TEXTS) and old.search(["the cat"], 3, mode="bm25")[0]
        if what == "remove":
            folder, _ = remove_documents(["d3"], "docs", home, show_progress=False)
        elif what == "append":
            folder, _ = append_documents(new, "docs", home, encoder=tiny_encoder, show_progress=False)
        else:
            folder = build_index(result, "docs", home, encoder=tiny_encoder, chunk=CHUNK, show_progress=False)
        assert_same_index(folder, reference)
    assert k > 8


def test_write_lookups_refuses_shards_of_other_documents(base, tiny_encoder):
    gen = IndexStore(base / "idx", "docs").current()
    (gen / "shards" / "shard-00001.parquet").unlink()
    with pytest.raises(IndexStateError, match="do not hold the documents"):
        store.write_lookups(gen)
