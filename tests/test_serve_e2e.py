"""``l2v-search serve`` for real: a uvicorn server on loopback, driven over HTTP and in headless
Chromium (Debian's ``chromium``, driven by Playwright; ``make test`` installs both), switching
generations while ``--append`` and ``remove`` run beside it, and the command's start-up errors."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import run_cli

from llm2vec_search.index import build_index
from llm2vec_search.update import append_documents, remove_documents

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS = [("cats", "the cat sleeps in the house"), ("dogs", "a dog runs to the river"),
        ("vaccines", "a vaccine trains the immune system against a virus"), ("rivers", "water in the river"),
        ("proteins", "a protein in the cell"), ("climate", "climate and energy research")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def index_home(tmp_path_factory, tiny_encoder):
    home = tmp_path_factory.mktemp("served")
    corpus = home / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "title": t, "text": x}) for i, (t, x) in enumerate(DOCS)))
    build_index(corpus, "docs", home, encoder=tiny_encoder, show_progress=False)
    return home


CLI = [sys.executable, "-c", "from llm2vec_search.cli import main; main()"]


@pytest.fixture(scope="module")
def server(index_home):
    """``l2v-search serve`` in its own process, as a user starts it; stopped with SIGTERM."""
    yield from serve(index_home)


def serve(index_home):
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--index-dir", str(index_home), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # a loaded machine takes its time to import torch
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {proc.stdout.read()}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Traceback" not in proc.stdout.read()


def test_http_contract_on_a_real_server(server):
    r = httpx.post(f"{server}/search", json={"query": "vaccine immune virus", "k": 3, "mode": "hybrid"})
    assert r.status_code == 200
    body = r.json()
    assert [h["id"] for h in body["results"]][0] == "d2" and len(body["results"]) == 3
    assert httpx.post(f"{server}/search", json={"query": "x", "index": "nope"}).status_code == 404
    assert httpx.get(f"{server}/indexes").json()["indexes"][0]["documents"] == len(DOCS)


def test_openai_client_embeddings_equal_encode(server, tiny_model_dir):
    """The official `openai` client against the real server: float and base64 (its default) give
    the vectors `l2v-search encode` prints for the same texts; its errors map to its exceptions."""
    openai = pytest.importorskip("openai", reason="the openai client is not installed (dev extra)")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="not-used", max_retries=0, timeout=120)
    texts = ["a vaccine trains the immune system", "the cat sleeps in the house", "water"]
    (model,) = [m.id for m in client.models.list().data]
    as_float = client.embeddings.create(model=model, input=texts, encoding_format="float")
    as_base64 = client.embeddings.create(model=model, input=texts)  # the client asks for base64 by default
    encoded = subprocess.run([*CLI, "encode", *texts, "--model", str(tiny_model_dir), "--json"], capture_output=True,
                             text=True, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=300)
    assert encoded.returncode == 0, encoded.stderr
    want = np.array(json.loads(encoded.stdout)["embeddings"])
    for answer in (as_float, as_base64):
        np.testing.assert_allclose([d.embedding for d in answer.data], want, atol=1e-6)
    assert as_float.model == model and as_float.usage.prompt_tokens == 6 + 6 + 1
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=model, input=[[101, 2023]])


def test_limits_on_a_real_server(server):
    def chunks():
        for _ in range(40):
            yield b" " * 65536  # 2.5 MiB, no Content-Length

    r = httpx.post(f"{server}/search", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413
    assert httpx.get(f"{server}/health", headers={"host": "attacker.example"}).status_code == 403
    assert httpx.get(f"{server}/health", headers={"host": "localhost:1234"}).status_code == 200
    assert "/" not in httpx.get(f"{server}/indexes").json()["indexes"][0]["encoder"]["name"]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`make test` installs it)")
def test_search_page_in_headless_chromium(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    with sync_api.sync_playwright() as p:
        # The machine's closed network: no background connections, no first-run or sync services.
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            requests_out = []
            page.on("request", lambda req: requests_out.append(req.url))
            page.goto(server)
            sync_api.expect(page.locator("#status")).to_have_text("1 index(es) served")
            assert page.locator("#index option").all_inner_texts() == [f"docs ({len(DOCS)} docs)"]
            page.fill("#query", "vaccine immune virus")
            page.select_option("#mode", "bm25")
            page.click("#go")
            results = page.locator("li.result")
            sync_api.expect(results.first).to_be_visible()
            assert results.first.locator(".title").inner_text() == "1. vaccines"
            assert "vaccine trains the immune system" in results.first.locator(".snippet").inner_text()
            assert " in " in page.locator("#took").inner_text()
            page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
            # An error from the API is shown on the page, as text.
            page.fill("#query", "   ")
            page.click("#go")
            sync_api.expect(page.locator("#took .error")).to_contain_text("non-empty")
            assert all(u.startswith(server) for u in requests_out), "the page loads nothing from outside"
        finally:
            browser.close()


def test_a_served_index_switches_generations_without_a_failed_request(tmp_path, tiny_encoder):
    """Requests in every mode run without pause while an ``--append`` and a ``remove`` publish new
    generations: none fails, and after each switch every mode sees the new documents only."""
    home = tmp_path / "idx"
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "title": t, "text": x}) for i, (t, x) in enumerate(DOCS)))
    build_index(corpus, "docs", home, encoder=tiny_encoder, show_progress=False)
    modes, failures, answered, stop = ("dense", "bm25", "hybrid"), [], [0], threading.Event()

    def ids(client, url, mode):
        r = client.post(f"{url}/search", json={"query": "a small mouse in the house", "k": 20, "mode": mode})
        assert r.status_code == 200, r.text
        return {h["id"] for h in r.json()["results"]}

    def hammer(url, n):
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                try:
                    ids(client, url, modes[n % 3])
                    answered[0] += 1
                except (AssertionError, httpx.HTTPError) as e:
                    failures.append(repr(e)[:300])
                n += 1
                stop.wait(0.02)  # steady traffic that leaves the writers some CPU

    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "mouse", "title": "mice", "text": "a small mouse in the house"}))
    for url in serve(home):
        threads = [threading.Thread(target=hammer, args=(url, n)) for n in range(3)]
        for t in threads:
            t.start()
        try:  # the writers run in this process, the server in its own
            append_documents(more, "docs", home, encoder=tiny_encoder, show_progress=False)
            with httpx.Client(timeout=60) as client:
                assert all("mouse" in ids(client, url, mode) for mode in modes)
            remove_documents(["d0"], "docs", home, show_progress=False)
            with httpx.Client(timeout=60) as client:
                assert all("d0" not in ids(client, url, mode) and "mouse" in ids(client, url, mode) for mode in modes)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert failures == [] and answered[0] > 0


def test_serve_refuses_missing_and_mismatched_indexes(monkeypatch, capsys, index_home, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--index-dir", str(tmp_path / "empty"))
    assert code != 0 and err.startswith("error:") and "no index to serve" in err and "Traceback" not in err
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--index-dir", str(index_home), "--index", "nope")
    assert code != 0 and err.startswith("error:") and "nope" in err and len(err.strip().splitlines()) == 1

    # The same index, its recorded encoder settings changed behind its back: refused, naming what differs.
    bad = tmp_path / "bad"
    shutil.copytree(index_home / "docs", bad / "docs")
    gen = bad / "docs" / (bad / "docs" / "CURRENT").read_text().strip()
    manifest = json.loads((gen / "manifest.json").read_text())
    manifest["encoder"]["fingerprint"] = "0" * 16
    (gen / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--index-dir", str(bad))
    assert code != 0 and err.startswith("error:") and "different encoder" in err and "Traceback" not in err
    assert not list(Path(bad).rglob("*.tmp"))
