"""``query`` through a running server (``--server URL``, or found through the record ``serve``
leaves in the index home): the same output as in process for every mode and format, and a
stale record falls back to this process with a note."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import run_cli as run
from test_serve_e2e import free_port, index_home  # noqa: F401 (a fixture)

from llm2vec_search import serve_record

QUERIES = ["vaccine immune virus", "a dog and the river", "cell protein"]


@pytest.fixture(scope="module")
def home(request):
    """The served index of test_serve_e2e (docs: six small documents), and a query file."""
    home = request.getfixturevalue("index_home")
    (home / "q.tsv").write_text("".join(f"q{i}\t{q}\n" for i, q in enumerate(QUERIES)))
    return home


@pytest.fixture(scope="module")
def url(home):
    """The app of ``l2v-search serve`` on loopback, in a thread of this process (no second torch)."""
    import uvicorn

    from llm2vec_search.server import SearchService, ServeConfig, create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(SearchService(None, home, ServeConfig())), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


FORMATS = [[], ["--json"], ["--queries", "{home}/q.tsv", "--format", "jsonl"],
           ["--queries", "{home}/q.tsv", "--format", "trec"]]


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid", None])
@pytest.mark.parametrize("fmt", FORMATS, ids=["table", "json", "jsonl", "trec"])
def test_server_output_equals_in_process_output(monkeypatch, capsys, home, url, mode, fmt):
    args = [a.format(home=home) for a in fmt]
    if "--queries" not in args:
        args = [QUERIES[0], *args]
    args += ["--index-dir", str(home), "-k", "4", *(["--mode", mode] if mode else [])]
    code, here, err = run(monkeypatch, capsys, "query", *args, "--no-server")
    assert code == 0, err
    code, served, err = run(monkeypatch, capsys, "query", *args, "--server", url)
    assert code == 0 and err == "", err
    assert served == here and here.strip()


def test_a_recorded_live_server_is_used(monkeypatch, capsys, home, url):
    from llm2vec_search import query

    code, here, _ = run(monkeypatch, capsys, "query", QUERIES[1], "--index-dir", str(home), "--json", "--no-server")
    record = serve_record.write(home, url, ["docs"])
    try:
        monkeypatch.setattr(query, "_in_process", lambda *a: pytest.fail("searched in process"))
        code, served, err = run(monkeypatch, capsys, "query", QUERIES[1], "--index-dir", str(home), "--json")
        assert code == 0 and err == "" and served == here
        code, _, err = run(monkeypatch, capsys, "indexes", "--index-dir", str(home), "--json")
        assert code == 0 and "serve" not in err  # the record's folder is not an index
    finally:
        serve_record.remove(record)


def test_a_stale_record_falls_back_with_a_note(monkeypatch, capsys, home):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = home / serve_record.FOLDER / f"{dead.pid}.json"
    record.write_text(json.dumps({"url": f"http://127.0.0.1:{free_port()}", "pid": dead.pid,
                                  "host": socket.gethostname(), "indexes": ["docs"]}))
    code, out, err = run(monkeypatch, capsys, "query", QUERIES[0], "--index-dir", str(home), "--json", "--mode", "bm25")
    assert code == 0 and json.loads(out)["results"][0]["id"] == "d2"
    assert err.count("\n") == 1 and err.startswith("note:") and "searching in this process" in err
    assert not record.exists()  # its process is gone: removed


@pytest.mark.parametrize("args,message", [
    (["--server", "http://127.0.0.1:{port}"], "cannot reach the server at http://127.0.0.1:"),
    (["--server", "{url}", "--fusion", "rrf"], "are not sent to a server"),
    (["--server", "{url}", "--index", "nope"], "unknown index 'nope'"),
    (["--server", "{url}", "--no-server"], "give --server URL or --no-server"),
])
def test_server_errors_are_one_line(monkeypatch, capsys, home, url, args, message):
    args = [a.format(port=free_port(), url=url) for a in args]
    code, _, err = run(monkeypatch, capsys, "query", "cat", "--index-dir", str(home), *args)
    assert code != 0 and message in " ".join(err.split()), err
    assert "Traceback" not in err and err.strip().startswith("error:")


def test_serve_leaves_a_record_while_it_runs(home):
    """The real command: the record appears with the server's pid and goes on a clean exit (SIGTERM)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from llm2vec_search.cli import main; main()", "serve",
                             "--index-dir", str(home), "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    record = home / serve_record.FOLDER / f"{proc.pid}.json"
    try:
        deadline = time.monotonic() + 900  # a starved machine took over 300 s to import torch and load
        while not (record.is_file() and serve_record.healthy(f"http://127.0.0.1:{port}")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
            time.sleep(0.2)
        assert serve_record.find(home, "docs") == (f"http://127.0.0.1:{port}", [])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert not record.exists()


PROBE = """
import json, sys
sys.argv = ["l2v-search", *sys.argv[1:]]
from llm2vec_search.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
heavy = [m for m in ("numpy", "pyarrow", "faiss", "torch", "transformers", "llm2vec_search.models",
                     "llm2vec_search.cli.train", "llm2vec_search.cli.eval", "llm2vec_search.cli.encode",
                     "llm2vec_search.cli.serve") if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize("named", [False, True], ids=["only-index", "named"])
def test_a_query_through_a_server_loads_no_numpy_pyarrow_faiss_torch_or_other_commands(home, url, named):
    record = serve_record.write(home, url, ["docs"])
    try:
        args = [QUERIES[0], "--index-dir", str(home), "--json", *(["--index", "docs"] if named else [])]
        proc = subprocess.run([sys.executable, "-c", PROBE, "query", *args], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        serve_record.remove(record)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}, proc.stderr
    assert json.loads(proc.stdout)["results"], proc.stdout
