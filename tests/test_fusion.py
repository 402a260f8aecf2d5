"""Hybrid fusion on hand-built rankings, and the default mode (hybrid where the index has BM25)."""

import json

import pytest
from conftest import run_cli as run

from llm2vec_search.errors import UsageError
from llm2vec_search.fusion import DEFAULT_FUSION, Fusion, fuse

DENSE = [("a", 0.9, 0), ("b", 0.8, 1), ("c", 0.5, 0)]
SPARSE = [("c", 12.0, None), ("d", 6.0, None), ("a", 3.0, None)]


def ids(ranking):
    return [d for d, _, _ in ranking]


def test_rrf_sums_reciprocal_ranks():
    fused = fuse(DENSE, SPARSE, Fusion("rrf", rrf_k=60))
    scores = {d: s for d, s, _ in fused}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62) and scores["d"] == pytest.approx(1 / 62)
    # a and c tie, as do b and d: ties keep dense order first, then BM25 order
    assert ids(fused) == ["a", "c", "b", "d"]


def test_convex_normalizes_each_list_and_weights_the_dense_side():
    fused = fuse(DENSE, SPARSE, Fusion("convex", alpha=0.5))
    scores = {d: s for d, s, _ in fused}
    # dense min-max over [0.5, 0.9]; BM25 over [3, 12]; a document missing from a list gets 0 there
    assert scores["a"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
    assert scores["b"] == pytest.approx(0.5 * 0.75)
    assert scores["c"] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    assert scores["d"] == pytest.approx(0.5 * 3 / 9)
    assert ids(fused) == ["a", "c", "b", "d"]  # a and c tie at 0.5: dense order first
    assert ids(fuse(DENSE, SPARSE, Fusion("convex", alpha=1.0)))[:3] == ids(DENSE)
    assert ids(fuse(DENSE, SPARSE, Fusion("convex", alpha=0.0)))[:3] == ids(SPARSE)


@pytest.mark.parametrize("fusion", [Fusion("rrf"), Fusion("convex", alpha=0.3)])
def test_one_empty_list_leaves_the_other_order(fusion):
    assert ids(fuse(DENSE, [], fusion)) == ids(DENSE)
    assert ids(fuse([], SPARSE, fusion)) == ids(SPARSE)
    assert fuse([], [], fusion) == []


def test_chunk_comes_from_the_dense_side_and_equal_scores_normalize_to_one():
    fused = fuse([("x", 0.7, 3), ("y", 0.7, 1)], [("y", 2.0, None)], Fusion("convex", alpha=0.5))
    assert dict((d, c) for d, _, c in fused) == {"x": 3, "y": 1}
    assert ids(fused) == ["y", "x"]  # equal dense scores count 1 each: y 0.5 + 0.5, x 0.5 + 0
    assert [s for _, s, _ in fused] == pytest.approx([1.0, 0.5])


@pytest.mark.parametrize("kw,message", [({"method": "max"}, "valid fusions are: rrf, convex"),
                                        ({"alpha": 1.5}, "--alpha must be between 0 and 1")])
def test_bad_fusion_is_refused(kw, message):
    with pytest.raises(UsageError, match=message):
        Fusion(**kw)


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"id": f"d{i}", "title": t, "text": x} for i, (t, x) in enumerate([
        ("cats", "the cat sleeps in the house"), ("dogs", "a dog runs to the river"),
        ("vaccines", "a vaccine trains the immune system against a virus"), ("rivers", "water in the river")])]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_default_mode_is_hybrid_with_bm25_and_dense_without(monkeypatch, capsys, corpus, tmp_path, tiny_model_dir):
    home = str(tmp_path / "idx")
    for name, extra in (("both", []), ("vectors", ["--no-bm25"])):
        code, _, err = run(monkeypatch, capsys, "index", str(corpus), "--name", name, "--model", str(tiny_model_dir),
                           "--index-dir", home, *extra)
        assert code == 0, err
    code, out, _ = run(monkeypatch, capsys, "query", "vaccine immune", "--index", "both", "--index-dir", home,
                       "--json")
    result = json.loads(out)
    assert code == 0 and result["mode"] == "hybrid" and result["fusion"] == DEFAULT_FUSION.describe()
    assert result["results"][0]["id"] == "d2"  # BM25's side finds the only document with both words
    code, out, _ = run(monkeypatch, capsys, "query", "vaccine immune", "--index", "vectors", "--index-dir", home,
                       "--json")
    assert code == 0 and json.loads(out)["mode"] == "dense" and json.loads(out)["fusion"] is None
    code, out, _ = run(monkeypatch, capsys, "query", "vaccine", "--index", "both", "--index-dir", home, "--json",
                       "--fusion", "rrf")
    assert code == 0 and json.loads(out)["fusion"] == "rrf(k=60)"
    code, _, err = run(monkeypatch, capsys, "query", "vaccine", "--index", "both", "--index-dir", home,
                       "--fusion", "rrf", "--alpha", "0.3")
    assert code != 0 and "--alpha applies to --fusion convex only" in err


def test_convex_top_does_not_depend_on_list_depth():
    """Normalization uses each list's top norm_depth hits, so asking for 1,000 hits (eval) ranks the
    top like asking for 10 (query), whose lists are norm_depth deep."""
    import random

    rng = random.Random(0)
    dense = sorted(((f"d{i}", rng.random(), None) for i in range(500)), key=lambda x: -x[1])
    sparse = sorted(((f"d{i}", rng.random() * 20, None) for i in rng.sample(range(800), 500)), key=lambda x: -x[1])
    f = Fusion("convex", alpha=0.4, norm_depth=100)
    deep = fuse(dense, sparse, f)
    shallow = fuse(dense[:100], sparse[:100], f)
    assert ids(deep)[:50] == ids(shallow)[:50]
