"""``train adapt`` on the tiny model: runs, resumes, keeps or replaces the input encoder, refuses bad corpora."""

import json
import random

import pytest
from conftest import WORDS
from conftest import run_cli as run

from llm2vec_search.encoder import load_encoder
from llm2vec_search.errors import UsageError
from llm2vec_search.train import common
from llm2vec_search.train.adapt import AdaptConfig, adapt

TOPIC = [w for w in WORDS if len(w) >= 4][:40]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    rows = []
    for i in range(90):
        topic = TOPIC[i % len(TOPIC)]
        title = f"{topic} {rng.choice(WORDS)} {rng.choice(WORDS)}"
        sents = [" ".join([topic, *rng.choices(WORDS, k=9)]) + " ." for _ in range(4)]
        rows.append({"id": f"d{i}", "title": title, "text": " ".join(s.capitalize() for s in sents)})
    path = tmp_path_factory.mktemp("adapt") / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(corpus, tiny_model_dir, out, **kw):
    base = dict(corpus=str(corpus), model=str(tiny_model_dir), output=str(out), pairs=120, heldout=30, steps=4,
                batch_size=8, mini_batch=8, max_length=48, device="cpu", depth=(1, 15))
    return AdaptConfig(**{**base, **kw})


def test_adapt_writes_an_encoder_that_records_its_parent_and_resumes(corpus, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    real = common.save_checkpoint

    def crash_after_first(run_dir, step, *args, **kw):  # killed right after the first checkpoint
        real(run_dir, step, *args, **kw)
        raise KeyboardInterrupt

    common.save_checkpoint = crash_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            # a time budget already spent: the first step ends training with a checkpoint
            adapt(config(corpus, tiny_model_dir, out, minutes=1e-6), log=lambda m: None)
    finally:
        common.save_checkpoint = real
    assert (out / "adapt-data.json").is_file() and [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-000001"]
    report = adapt(config(corpus, tiny_model_dir, out), resume=True, log=lambda m: None)
    manifest = json.loads((out / "encoder" / "manifest.json").read_text())
    assert manifest["parent"] == str(tiny_model_dir) and manifest["recipe"]["adapt_report"]["corpus"] == str(corpus)
    kinds = set(report["pairs"])
    assert kinds == {"adapt-title", "adapt-keyword", "adapt-sentence"}
    check = report["self_check"]
    assert 15 <= check["heldout_queries"] <= 18  # at most a fifth of the 90 documents
    assert (manifest["adapters"] == []) == check["kept_input_encoder"]
    assert ("adapt" in manifest["recipe"]) != check["kept_input_encoder"]
    load_encoder(report["encoder"], dtype="fp32", device="cpu").encode(["the cat"])  # every command accepts it
    with pytest.raises(UsageError, match="already holds an adapted encoder"):
        adapt(config(corpus, tiny_model_dir, out), log=lambda m: None)


def test_adapt_refuses_empty_and_tiny_corpora(monkeypatch, capsys, tmp_path, tiny_model_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"id": "1", "text": "too short"}) + "\n")
    code, _, err = run(monkeypatch, capsys, "train", "adapt", str(empty), "--model", str(tiny_model_dir),
                       "--output", str(tmp_path / "o1"), "--device", "cpu")
    assert code != 0 and "no passage of 10 words or more" in err and "Traceback" not in err
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text("".join(json.dumps({"id": f"d{i}", "title": f"cat {i}", "text": " ".join(["the dog runs"] * 5)})
                            + "\n" for i in range(6)))
    code, _, err = run(monkeypatch, capsys, "train", "adapt", str(tiny), "--model", str(tiny_model_dir),
                       "--output", str(tmp_path / "o2"), "--device", "cpu")
    assert code != 0 and "too small to adapt to" in " ".join(err.split()) and "Traceback" not in err
    code, _, err = run(monkeypatch, capsys, "train", "adapt", str(tiny), "--kinds", "summary", "--output",
                       str(tmp_path / "o3"))
    assert code != 0 and "valid kinds are: title, sentence, crop, keyword" in err
    assert not (tmp_path / "o2" / "encoder").exists()
