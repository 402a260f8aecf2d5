"""Lazy imports: a BM25 query loads neither torch nor FAISS (seconds saved on every `query --mode
bm25`), and resolving models or devices imports no torch until a function needs it."""

import json
import os
import subprocess
import sys

from conftest import word_index

PROBE = """
import sys
from llm2vec_search import devices, models  # noqa: F401
assert "torch" not in sys.modules, "importing devices/models imported torch"
from llm2vec_search.cli import main
sys.argv = ["l2v-search", "query", "cat dog river", "--index-dir", sys.argv[1], "--mode", "bm25", "--no-server",
            "--json"]
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
print(sorted(m for m in ("torch", "faiss", "transformers") if m in sys.modules))
"""


def test_a_bm25_query_imports_neither_torch_nor_faiss(tmp_path, tiny_encoder):
    word_index(tmp_path, tiny_encoder)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "L2V_SEARCH_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    *hits, loaded = proc.stdout.strip().splitlines()
    assert json.loads(hits[0]) and loaded == "[]", (loaded, proc.stderr)


def test_index_output_has_no_library_debug_chatter(tmp_path, tiny_model_dir):
    """bm25s sets its logger to DEBUG when imported: a fresh `index` process must not print it."""
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"_id": f"d{i}", "text": f"the cat number {i} sleeps"}) for i in range(12)))
    proc = subprocess.run([sys.executable, "-c", "from llm2vec_search.cli import main; main()", "index", str(corpus),
                           "--name", "docs", "--index-dir", str(tmp_path / "idx"), "--model", str(tiny_model_dir)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "L2V_SEARCH_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "idx" / "docs" / "CURRENT").exists()
    assert "DEBUG" not in proc.stderr and "Building index" not in proc.stderr, proc.stderr
